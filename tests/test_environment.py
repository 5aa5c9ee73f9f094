"""requirements.lock: every package of pyproject.toml pinned to one version that satisfies it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from conftest import run_cli
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_requirement():
    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version and " @ " not in line, f"requirements.lock: not an exact pin: {line}"
            lock[_norm(name)] = version.strip()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    for req in wanted:
        version = lock.get(_norm(req.name))
        assert version is not None, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {req.name}=={version}, outside {req} of pyproject.toml: run `make lock`"
        )
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"


def test_conda_environment_mirrors_pyproject():
    """environment.yml (`--sdm conda`) lists the same pip requirements as pyproject.toml, and no
    install of the checkout (Snakemake copies the file away from it)."""
    import yaml

    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert not [p for p in pip if p.startswith("-")], f"environment.yml: no pip options here: {pip}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ours = {_norm(Requirement(r).name): str(Requirement(r).specifier) for r in project["dependencies"]}
    theirs = {_norm(Requirement(r).name): str(Requirement(r).specifier) for r in pip}
    assert theirs == ours
    assert "python=3.11" in env["dependencies"]


def test_jobs_use_the_conda_python_under_sdm_conda():
    from types import SimpleNamespace

    from snakemake.settings.types import DeploymentMethod
    from test_workflow import load_common

    ns = load_common()
    ns["workflow"] = SimpleNamespace(deployment_settings=SimpleNamespace(deployment_method={DeploymentMethod.CONDA}))
    assert ns["python_cmd"]() == "python"  # the activated environment's, per rule
    ns["workflow"].deployment_settings.deployment_method = set()
    import shlex
    import sys

    assert ns["python_cmd"]() == shlex.quote(sys.executable)
    ns["config"]["python"] = "/opt/my env/bin/python"
    assert ns["python_cmd"]() == "'/opt/my env/bin/python'"


def test_license_and_citation_ship():
    """The code's license, and a CITATION.cff citing both papers (arXiv ids) and this pipeline."""
    import yaml

    assert "MIT License" in (REPO / "LICENSE").read_text()
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    ids = {i["value"] for ref in cff["references"] for i in ref["identifiers"]}
    assert ids == {"arXiv:2305.19256", "arXiv:2404.10177"}
    assert all(ref["authors"][0]["family-names"] == "Daras" for ref in cff["references"])


def test_download_prints_the_dataset_terms_first(tmp_path):
    """`download-dataset` states the source's terms before it fetches anything (here: nothing to fetch)."""
    args = ["download-dataset", "--source", "celeba", "--raw-dir", tmp_path, "--out", tmp_path / "d.zip"]
    r = run_cli([*args, "--url", (tmp_path / "missing.zip").as_uri()], timeout=120)
    assert r.returncode != 0 and "non-commercial research purposes only" in r.stdout.splitlines()[0], (
        r.stdout + r.stderr
    )

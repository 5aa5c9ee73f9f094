"""requirements.lock: every package of pyproject.toml pinned to one version that satisfies it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

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

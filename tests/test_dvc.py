"""DVC: the hand-written dvc.yaml (one stage per phase directory), .dvc/config, and round trips.

The end-to-end tests (slow) work in temporary git repositories holding a copy of the workflow with
config/smoke.yaml (three of its models) as config/config.yaml. The producer runs a plain `dvc repro`
and pushes to the default local-directory remote (a folder beside the checkout), or to an S3 server
on 127.0.0.1. A `git clone` then runs `python -m ambient.pipeline.pull`: every output there, no
Snakemake job run, `dvc status` clean, and a plain `snakemake -n` with nothing to do. `--render`
renders the figures again and runs nothing else.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ambient import layout
from ambient.pipeline import pull as P

REPO = Path(__file__).resolve().parents[1]
COPY = (
    "Snakefile",
    "workflow",
    "config",
    "paper_figures",
    "profiles",
    "environment.yml",
    "ambient",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "dvc.yaml",
)
STAGES = ["datasets", "models", "samples", "evaluation", "metrics", "figures"]
# The round trip runs config/smoke.yaml with three of its models (one per kind of figure input:
# clean, ambient, noisy), to keep the slow tests near two minutes on 2 cores.
RUNS = [{"kind": "clean"}, {"kind": "dust", "p": 0.5, "delta": 0.1}, {"kind": "noise", "sigma_n": 0.2}]
COMPUTE = {
    "prepare_dataset",
    "download_dataset",
    "train",
    "sample",
    "neighbors",
    "ref_stats",
    "fid",
    "attack",
    "summary",
    "claims",
    "hf_energy",
    "sample_full",
}
GIT = ["git", "-c", "user.name=ambient-test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"]


def env() -> dict:
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def run(cwd: Path, *argv, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, env=env(), timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


def py(cwd: Path, *args, **kw) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, *args, **kw)


def dvc(cwd: Path, *args, **kw) -> subprocess.CompletedProcess:
    return py(cwd, "-m", "dvc", *args, **kw)


def copy_repo(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.pyc")
    for name in COPY:
        src, dst = REPO / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dst)
    return dest


def git_commit(cwd: Path, message: str) -> None:
    run(cwd, *GIT, "add", "-A")
    run(cwd, *GIT, "commit", "-q", "-m", message)


def executed_rules(cwd: Path, since: float = 0.0) -> list[str]:
    """Rules of the jobs Snakemake ran (not dry runs or summaries), from its logs written after `since`."""
    rules = []
    for log in sorted((cwd / ".snakemake" / "log").glob("*.snakemake.log")):
        text = log.read_text()
        command = (re.search(r"^\s*Command: (.*)$", text, re.M) or [None, ""])[1]
        if log.stat().st_mtime >= since and not any(f in command for f in (" -n", "--dry-run", "--summary")):
            rules += re.findall(r"^(?:local)?rule (\S+):$", text, re.M)
    return rules


def summary_rows(cwd: Path, *flags) -> list[dict]:
    """`snakemake --summary`: output_file, date, rule, ... per output of the DAG."""
    lines = py(cwd, "-m", "snakemake", *flags, "--summary").stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file"))
    header = lines[start].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[start + 1 :] if "\t" in line]


# ---------------------------------------------------------------- configuration (fast)


def test_dvc_config_local_remote_no_analytics():
    from configobj import ConfigObj  # DVC's own reader

    cfg = ConfigObj(str(REPO / ".dvc" / "config"))
    assert cfg["core"]["remote"] == "local"
    assert cfg["core"]["analytics"] == "false" and cfg["core"]["check_update"] == "false"
    url = cfg['remote "local"']["url"]
    assert not os.path.isabs(url)  # relative to .dvc/: a folder beside the checkout
    assert (REPO / ".dvc" / url).resolve() == (REPO.parent / "ambient-dvc-remote").resolve()
    # copies (DVC's default), not hard/symlinks: those give a file the mtime of its cache object
    assert "type" not in cfg.get("cache", {})
    assert set((REPO / ".dvc" / ".gitignore").read_text().split()) >= {"/config.local", "/tmp", "/cache"}
    ignored = (REPO / ".dvcignore").read_text()
    lines = ignored.splitlines()
    assert "/.venv/" in lines and "/results/" not in lines and "/data/" not in lines
    assert "/results/models/*/*/train/" in ignored and "/data/raw/" in ignored  # resume state, raw downloads


def test_dvc_yaml_is_short_and_free_of_the_grid():
    """One stage per phase, each running the phase's target rule and recording its directory:
    nothing in dvc.yaml names a dataset or a model, so the grid of the config can change freely."""
    text = (REPO / "dvc.yaml").read_text()
    doc = yaml.safe_load(text)
    assert len(text.splitlines()) < 150 and list(doc["stages"]) == STAGES
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    grid = [cfg["dataset"]["name"], *(layout.run_name(c) for c in cfg["corruptions"])]
    named = [name for name in grid if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)]  # gauss is not gaussian.py
    assert not [name for name in named if name != "clean"], grid
    outs = {}
    for stage, spec in doc["stages"].items():
        assert spec["cmd"] == f"${{snakemake}} -- {stage}"
        for o in spec["outs"]:
            path, opts = next(iter(o.items())) if isinstance(o, dict) else (o, {})
            assert not opts.get("persist"), path  # the run cache stays on
            outs[path] = stage
        for dep in spec["deps"]:
            assert (REPO / dep).exists() or dep in outs, (stage, dep)  # code, or an earlier stage's out
    phase_dirs = dict(zip(STAGES, layout.PHASE_DIRS))
    for stage, directory in phase_dirs.items():
        if stage == "metrics":
            assert {p for p, s in outs.items() if s == stage} == {
                layout.SUMMARY_CSV,
                layout.SUMMARY_JSON,
                layout.CLAIMS_CSV,
            }
        else:
            assert outs[directory] == stage
    assert "--rerun-triggers params input software-env code" in doc["vars"][0]["snakemake"]  # no mtime


def test_metrics_and_plots_are_declared():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert doc["metrics"] == [layout.SUMMARY_JSON]
    plots = {next(iter(p)): next(iter(p.values())) for p in doc["plots"]}
    assert {p["x"] for p in plots.values()} == {"share_gt_0.95", "key_extracted", "inpaint_extracted"}
    assert all(p["y"] == {layout.SUMMARY_CSV: "corruption"} for p in plots.values())


PHASE_OF_RULE = {
    "prepare_dataset": "datasets",
    "download_dataset": "datasets",
    "train": "models",
    "sample": "samples",
    "sample_full": "samples",
    "summary": "metrics",
    "claims": "metrics",
    **{r: "evaluation" for r in ("neighbors", "ref_stats", "fid", "attack", "hf_energy", "ruler_check")},
    **{f.rule: "figures" for f in layout.PIXEL.figures},
}


def test_every_output_lies_in_its_phase_directory():
    """Every file the DAG makes is under the DVC out of its phase, and each phase's target rule asks for
    exactly its phase's files (a rule added without a phase fails here)."""
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    outs = {
        (next(iter(o)) if isinstance(o, dict) else o): stage
        for stage, spec in doc["stages"].items()
        for o in spec["outs"]
    }
    rows = summary_rows(REPO)
    assert rows and {r["rule"] for r in rows} <= set(PHASE_OF_RULE), {r["rule"] for r in rows} - set(PHASE_OF_RULE)
    for r in rows:
        owner = [
            stage for path, stage in outs.items() if r["output_file"] == path or r["output_file"].startswith(path + "/")
        ]
        assert owner == [PHASE_OF_RULE[r["rule"]]], (r["rule"], r["output_file"], owner)


# The code behind each stage's jobs: the modules its commands run (`python -m ambient CMD` enters
# through ambient/cli/__init__.py, which imports every phase's command table but runs only the
# command's own module), followed through their imports; ambient/layout.py is the workflow's own
# (common.smk imports it), ambient/__main__.py the entry of `python -m ambient`.
WORKFLOW_CODE = ["ambient.layout", "ambient.__main__"]
STAGE_CODE = {
    "datasets": ["ambient.cli.data"],
    "models": ["ambient.cli.train", "ambient.pipeline.gpu_slots"],
    "samples": ["ambient.cli.sample", "ambient.pipeline.gpu_slots"],
    "evaluation": ["ambient.cli.evaluate", "ambient.pipeline.gpu_slots"],
    "metrics": ["ambient.cli.metrics"],
}


def _module_file(dotted: str) -> Path | None:
    path = REPO.joinpath(*dotted.split("."))
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def _imports(path: Path, source: str):
    """Dotted names an ambient module (or notebook code) imports, at any depth (lazy imports too)."""
    package = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            yield ".".join(module)
            yield from (".".join([*module, a.name]) for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def module_closure(seeds: list[str], sources: dict[Path, str] | None = None) -> set[str]:
    """Files of the ambient modules reached from `seeds` (and from `sources`: path -> code), with the
    packages' __init__ files; the command modules of other phases are left out (they do not run)."""
    own_cli = {s for s in seeds if s.startswith("ambient.cli.")}
    todo = [(p, None) for p in map(_module_file, seeds) if p] + list((sources or {}).items())
    seen: set[Path] = set()
    while todo:
        path, source = todo.pop()
        if source is None:
            if path in seen:
                continue
            seen.add(path)
            source = path.read_text()
        for name in _imports(path, source):
            found = _module_file(name) if name.startswith("ambient") else None
            other_cli = name.startswith("ambient.cli.") and name not in own_cli and not name.endswith(".common")
            if found and not other_cli and found not in seen:
                todo.append((found, None))
        todo += [(p / "__init__.py", None) for p in path.parents if (p / "__init__.py").is_file()]
    return {p.relative_to(REPO).as_posix() for p in seen if p.stat().st_size}


def test_stage_deps_cover_the_code_their_jobs_run():
    """dvc.yaml's hand-written deps list every module a stage's commands import; the figures stage
    depends on paper_figures/ and on what its notebooks import."""
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    notebooks = {}
    for nb in (REPO / "paper_figures").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        notebooks[nb] = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    notebooks[REPO / "paper_figures" / "figlib.py"] = (REPO / "paper_figures" / "figlib.py").read_text()
    needed = {
        **{stage: module_closure([*seeds, *WORKFLOW_CODE]) for stage, seeds in STAGE_CODE.items()},
        "figures": module_closure(["ambient.layout"], notebooks),
    }
    for stage, files in needed.items():
        deps = set(doc["stages"][stage]["deps"])
        assert files <= deps, f"dvc.yaml, stage {stage}: add {sorted(files - deps)} to its deps"
        code = {d for d in deps if d.startswith("ambient/")}
        assert code <= files, f"dvc.yaml, stage {stage}: {sorted(code - files)} is not code its jobs run"
    assert "ambient/training.py" in needed["models"] and "ambient/cli/sample.py" not in needed["models"]
    assert "ambient/eval/summary.py" in needed["metrics"] and "ambient/eval/summary.py" not in needed["evaluation"]


def test_dvc_parses_the_pipeline(tmp_path):
    """DVC itself accepts dvc.yaml (no overlapping outputs, no cycle): the phases in order."""
    wd = copy_repo(tmp_path / "repo")
    run(wd, *GIT, "init", "-q")
    edges = set(re.findall(r'"(\w+)" -> "(\w+)"', dvc(wd, "dag", "--dot").stdout))
    assert edges == {
        ("datasets", "models"),
        ("datasets", "evaluation"),
        ("datasets", "figures"),
        ("models", "samples"),
        ("models", "evaluation"),
        ("models", "metrics"),
        ("samples", "evaluation"),
        ("samples", "metrics"),
        ("samples", "figures"),
        ("evaluation", "metrics"),
        ("evaluation", "figures"),
        ("metrics", "figures"),
    }
    r = dvc(wd, "status")  # nothing run yet: every stage reports changes, none errors
    assert all(stage in r.stdout for stage in STAGES)


def test_order_mtimes_puts_each_phase_after_the_one_before(tmp_path):
    for directory in layout.PHASE_DIRS:
        (tmp_path / directory / "x").mkdir(parents=True)
        (tmp_path / directory / "x" / "f").write_text("1")
    assert P.order_mtimes(tmp_path, now=1000.0) == len(layout.PHASE_DIRS)
    stamps = [(tmp_path / d / "x" / "f").stat().st_mtime for d in layout.PHASE_DIRS]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps) and stamps[-1] == 999.0


def test_pull_outside_a_dvc_checkout_says_so(tmp_path):
    r = py(tmp_path, "-m", "ambient.pipeline.pull", check=False)
    assert r.returncode == 3 and "dvc.yaml: not found" in r.stderr


def _dvc_checkout(tmp_path: Path, url: str) -> Path:
    repo = copy_repo(tmp_path / "repo")
    run(repo, *GIT, "init", "-q")
    dvc(repo, "remote", "modify", "--local", "local", "url", url)
    return repo


def test_missing_remote_directory_is_one_line_saying_what_to_set(tmp_path):
    """A fresh clone on another machine: the default remote (a directory beside the producer's
    checkout) is not here, and the pull stops before anything, naming the command that fixes it."""
    repo = _dvc_checkout(tmp_path, str(tmp_path / "nowhere"))
    with pytest.raises(
        P.PullError,
        match=r"nowhere, which does not exist on this machine; .*"
        r"`dvc remote modify --local local url URL`",
    ):
        P.check_remote(repo)
    with pytest.raises(P.PullError, match=r"remote 'elsewhere' is not configured here \(known: local\)"):
        P.check_remote(repo, "elsewhere")
    r = py(repo, "-m", "ambient.pipeline.pull", check=False)
    assert r.returncode == 3 and "dvc remote modify --local local url" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    (tmp_path / "there").mkdir()
    dvc(repo, "remote", "modify", "--local", "local", "url", str(tmp_path / "there"))
    assert P.check_remote(repo) == ("local", str(tmp_path / "there"))


def test_add_pull_command_registers_ambient_pull():
    import argparse

    parser = argparse.ArgumentParser()
    P.add_pull_command(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["pull", "evaluation", "--render", "-r", "s3"])
    assert a.command == "pull" and a.targets == ["evaluation"] and a.render and a.remote == "s3"
    assert a.func is P._main


def _calls(path: Path, source: str):
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords}


def test_pulled_files_are_never_unpickled():
    """Checkpoints from a remote are loaded with weights_only=True (ambient.checkpoints.load_checkpoint);
    nothing else in the package or the notebooks unpickles a file."""
    sources = [(p, p.read_text()) for p in (REPO / "ambient").rglob("*.py")]
    sources += [(p, p.read_text()) for p in (REPO / "paper_figures").glob("*.py")]
    for nb in (REPO / "paper_figures").glob("*.ipynb"):
        code = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        sources.append((nb, "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))))
    torch_loads = []
    for path, src in sources:
        for func, kw in _calls(path, src):
            if func == "torch.load":
                torch_loads.append(path.name)
                assert kw.get("weights_only") == "True", f"{path.name}: {func} without weights_only=True"
            assert func not in ("pickle.load", "pickle.loads", "torch.jit.load", "joblib.load", "dill.load"), (
                f"{path.name}: {func}"
            )
            if func in ("np.load", "numpy.load"):
                assert kw.get("allow_pickle", "False") == "False", f"{path.name}: np.load(allow_pickle=True)"
    assert sorted(torch_loads) == ["checkpoints.py", "lora.py"]  # both weights_only=True (checked above)


# ---------------------------------------------------------------- round trip (slow, smoke config)


def smoke_config() -> dict:
    """config/config.yaml with config/smoke.yaml merged over it (three models): what DVC records."""
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()))
    cfg["corruptions"] = RUNS
    return cfg


@pytest.fixture(scope="module")
def producer(tmp_path_factory):
    """A smoke run made by a plain `dvc repro`, committed and pushed: (root, producer checkout)."""
    root = tmp_path_factory.mktemp("dvc")
    prod = copy_repo(root / "producer")
    (prod / "dvc.lock").unlink(missing_ok=True)
    (prod / "config" / "config.yaml").write_text(yaml.safe_dump(smoke_config(), sort_keys=False))
    run(prod, *GIT, "init", "-q")
    git_commit(prod, "smoke workflow")
    t0 = time.perf_counter()
    dvc(prod, "repro")
    print(f"producer: dvc repro {time.perf_counter() - t0:.0f} s")
    git_commit(prod, "record the smoke run")
    r = dvc(prod, "push")
    remote = root / "ambient-dvc-remote"  # the default remote of .dvc/config, beside the checkout
    assert remote.is_dir() and any(remote.rglob("*")), r.stdout + r.stderr
    return root, prod


@pytest.fixture(scope="module")
def consumer(producer):
    root, prod = producer
    cons = root / "consumer"
    run(root, "git", "clone", "-q", prod, cons)
    assert not (cons / "results").exists() and not (cons / ".snakemake").exists()
    t0 = time.perf_counter()
    r = py(cons, "-m", "ambient.pipeline.pull")
    seconds = time.perf_counter() - t0
    print(f"consumer: python -m ambient.pipeline.pull {seconds:.1f} s\n{r.stdout}")
    return cons, seconds


@pytest.mark.slow
def test_plain_dvc_repro_records_every_phase(producer):
    _, prod = producer
    assert "Data and pipelines are up to date" in dvc(prod, "status").stdout
    lock = yaml.safe_load((prod / "dvc.lock").read_text())
    assert list(lock["stages"]) == STAGES
    assert all(o["md5"] for s in lock["stages"].values() for o in s["outs"])
    assert (prod / layout.run_file("model", "smoke8", "dust-p0.50")).is_file()
    since = time.time()
    assert "up to date" in dvc(prod, "repro").stdout and not executed_rules(prod, since)  # nothing reran
    # dvc.yaml's metrics and plots read the recorded run: `dvc metrics diff` / `dvc plots diff` compare runs
    shown = json.loads(dvc(prod, "metrics", "show", "--json").stdout)
    values = next(iter(shown.values()))["data"][layout.SUMMARY_JSON]["data"]
    assert set(values) == {"clean", "dust-p0.50", "noise-s0.20"} and 0 <= values["clean"]["share_gt_0.95"] <= 1
    plots = json.loads(dvc(prod, "plots", "show", "--json").stdout)["data"]
    assert len(plots) == 3, plots.keys()
    # against the commit before the recording (no dvc.lock yet): every value is new
    diff = json.loads(dvc(prod, "metrics", "diff", "HEAD~1", "--json").stdout)
    assert diff[layout.SUMMARY_JSON]["clean.share_gt_0.95"]["new"] == values["clean"]["share_gt_0.95"], diff


@pytest.mark.slow
def test_consumer_pull_computes_nothing(consumer):
    cons, seconds = consumer
    lock = yaml.safe_load((cons / "dvc.lock").read_text())
    for spec in lock["stages"].values():
        assert all((cons / o["path"]).exists() for o in spec["outs"])
    assert list((cons / layout.FIGURES_DIR).glob("*.png"))
    assert not executed_rules(cons) and not (cons / "logs").exists()
    assert "Data and pipelines are up to date" in dvc(cons, "status").stdout
    # mtimes in phase order: a plain Snakemake sees nothing to do either
    r = py(cons, "-m", "snakemake", "-n")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout + r.stderr
    assert seconds < 120, f"the consumer path took {seconds:.0f} s"


@pytest.mark.slow
def test_consumer_renders_the_figures_again_and_nothing_else(consumer):
    cons, _ = consumer
    since = time.time()
    py(cons, "-m", "ambient.pipeline.pull", "--render")
    ran = set(executed_rules(cons, since))
    assert ran and ran <= {f.rule for f in layout.PIXEL.figures} | {"figures"}, ran
    assert "Data and pipelines are up to date" in dvc(cons, "status").stdout


@pytest.mark.slow
def test_consumer_with_another_config_stops_naming_it(consumer):
    cons, _ = consumer
    cfg = cons / "config" / "config.yaml"
    original = cfg.read_text()
    try:
        cfg.write_text(original.replace("num_samples: 8", "num_samples: 9"))
        assert cfg.read_text() != original
        since = time.time()
        r = py(cons, "-m", "ambient.pipeline.pull", check=False)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "samples" in r.stderr and "config/config.yaml" in r.stderr and "dvc repro" in r.stderr, r.stderr
        assert not executed_rules(cons, since), "Snakemake ran"
    finally:
        cfg.write_text(original)


@pytest.mark.slow
def test_hand_edited_file_shows_in_dvc_status_with_its_dependents(consumer):
    from ambient.data import read_image_zip, write_image_zip

    cons, _ = consumer
    edited = cons / layout.run_file("samples", "smoke8", "dust-p0.50")
    ds = read_image_zip(edited)
    images = ds.images.copy()
    images[0] = 255 - images[0]
    info = {k: v for k, v in ds.manifest.items() if k not in ("num_images", "channels", "resolution", "images")}
    write_image_zip(edited, images, [f"sample:{i}" for i in range(len(images))], info)
    status = json.loads(dvc(cons, "status", "--json").stdout)
    assert {"samples", "evaluation", "metrics", "figures"} <= set(status), status
    dvc(cons, "checkout", "--force", "samples")
    assert "Data and pipelines are up to date" in dvc(cons, "status").stdout


# ---------------------------------------------------------------- an S3 remote (slow)


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (moto[server], a dev dependency), with test credentials in the
    environment of this process and of every command it starts; stopped at the end of the module."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )  # never ask a cloud metadata service for credentials
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"the moto S3 server did not answer on {endpoint}")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _use_s3_remote(cwd: Path, endpoint: str, default: bool = False) -> None:
    dvc(cwd, "remote", "add", "--local", *(["-d"] if default else []), "s3", "s3://ambient-results/cache")
    dvc(cwd, "remote", "modify", "--local", "s3", "endpointurl", endpoint)


@pytest.mark.slow
def test_round_trip_through_an_s3_remote(producer, s3_endpoint):
    """The recorded smoke run pushed to an S3 endpoint (a real S3 protocol peer on 127.0.0.1), and a
    fresh clone whose only remote is that bucket gets every output without computing anything."""
    import boto3

    root, prod = producer
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="ambient-results")
    _use_s3_remote(prod, s3_endpoint)
    dvc(prod, "push", "-r", "s3")
    assert s3.list_objects_v2(Bucket="ambient-results").get("KeyCount", 0) > 10

    cons = root / "s3-consumer"
    run(root, "git", "clone", "-q", prod, cons)
    _use_s3_remote(cons, s3_endpoint, default=True)
    assert P.check_remote(cons) == ("s3", "s3://ambient-results/cache")
    py(cons, "-m", "ambient.pipeline.pull")
    lock = yaml.safe_load((cons / "dvc.lock").read_text())
    assert all((cons / o["path"]).exists() for spec in lock["stages"].values() for o in spec["outs"])
    assert not executed_rules(cons)
    assert "Data and pipelines are up to date" in dvc(cons, "status").stdout

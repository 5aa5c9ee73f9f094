"""DVC: dvc.yaml (generated from Snakemake's DAG), .dvc/config, and the consumer round trip.

The end-to-end tests (slow) work in temporary git repositories holding a copy of the workflow:
the producer records config/smoke.yaml with `python -m ambient.pull --repro` and pushes to the
default local-directory remote (a folder beside the checkout); a `git clone` then runs
`python -m ambient.pull`: figures rendered, no compute job run (Snakemake's logs), `dvc status`
clean. A pulled file edited by hand shows in `dvc status` and only its dependents rerun. A partial
pull stops naming the job instead of recomputing; `--from-cache` renders without checkpoints.
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

from ambient import pull as P

REPO = Path(__file__).resolve().parents[1]
COPY = ("Snakefile", "workflow", "config", "paper_figures", "profiles", "environment.yml", "ambient", ".gitignore",
        ".dvcignore", ".dvc/config", ".dvc/.gitignore", "dvc.yaml")
SMOKE = ["--configfile", "config/smoke.yaml"]
# The round trip runs config/smoke.yaml with three of its models (one per kind of figure input:
# clean, ambient, noisy), to keep the slow tests near two minutes on 2 cores.
RUNS = [{"kind": "clean"}, {"kind": "dust", "p": 0.5, "delta": 0.1}, {"kind": "noise", "sigma_n": 0.2}]
ROUND_TRIP = [*SMOKE, "config/dvc-test.yaml"]
EDITED_RUN = "results/smoke8/dust-p0.50"
SUMMARY_FILES = ("results/metrics/summary.csv", "results/metrics/summary.json", "results/metrics/claims.csv")
COMPUTE = {"prepare_dataset", "download_dataset", "train", "sample", "neighbors", "ref_stats", "fid", "attack",
           "summary", "claims", "hf_energy", "sample_full"}
GIT = ["git", "-c", "user.name=ambient-test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"]


def env() -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def run(cwd: Path, *argv, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
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


def snakemake_logs(cwd: Path, since: float = 0.0) -> list[tuple[str, list[dict]]]:
    """(command line, jobs) of each .snakemake/log written after `since`, in order."""
    out = []
    for log in sorted((cwd / ".snakemake" / "log").glob("*.snakemake.log")):
        if log.stat().st_mtime < since:
            continue
        text = log.read_text()
        m = re.search(r"^\s*Command: (.*)$", text, re.M)
        out.append((m.group(1) if m else "", P.parse_dry_run(text)))
    return out


def executed_jobs(cwd: Path, since: float = 0.0) -> list[dict]:
    """Jobs of the real runs (not --touch, dry runs or summaries)."""
    skip = ("--touch", " -n", "--dry-run", "--summary", "--detailed-summary")
    return [j for cmd, jobs in snakemake_logs(cwd, since) if not any(s in cmd for s in skip) for j in jobs]


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
    assert "/.venv/" in ignored and "/results/" not in ignored and "/data/" not in ignored


def test_committed_dvc_yaml_is_generated_from_the_default_dag():
    """dvc.yaml is `python -m ambient.pull --write-dvc-yaml` for config/config.yaml (regenerate it
    when rules, outputs or imports change)."""
    r = py(REPO, "-m", "ambient.pull", "--write-dvc-yaml", "-", timeout=180)
    assert (REPO / "dvc.yaml").read_text() == r.stdout, (
        "dvc.yaml is stale: run `python -m ambient.pull --write-dvc-yaml` and commit it")


def test_dvc_yaml_stages():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert list(doc["stages"]) == ["data", "train", "sample", "evaluate"]
    assert P.run_flags(doc) == []  # the embedded default: no --configfile
    outs = P.dvc_outs(doc)
    assert len(outs) == sum(len(s["outs"]) for s in doc["stages"].values())  # no path in two stages
    for stage, spec in doc["stages"].items():
        assert spec["cmd"].startswith("${snakemake} -- ")
        for o in spec["outs"]:
            (path, opts), = o.items()
            assert opts == {"persist": True}, path  # Snakemake decides what reruns
            assert path.startswith(("data/", "results/")) and not path.startswith("results/figures/"), path
        for dep in spec["deps"]:
            assert (REPO / dep).is_file() or outs.get(dep) not in (None, stage), (stage, dep)
    dataset = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["dataset"]["name"]
    assert outs[f"data/{dataset}.zip"] == "data"
    for run_name in ("clean", "dust-p0.10", "dust-p0.50", "box-p0.40"):
        base = f"results/{dataset}/{run_name}"
        assert outs[f"{base}/model.pt"] == "train" and outs[f"{base}/samples.zip"] == "sample"
        assert outs[f"{base}/neighbors_pixel.json"] == outs[f"{base}/attack_inpaint.json"] == "evaluate"
    assert outs["results/metrics/summary.csv"] == "evaluate"
    assert f"results/{dataset}/clean/model.pt" in doc["stages"]["sample"]["deps"]
    assert "ambient/training.py" in doc["stages"]["train"]["deps"]
    assert "ambient/training.py" not in doc["stages"]["data"]["deps"]
    assert {"config/config.yaml": ["sampling"]} in doc["stages"]["sample"]["params"]


def test_metrics_and_plots_are_declared():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert doc["metrics"] == [P.SUMMARY_JSON]
    assert [next(iter(p)) for p in doc["plots"]] == list(P.PLOTTED.values())
    outs = P.dvc_outs(doc)
    assert P.SUMMARY_JSON in outs and P.SUMMARY_CSV in outs


def test_dvc_parses_the_pipeline(tmp_path):
    """DVC itself accepts dvc.yaml (no overlapping outputs, no cycle) and the smoke variant."""
    wd = copy_repo(tmp_path / "repo")
    run(wd, *GIT, "init", "-q")
    edges = set(re.findall(r'"(\w+)" -> "(\w+)"', dvc(wd, "dag", "--dot").stdout))
    assert edges == {("data", "train"), ("data", "evaluate"), ("train", "sample"), ("train", "evaluate"),
                     ("sample", "evaluate")}
    py(wd, "-m", "ambient.pull", "--write-dvc-yaml", *SMOKE)
    doc = yaml.safe_load((wd / "dvc.yaml").read_text())
    assert P.run_flags(doc) == SMOKE
    assert "results/smoke8/clean/model.pt" in P.dvc_outs(doc)
    assert {"config/smoke.yaml": ["sampling"]} in doc["stages"]["sample"]["params"]
    r = dvc(wd, "status")  # nothing run yet: every stage reports changes, none errors
    assert "evaluate" in r.stdout


def test_print_targets():
    files = py(REPO, "-m", "ambient.pull", "--print-targets", "train", *SMOKE).stdout.split()
    assert files and all(re.fullmatch(r"results/smoke8/[^/]+/model\.pt", f) for f in files), files
    assert "results/smoke8/clean/model.pt" in files


# ---------------------------------------------------------------- parsing and checks (fast)

DRY_RUN = """\
Building DAG of jobs...
Job stats:
job      count
-------  -------
train    1
total    2

[Sat Nov 28 02:06:56 2026]
localrule train:
    input: data/x.zip
    output: results/x/clean/model.pt
    log: logs/x/clean/train.log
    jobid: 3
    reason: Missing output files: results/x/clean/model.pt
    wildcards: dataset=x, corruption=clean
Shell command: "$AMBIENT_PYTHON" -m ambient train --dataset data/x.zip > logs/x/clean/train.log 2>&1

[Sat Nov 28 02:06:56 2026]
rule fig9:
    input: results/x/clean/model.pt, paper_figures/fig9.ipynb
    output: results/figures/fig9.png, results/figures/fig9.pdf
    jobid: 4
Shell command: papermill ...

[Sat Nov 28 02:06:56 2026]
localrule all:
    input: results/figures/fig9.png
    jobid: 0
"""

SUMMARY = """\
Building DAG of jobs...
output_file\tdate\trule\tlog-file(s)\tstatus\tplan
results/x/clean/model.pt\t-\ttrain\t-\tmissing\tupdate pending
data/x.zip\tSat Nov 28 02:02:32 2026\tprepare_dataset\t-\tok\tno update
results/figures/fig9.png\t-\tfig9\t-\tmissing\tupdate pending
"""


def test_parse_dry_run_and_phases():
    jobs = P.parse_dry_run(DRY_RUN)
    assert [j["rule"] for j in jobs] == ["train", "fig9", "all"]
    assert jobs[0]["inputs"] == ["data/x.zip"] and jobs[0]["outputs"] == ["results/x/clean/model.pt"]
    assert "-m ambient train" in jobs[0]["shell"]
    assert [P.phase_of(j) for j in jobs] == ["train", None, None]
    assert P.phase_of({"rule": "new_metric", "outputs": ["results/x/clean/m.json"]}) == "evaluate"
    assert [j["rule"] for j in P.figure_jobs(jobs)] == ["fig9"]


def test_parse_dry_run_reads_group_jobs():
    """Jobs of a `group:` print one level deeper."""
    text = """[Sat Nov 28 02:06:56 2026] Group job evaluate (jobs in lexicogr. order):

    [Sat Nov 28 02:06:56 2026]
    rule fid:
        input: results/x/clean/samples.zip
        output: results/x/clean/fd_pixel.json
        jobid: 5
Shell command: "$AMBIENT_PYTHON" -m ambient fid --out results/x/clean/fd_pixel.json
"""
    jobs = P.parse_dry_run(text)
    assert [(j["rule"], j["outputs"]) for j in jobs] == [("fid", ["results/x/clean/fd_pixel.json"])]
    assert "-m ambient fid" in jobs[0]["shell"] and P.phase_of(jobs[0]) == "evaluate"


def test_pending_compute_names_the_job():
    rows = P.parse_summary(SUMMARY)
    assert [r["rule"] for r in rows] == ["train", "prepare_dataset", "fig9"]
    pending = P.pending_compute(rows, {"fig9"})
    assert [r["output_file"] for r in pending] == ["results/x/clean/model.pt"]
    assert P.describe(pending) == "  rule train: results/x/clean/model.pt (missing)"
    with pytest.raises(P.PullError, match="no summary table"):
        P.parse_summary("Building DAG of jobs...\n")


def test_configfiles_and_module_closure(tmp_path):
    assert P.configfiles([]) == ["config/config.yaml"]
    assert P.configfiles(["--configfile", "a.yaml", "b.yaml", "--cores", "2"]) == ["config/config.yaml", "a.yaml",
                                                                                   "b.yaml"]
    assert P.configfiles(["--configfile=c.yaml"]) == ["config/config.yaml", "c.yaml"]
    pkg = tmp_path / "ambient"
    pkg.mkdir()
    (pkg / "a.py").write_text("from .b import x\n\ndef f():\n    from . import c\n")
    (pkg / "b.py").write_text("import ambient.d\n")
    (pkg / "c.py").write_text("import os\n")
    (pkg / "d.py").write_text("")
    (pkg / "e.py").write_text("")
    assert P.module_closure(["a"], pkg) == ["a", "b", "c", "d"]


def test_pull_outside_a_dvc_checkout_says_so(tmp_path):
    r = py(tmp_path, "-m", "ambient.pull", check=False)
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
    with pytest.raises(P.PullError, match=r"nowhere, which does not exist on this machine; .*"
                                          r"`dvc remote modify --local local url URL`"):
        P.check_remote(repo)
    with pytest.raises(P.PullError, match=r"remote 'elsewhere' is not configured here \(known: local\)"):
        P.check_remote(repo, "elsewhere")
    r = py(repo, "-m", "ambient.pull", check=False)
    assert r.returncode == 3 and "dvc remote modify --local local url" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    (tmp_path / "there").mkdir()
    dvc(repo, "remote", "modify", "--local", "local", "url", str(tmp_path / "there"))
    assert P.check_remote(repo) == ("local", str(tmp_path / "there"))


def test_add_pull_command_registers_ambient_pull():
    import argparse

    parser = argparse.ArgumentParser()
    P.add_pull_command(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["pull", "evaluate", "--from-cache", "-r", "s3"])
    assert a.command == "pull" and a.targets == ["evaluate"] and a.from_cache and a.remote == "s3"
    assert a.func is P._main


def _calls(path: Path, source: str):
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords}


def test_pulled_files_are_never_unpickled():
    """Checkpoints from a remote are loaded with weights_only=True (ambient.training.load_checkpoint);
    nothing else in the package or the notebooks unpickles a file."""
    sources = [(p, p.read_text()) for p in (REPO / "ambient").glob("*.py")]
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
            assert func not in ("pickle.load", "pickle.loads", "torch.jit.load", "joblib.load", "dill.load"), \
                f"{path.name}: {func}"
            if func in ("np.load", "numpy.load"):
                assert kw.get("allow_pickle", "False") == "False", f"{path.name}: np.load(allow_pickle=True)"
    assert torch_loads == ["training.py"]


# ---------------------------------------------------------------- round trip (slow, smoke config)

@pytest.fixture(scope="module")
def producer(tmp_path_factory):
    """A recorded and pushed smoke run: (root, producer checkout, seconds of `ambient.pull --repro`)."""
    root = tmp_path_factory.mktemp("dvc")
    prod = copy_repo(root / "producer")
    (prod / "config" / "dvc-test.yaml").write_text(yaml.safe_dump({"corruptions": RUNS}))
    py(prod, "-m", "ambient.pull", "--write-dvc-yaml", *ROUND_TRIP)
    assert P.run_flags(yaml.safe_load((prod / "dvc.yaml").read_text())) == ROUND_TRIP
    run(prod, *GIT, "init", "-q")
    git_commit(prod, "smoke workflow")
    t0 = time.perf_counter()
    r = py(prod, "-m", "ambient.pull", "--repro")
    seconds = time.perf_counter() - t0
    assert "recorded in dvc.lock" in r.stdout
    assert (prod / "dvc.lock").is_file()
    git_commit(prod, "record the smoke run")
    r = dvc(prod, "push")
    remote = root / "ambient-dvc-remote"  # the default remote of .dvc/config, beside the checkout
    assert remote.is_dir() and any(remote.rglob("*")), r.stdout + r.stderr
    print(f"producer: ambient.pull --repro {seconds:.0f} s")
    return root, prod, seconds


@pytest.fixture(scope="module")
def consumer(producer):
    root, prod, _ = producer
    cons = root / "consumer"
    run(root, "git", "clone", "-q", prod, cons)
    assert not (cons / "results").exists() and not (cons / ".snakemake").exists()
    t0 = time.perf_counter()
    r = py(cons, "-m", "ambient.pull")
    seconds = time.perf_counter() - t0
    print(f"consumer: python -m ambient.pull {seconds:.1f} s\n{r.stdout}")
    return cons, seconds, r


@pytest.mark.slow
def test_producer_run_is_recorded_and_consistent(producer):
    _, prod, _ = producer
    assert "Data and pipelines are up to date" in dvc(prod, "status").stdout
    lock = yaml.safe_load((prod / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"data", "train", "sample", "evaluate"}
    assert all(o["md5"] for s in lock["stages"].values() for o in s["outs"])
    # dvc.yaml's metrics and plots read the recorded run: `dvc metrics diff` / `dvc plots diff` compare runs
    shown = json.loads(dvc(prod, "metrics", "show", "--json").stdout)
    values = next(iter(shown.values()))["data"][P.SUMMARY_JSON]["data"]
    assert set(values) == {"clean", "dust-p0.50", "noise-s0.20"} and 0 <= values["clean"]["share_gt_0.95"] <= 1
    plots = json.loads(dvc(prod, "plots", "show", "--json").stdout)["data"]
    assert set(plots) == set(P.PLOTTED.values()), plots.keys()
    # `--repro` kept Snakemake's mtimes: nothing to redo
    r = py(prod, "-m", "snakemake", *ROUND_TRIP, "-n", "--", *P.dvc_outs(yaml.safe_load((prod / "dvc.yaml").read_text())))
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.slow
def test_consumer_pull_renders_figures_and_computes_nothing(consumer):
    cons, seconds, r = consumer
    doc = yaml.safe_load((cons / "dvc.yaml").read_text())
    figures = P.figure_jobs(P.dag_jobs(P.run_flags(doc), cons))
    assert len(figures) >= 6
    for job in figures:
        for out in job["outputs"]:
            assert (cons / out).is_file() and (cons / out).stat().st_size > 1000, out
    assert all((cons / o).is_file() for o in P.dvc_outs(doc))
    ran = executed_jobs(cons)
    assert ran, "no Snakemake log of the figures"
    assert {j["rule"] for j in ran} <= {j["rule"] for j in figures} | {"all"}, {j["rule"] for j in ran}
    assert not COMPUTE & {j["rule"] for j in ran}
    # no compute job wrote a log or a benchmark (`--touch` leaves empty logs); the touch is the other run
    assert not [p for p in (cons / "logs").rglob("*") if p.is_file() and p.stat().st_size
                and p.parent.name != "figures"]
    assert not (cons / "benchmarks").exists()
    assert [cmd for cmd, _ in snakemake_logs(cons) if "--touch" in cmd]
    r = py(cons, "-m", "snakemake", *P.run_flags(doc), "-n")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Data and pipelines are up to date" in dvc(cons, "status").stdout
    assert seconds < 150, f"the consumer path took {seconds:.0f} s"


@pytest.mark.slow
def test_consumer_with_another_config_stops_before_touching(consumer):
    cons, _, _ = consumer
    cfg = cons / "config" / "smoke.yaml"
    original = cfg.read_text()
    try:
        cfg.write_text(original.replace("  num_samples: 8", "  num_samples: 9"))
        assert cfg.read_text() != original
        since = time.time()
        r = py(cons, "-m", "ambient.pull", check=False)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "dvc status" in r.stderr and "sample" in r.stderr and "config/smoke.yaml" in r.stderr, r.stderr
        assert not snakemake_logs(cons, since), "Snakemake ran"
    finally:
        cfg.write_text(original)


@pytest.mark.slow
def test_hand_edited_file_is_detected_and_only_its_dependents_rerun(consumer):
    from ambient.data import read_image_zip, write_image_zip

    cons, _, _ = consumer
    edited = f"{EDITED_RUN}/samples.zip"
    ds = read_image_zip(cons / edited)
    images = ds.images.copy()
    images[0] = 255 - images[0]
    info = {k: v for k, v in ds.manifest.items() if k not in ("num_images", "channels", "resolution", "images")}
    write_image_zip(cons / edited, images, [f"sample:{i}" for i in range(len(images))], info)

    status = json.loads(dvc(cons, "status", "--json").stdout)
    assert set(status) == {"sample", "evaluate"}, status
    assert edited in json.dumps(status["sample"]) and edited in json.dumps(status["evaluate"])
    # Snakemake's plan: the metrics of that one model, the summary and figures; no training or sampling
    doc = yaml.safe_load((cons / "dvc.yaml").read_text())
    pending = [r for r in P.dag_status(P.run_flags(doc), cons) if r["plan"] != "no update"]
    compute = [r for r in pending if r["rule"] in COMPUTE]
    assert compute and all(r["rule"] not in ("train", "sample", "attack", "prepare_dataset") for r in compute)
    assert all(r["output_file"].startswith(EDITED_RUN + "/") or r["output_file"] in
               SUMMARY_FILES for r in compute), P.describe(compute)

    since = time.time()
    py(cons, "-m", "ambient.pull", "--repro")
    ran = executed_jobs(cons, since)
    assert ran and {j["rule"] for j in ran} <= COMPUTE - {"train", "sample", "attack", "prepare_dataset"}
    for job in ran:
        assert all(o.startswith(EDITED_RUN + "/") or o in SUMMARY_FILES
                   for o in job["outputs"]), job
    assert "Data and pipelines are up to date" in dvc(cons, "status").stdout
    lock = yaml.safe_load((cons / "dvc.lock").read_text())
    assert any(o["path"] == edited and o["md5"] for o in lock["stages"]["sample"]["outs"])


@pytest.mark.slow
def test_partial_pull_stops_naming_the_job_then_from_cache_renders(producer):
    root, prod, _ = producer
    cons = root / "cache-consumer"
    run(root, "git", "clone", "-q", prod, cons)
    r = py(cons, "-m", "ambient.pull", "evaluate", check=False)  # metrics only: no data, models, samples
    assert r.returncode == 3, r.stdout + r.stderr
    assert "rule train: results/smoke8/" in r.stderr and "model.pt" in r.stderr and "--from-cache" in r.stderr
    assert not (cons / "logs").exists() and not executed_jobs(cons)

    t0 = time.perf_counter()
    r = py(cons, "-m", "ambient.pull", "--from-cache")
    seconds = time.perf_counter() - t0
    print(f"consumer --from-cache: {seconds:.1f} s")
    assert not list((cons / "results").rglob("model.pt"))  # never pulled, never trained
    doc = yaml.safe_load((cons / "dvc.yaml").read_text())
    figures = P.figure_jobs(P.dag_jobs(P.run_flags(doc), cons))
    for job in figures:
        assert all((cons / o).is_file() for o in job["outputs"]), job["outputs"]
    assert {j["rule"] for j in executed_jobs(cons)} <= {j["rule"] for j in figures} | {"all"}


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
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")  # never ask a cloud metadata service for credentials
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
    fresh clone whose only remote is that bucket renders every figure without computing anything."""
    import boto3

    root, prod, _ = producer
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="ambient-results")
    _use_s3_remote(prod, s3_endpoint)
    dvc(prod, "push", "-r", "s3")
    stored = s3.list_objects_v2(Bucket="ambient-results").get("KeyCount", 0)
    lock = yaml.safe_load((prod / "dvc.lock").read_text())
    assert stored >= len({o["md5"] for st in lock["stages"].values() for o in st["outs"]}), stored

    cons = root / "s3-consumer"
    run(root, "git", "clone", "-q", prod, cons)
    _use_s3_remote(cons, s3_endpoint, default=True)
    assert P.check_remote(cons) == ("s3", "s3://ambient-results/cache")
    r = py(cons, "-m", "ambient.pull")
    doc = yaml.safe_load((cons / "dvc.yaml").read_text())
    assert all((cons / o).is_file() for o in P.dvc_outs(doc))
    figures = P.figure_jobs(P.dag_jobs(P.run_flags(doc), cons))
    for job in figures:
        assert all((cons / o).is_file() for o in job["outputs"]), job["outputs"]
    assert not COMPUTE & {j["rule"] for j in executed_jobs(cons)}, r.stdout
    assert "Data and pipelines are up to date" in dvc(cons, "status").stdout

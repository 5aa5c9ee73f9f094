"""`python -m ambient.pull` (`ambient pull`): the figures from a DVC remote, recomputing nothing.

The consumer path, one command in a clone of the repository (docs/dvc.md):

1. `dvc pull [TARGETS]`: prepared dataset, checkpoints, samples and metrics of the run recorded
   in dvc.lock (all, or the DVC stages / files named). Every compute output must then be here,
   and `dvc status` clean (code, config and files are those of the recorded run); else it stops.
2. `snakemake --touch` on the compute outputs, with the run's flags (dvc.yaml's `snakemake`
   var): DVC restores files with fresh mtimes in any order; without the touch Snakemake retrains.
3. `snakemake --summary`: no compute job (any rule but the figure rules) may be pending. If one
   is (a config or code that differs, Inception weights here but not on the producer's
   machine, ...) it stops and names the job instead of recomputing.
4. The figures: Snakemake with only the figure rules allowed (`--allowed-rules`), then a last
   check that a plain `snakemake -n` has nothing to do.

`--from-cache` pulls and reads only what the figures read (prepared dataset zip, samples,
neighbour / attack metrics, summary.csv: no checkpoints) and skips 2-3: the figure rules are the
only ones allowed, so nothing trains, samples or goes back to the dataset sources. (A plain
`snakemake` afterwards would retrain: there are no checkpoints.)

`--repro` is the producer side: `dvc repro --no-commit` then `dvc commit --force --no-relink`.
A plain `dvc repro` re-copies every output of a stage it ran from the DVC cache (new mtimes, in
path order), after which Snakemake may redo work that is up to date; this keeps Snakemake's mtimes.

`--write-dvc-yaml` writes dvc.yaml from Snakemake's DAG for a config: one stage per expensive phase
(data, train, sample, evaluate) running Snakemake for the phase's last files; outs are the
phase's output files (persist: true: Snakemake, not DVC, decides what reruns); deps the files it
reads from other phases or outside, the Snakefile and rule files, and the ambient modules its
commands import; params the config sections it reads. The figures are no stage: they are cheap,
not byte-reproducible (notebook metadata), and rendered here from the pulled files.
"""
from __future__ import annotations

import argparse
import ast
import csv
import io
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .layout import FIGURES_DIR  # every figure rule writes below it

BASE_CONFIG = "config/config.yaml"  # the Snakefile's `configfile:`; --configfile files merge over it


@dataclass(frozen=True)
class Phase:
    rules: tuple[str, ...]  # Snakemake rules whose outputs the stage records (evaluate: every other one)
    modules: tuple[str, ...]  # ambient modules behind its `python -m ambient <command>` jobs (+ their imports)
    params: tuple[str, ...]  # top-level config sections it reads


# Every rule whose outputs are not all under results/figures/ is compute: data, train, sample by
# name, any other (neighbours, FD/KD, attacks, summary, new metric rules) is `evaluate`.
PHASES: dict[str, Phase] = {
    "data": Phase(("prepare_dataset", "download_dataset"), ("data", "download", "cli_data"), ("dataset",)),
    "train": Phase(("train",), ("training", "corruption", "networks"), ("corruptions", "network", "training")),
    "sample": Phase(("sample", "sample_full"), ("sampling", "training", "data", "utils"), ("sampling",)),
    "evaluate": Phase((), ("cli_eval", "summary", "claims"), ("evaluation",)),
}
# Read by every job (empty files are left out); common.smk imports ambient/layout.py (run names, paths).
COMMON_DEPS = ("Snakefile", "workflow/rules/common.smk", "workflow/schemas/config.schema.yaml",
               "ambient/__init__.py", "ambient/__main__.py", "ambient/cli.py", "ambient/layout.py")


class PullError(RuntimeError):
    """The consumer path stopped on purpose (message says why and what to do)."""

    exit_code = 3


# ---------------------------------------------------------------- Snakemake's DAG

def snakemake_argv(flags: list[str]) -> list[str]:
    """Snakemake with this interpreter (the jobs inherit it through the workflow's shell prefix)."""
    return [sys.executable, "-m", "snakemake", *flags]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1",
            # dvc.yaml's commands call `snakemake`: this interpreter's, also when the venv is not active
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def _run(argv: list[str], cwd: Path, what: str, capture: bool = True, quiet: bool = False) -> str:
    """Run a command; its stdout + stderr when captured. Failure raises PullError with the output's tail."""
    env = _env()
    if not quiet:
        print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)
    r = subprocess.run(argv, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.STDOUT if capture else None)
    if r.returncode != 0:
        tail = (r.stdout or "")[-4000:]
        raise PullError(f"{what} failed (exit {r.returncode}): {shlex.join(argv)}\n{tail}".rstrip())
    return r.stdout or ""


def dag_status(flags: list[str], cwd: Path = Path(".")) -> list[dict]:
    """`snakemake --summary`: every output file of the DAG with its rule, status and plan."""
    return parse_summary(_run(snakemake_argv([*flags, "--summary"]), cwd, "snakemake --summary", quiet=True))


def parse_summary(text: str) -> list[dict]:
    """The TSV of `snakemake --summary` (header `output_file  date  rule ... status  plan`)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("output_file\t")), None)
    if start is None:
        raise PullError(f"no summary table in Snakemake's output:\n{text[-2000:]}")
    rows = csv.DictReader(io.StringIO("\n".join(lines[start:])), delimiter="\t")
    return [r for r in rows if r.get("output_file") and r.get("rule")]


def dag_jobs(flags: list[str], cwd: Path = Path(".")) -> list[dict]:
    """Every job of the DAG (`snakemake -n -F -p`): rule, inputs, outputs, shell command."""
    out = _run(snakemake_argv([*flags, "--dry-run", "--forceall", "--printshellcmds"]), cwd,
               "snakemake --dry-run", quiet=True)
    return parse_dry_run(out)


_JOB = re.compile(r"^(?:local)?rule (\S+):$")


def parse_dry_run(text: str) -> list[dict]:
    """Job blocks of a dry run: `rule X:` then indented `input: a, b` / `output: ...` lines, `Shell command:`.
    Jobs of a `group:` print one level deeper, under `Group job NAME`."""
    jobs, job = [], None
    for line in text.splitlines():
        m = _JOB.match(line.strip())
        if m:
            job = {"rule": m.group(1), "inputs": [], "outputs": [], "shell": ""}
            jobs.append(job)
        elif job is not None and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            if key in ("input", "output"):
                job[key + "s"] = [v.strip() for v in value.split(", ") if v.strip()]
        elif job is not None and line.startswith("Shell command: "):
            job["shell"] = line.split(": ", 1)[1]
        elif not line.strip():
            job = None
    return jobs


def is_figure_job(job: dict) -> bool:
    return bool(job["outputs"]) and all(o.startswith(FIGURES_DIR + "/") for o in job["outputs"])


def phase_of(job: dict) -> str | None:
    """The DVC stage of a job; None for the figures and for output-less target rules (`all`)."""
    if not job["outputs"] or is_figure_job(job):
        return None
    return next((name for name, p in PHASES.items() if job["rule"] in p.rules), "evaluate")


def compute_jobs(jobs: list[dict]) -> list[dict]:
    return [j for j in jobs if phase_of(j)]


def figure_jobs(jobs: list[dict]) -> list[dict]:
    return [j for j in jobs if j["outputs"] and is_figure_job(j)]


# ---------------------------------------------------------------- dvc.yaml

def module_closure(seeds, pkg_dir: Path) -> list[str]:
    """ambient modules reached from `seeds` through their imports (any depth, function-level included)."""
    seen: set[str] = set()
    todo = list(seeds)
    while todo:
        name = todo.pop()
        path = pkg_dir / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    todo.extend([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
                elif node.level == 0 and node.module == "ambient":
                    todo.extend(a.name for a in node.names)
                elif node.level == 0 and (node.module or "").startswith("ambient."):
                    todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo.extend(a.name.split(".")[1] for a in node.names if a.name.startswith("ambient."))
    return sorted(seen)


def rule_files(cwd: Path) -> dict[str, str]:
    """rule name -> the workflow/rules/*.smk (or Snakefile) defining it."""
    out = {}
    for f in [cwd / "Snakefile", *sorted((cwd / "workflow" / "rules").glob("*.smk"))]:
        for m in re.finditer(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", f.read_text(), re.M):
            out.setdefault(m.group(1), f.relative_to(cwd).as_posix())
    return out


def configfiles(flags: list[str]) -> list[str]:
    """The config files of a run: config/config.yaml, then each --configfile (merged over it)."""
    files = [BASE_CONFIG]
    args = list(flags)
    for i, a in enumerate(args):
        if a in ("--configfile", "--configfiles"):  # nargs="+": the files up to the next flag
            for f in args[i + 1:]:
                if f.startswith("-"):
                    break
                files.append(f)
        elif a.startswith("--configfile="):
            files.append(a.split("=", 1)[1])
    return list(dict.fromkeys(files))


def dvc_stages(flags: list[str], cwd: Path = Path(".")) -> dict:
    """The four stages of dvc.yaml for the run `snakemake FLAGS` (the config's files and sections)."""
    jobs = compute_jobs(dag_jobs(flags, cwd))
    made_by = {o: phase_of(j) for j in jobs for o in j["outputs"]}
    defined_in = rule_files(cwd)
    cfgs = {f: yaml.safe_load((cwd / f).read_text()) or {} for f in configfiles(flags)}
    stages = {}
    for name, phase in PHASES.items():
        mine = [j for j in jobs if phase_of(j) == name]
        if not mine:
            if name == "evaluate" or not phase.rules:
                raise PullError(f"phase {name}: no jobs in the DAG")
            raise PullError(f"phase {name}: no jobs of rules {', '.join(phase.rules)} in the DAG")
        rules = sorted({j["rule"] for j in mine})
        outs = sorted({o for j in mine for o in j["outputs"]})
        inputs = sorted({i for j in mine for i in j["inputs"] if made_by.get(i) != name})
        modules = set(phase.modules) | {m for j in mine for m in re.findall(r"-m ambient\.(\w+)", j["shell"])}
        code = [*COMMON_DEPS, *sorted({defined_in[r] for r in rules if r in defined_in}),
                *(f"ambient/{m}.py" for m in module_closure(sorted(modules), cwd / "ambient"))]
        code = [f for f in code if (cwd / f).stat().st_size > 0]  # DVC warns about empty deps
        params = [{f: keys} for f, cfg in cfgs.items() if (keys := [k for k in phase.params if k in cfg])]
        # targets: the outputs of the phase's last jobs (Snakemake makes what they need). Not `--until
        # RULES`: with two rules where one feeds the other, Snakemake 9 stops with "BUG: Out of jobs ready".
        consumed = {i for j in mine for i in j["inputs"]}
        targets = sorted({j["outputs"][0] for j in mine if not consumed & set(j["outputs"])})
        stages[name] = {
            "cmd": "${snakemake} -- " + shlex.join(targets),  # `--`: --configfile takes several files
            "deps": list(dict.fromkeys(code + inputs)),
            **({"params": params} if params else {}),
            "outs": [{o: {"persist": True}} for o in outs],
        }
    return stages


SUMMARY_CSV, SUMMARY_JSON = "results/metrics/summary.csv", "results/metrics/summary.json"
# `dvc plots show` / `dvc plots diff REV`: one bar per model of these summary.csv columns
PLOTTED = {"share_gt_0.95": "memorized share (top-1 similarity > 0.95)",
           "key_extracted": "extracted with the training mask (mask-key attack)",
           "inpaint_extracted": "extracted by the inpainting attack"}


def metrics_and_plots(outs: set[str]) -> dict:
    """dvc.yaml's top-level `metrics:` (summary.json) and `plots:` (columns of summary.csv), so that
    `dvc metrics diff` and `dvc plots diff` compare two recorded runs."""
    doc = {}
    if SUMMARY_JSON in outs:
        doc["metrics"] = [SUMMARY_JSON]
    if SUMMARY_CSV in outs:
        doc["plots"] = [{title: {"template": "bar_horizontal", "x": column, "y": {SUMMARY_CSV: "corruption"}}}
                        for column, title in PLOTTED.items()]
    return doc


def dvc_yaml_text(flags: list[str], cwd: Path = Path(".")) -> str:
    stages = dvc_stages(flags, cwd)
    outs = {o for st in stages.values() for out in st["outs"] for o in out}
    doc = {"vars": [{"snakemake": shlex.join(["snakemake", *flags])}], "stages": stages, **metrics_and_plots(outs)}
    how = shlex.join(["python", "-m", "ambient.pull", "--write-dvc-yaml", *flags])
    head = (f"# Generated by `{how}`\n"
            "# from Snakemake's DAG: change ambient/pull.py (PHASES) or the workflow, not this file.\n"
            "# One stage per expensive phase; each runs Snakemake for its last files (outs persist: Snakemake\n"
            "# decides what reruns), with the phase's output files, inputs, code and config sections.\n"
            "# Figures are no stage: `python -m ambient.pull` renders them from the pulled files (docs/dvc.md).\n")
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1 << 20)


def read_dvc_yaml(cwd: Path = Path(".")) -> dict:
    path = cwd / "dvc.yaml"
    if not path.is_file():
        raise PullError(f"{path}: not found (run in the repository root)")
    return yaml.safe_load(path.read_text())


def run_flags(doc: dict) -> list[str]:
    """The Snakemake flags of the recorded run: dvc.yaml's `snakemake` var, less the program."""
    for v in doc.get("vars", []):
        if isinstance(v, dict) and "snakemake" in v:
            return shlex.split(v["snakemake"])[1:]
    return []


def dvc_outs(doc: dict) -> dict[str, str]:
    """out path -> stage."""
    out = {}
    for stage, spec in doc.get("stages", {}).items():
        for o in spec.get("outs", []):
            out[next(iter(o)) if isinstance(o, dict) else o] = stage
    return out


# ---------------------------------------------------------------- the consumer path

def dvc_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def describe(rows: list[dict]) -> str:
    """One line per job: rule, its output files and why it would run (rows of `snakemake --summary`)."""
    jobs: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        jobs.setdefault((r["rule"], r.get("status", "")), []).append(r["output_file"])
    return "\n".join(f"  rule {rule}: {', '.join(files)} ({status})" for (rule, status), files in jobs.items())


def pending_compute(rows: list[dict], fig_rules) -> list[dict]:
    """Summary rows of the jobs Snakemake would run, less the figures."""
    return [r for r in rows if r.get("plan") != "no update" and r["rule"] not in fig_rules]


def dvc_changes(cwd: Path) -> dict:
    """`dvc status --json`: {} when dvc.lock matches the workspace (deps, params, outs)."""
    import json

    argv = dvc_argv("status", "--json")
    r = subprocess.run(argv, cwd=cwd, env=_env(), text=True, capture_output=True)
    if r.returncode != 0:
        raise PullError(f"dvc status failed (exit {r.returncode}): {shlex.join(argv)}\n{(r.stdout + r.stderr)[-4000:]}")
    return json.loads(r.stdout) if r.stdout.strip() else {}


def _format_changes(changes: dict) -> str:
    lines = []
    for stage, entries in changes.items():
        for entry in entries:
            if isinstance(entry, dict):
                for kind, files in entry.items():
                    items = files.items() if isinstance(files, dict) else [(files, "")]
                    lines += [f"  {stage}: {kind}: {f} {what}".rstrip() for f, what in items]
            else:
                lines.append(f"  {stage}: {entry}")
    return "\n".join(lines)


def _remote_hint(name: str) -> str:
    return (f"point it at your copy of the results with `dvc remote modify --local {name} url URL` (a directory, "
            f"or s3://BUCKET/PATH with `pip install -e '.[s3]'`), or name another remote with -r (docs/dvc.md, Remotes)")


def check_remote(cwd: Path = Path("."), remote: str | None = None) -> tuple[str, str]:
    """(name, url) of the remote `dvc pull` will use; PullError (one line saying what to set) when
    none is configured or a directory remote does not exist on this machine."""
    from dvc.repo import Repo

    config = Repo(str(cwd)).config
    name = remote or config["core"].get("remote")
    if not name:
        raise PullError("no DVC remote is configured: add one with `dvc remote add --local -d NAME URL` (docs/dvc.md)")
    if name not in config["remote"]:
        raise PullError(f"DVC remote '{name}' is not configured here (known: {', '.join(config['remote']) or 'none'}); "
                        + _remote_hint(name))
    url = str(config["remote"][name]["url"])
    if "://" not in url and not Path(url).is_dir():
        raise PullError(f"DVC remote '{name}' is the directory {url}, which does not exist on this machine; "
                        + _remote_hint(name))
    return name, url


def pull(targets: list[str], *, from_cache: bool = False, remote: str | None = None, jobs: int | None = None,
         cores: str | None = None, extra: list[str] = (), cwd: Path = Path("."), log=print) -> dict:
    """The consumer path; returns the seconds of each step. Raises PullError instead of recomputing."""
    cwd = Path(cwd)
    doc = read_dvc_yaml(cwd)
    name, url = check_remote(cwd, remote)
    flags = [*run_flags(doc), *extra]
    with_cores = [*flags, "--cores", cores] if cores else flags
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    dag = dag_jobs(flags, cwd)
    figures = figure_jobs(dag)
    fig_rules = sorted({j["rule"] for j in figures})
    fig_outputs = {o for j in figures for o in j["outputs"]}
    # what the figures read, plus what `all` asks for beside the figures (summary.csv, claims.csv)
    fig_inputs = sorted({i for j in figures for i in j["inputs"]} |
                        {i for j in dag if j["rule"] == "all" for i in j["inputs"] if i not in fig_outputs})
    if from_cache and not targets:  # what the figures read, and only what DVC stores
        targets = [i for i in fig_inputs if i in dvc_outs(doc)]
    try:
        _run(dvc_argv("pull", "-r", name, *(["-j", str(jobs)] if jobs else []), *targets), cwd, "dvc pull",
             capture=False)
    except PullError as e:  # DVC's own error is above; the one line that says what to do comes last
        raise PullError(f"{e}\ncould not pull from DVC remote '{name}' ({url}): {_remote_hint(name)}") from None
    times["dvc pull"] = time.perf_counter() - t0

    if from_cache:  # the figure rules alone: compute files are plain inputs, and must be here
        missing = [i for i in fig_inputs if not (cwd / i).exists()]
        if missing:
            raise PullError("--from-cache: the figures read files that are not here; pull them (`dvc pull "
                            "FILE...`) or drop --from-cache:\n  " + "\n  ".join(missing))
    else:
        t = time.perf_counter()
        outputs = list(dict.fromkeys(o for j in compute_jobs(dag) for o in j["outputs"]))
        missing = set(o for o in outputs if not (cwd / o).exists())
        if missing:
            rows = [r for r in dag_status(flags, cwd) if r["output_file"] in missing]
            raise PullError("stopping before any job runs: after `dvc pull` these outputs of compute jobs are "
                            "missing, and Snakemake would make them:\n" + describe(rows) +
                            "\nPull them (`dvc pull` with no target, or their stage), make them on purpose "
                            "(snakemake), or render the figures from what is here with --from-cache.")
        changes = dvc_changes(cwd)
        if changes:
            raise PullError("stopping before any job runs: `dvc status` says this checkout is not the recorded "
                            "run (its code, config or files differ from dvc.lock), so Snakemake's view of it "
                            "cannot be trusted after a touch:\n" + _format_changes(changes) +
                            "\nCheck out the commit of dvc.lock, or `dvc checkout --force` the files.")
        times["dvc status"] = time.perf_counter() - t
        t = time.perf_counter()
        _run(snakemake_argv([*with_cores, "--touch", "--", *outputs]), cwd, "snakemake --touch")
        times["snakemake --touch"] = time.perf_counter() - t
        t = time.perf_counter()
        pending = pending_compute(dag_status(flags, cwd), fig_rules)
        if pending:
            raise PullError("stopping before any job runs: after `dvc pull` and `snakemake --touch`, Snakemake "
                            "would still run these compute jobs:\n" + describe(pending) +
                            "\nNothing was recomputed. The DAG here differs from the recorded run (config, "
                            "code, or files such as resources/weights present on one machine only).")
        times["check"] = time.perf_counter() - t
    t = time.perf_counter()
    _run(snakemake_argv([*with_cores, "--allowed-rules", "all", *fig_rules]), cwd, "rendering the figures",
         capture=False)
    times["figures"] = time.perf_counter() - t
    if not from_cache:
        left = [r for r in dag_status(flags, cwd) if r.get("plan") != "no update"]
        if left:
            raise PullError("after rendering, Snakemake still has jobs to run:\n" + describe(left))
    times["total"] = time.perf_counter() - t0
    log(f"figures in {FIGURES_DIR}/ ({', '.join(f'{k} {v:.1f} s' for k, v in times.items())})")
    return times


def repro(targets: list[str], *, cwd: Path = Path("."), log=print) -> dict:
    """Producer side: `dvc repro --no-commit`, `dvc commit --force --no-relink`, then check that
    Snakemake has no compute job left and `dvc status` is clean. Returns the seconds of each step."""
    cwd = Path(cwd)
    flags = run_flags(read_dvc_yaml(cwd))
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    _run(dvc_argv("repro", "--no-commit", *targets), cwd, "dvc repro", capture=False)
    times["dvc repro"] = time.perf_counter() - t0
    t = time.perf_counter()
    _run(dvc_argv("commit", "--force", "--no-relink", *targets), cwd, "dvc commit")
    times["dvc commit"] = time.perf_counter() - t
    fig_rules = {j["rule"] for j in figure_jobs(dag_jobs(flags, cwd))}
    pending = pending_compute(dag_status(flags, cwd), fig_rules)
    if pending and not targets:
        raise PullError("after dvc repro, Snakemake still has compute jobs to run:\n" + describe(pending))
    changes = dvc_changes(cwd)
    if changes and not targets:
        raise PullError("after dvc repro and dvc commit, `dvc status` is not clean:\n" + _format_changes(changes))
    times["total"] = time.perf_counter() - t0
    log("recorded in dvc.lock: commit it (git add dvc.lock), then `dvc push` "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in times.items())})")
    return times


# ---------------------------------------------------------------- command line

def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="*",
                   help="DVC stages or files to pull (--repro: to reproduce); default: all of dvc.yaml")
    p.add_argument("--from-cache", action="store_true",
                   help="pull and use only the files the figures read (no checkpoints), render the figures only")
    p.add_argument("--repro", action="store_true",
                   help="producer side instead: dvc repro --no-commit, dvc commit --no-relink (Snakemake's mtimes "
                        "kept), check nothing is left to do")
    p.add_argument("-r", "--remote", help="DVC remote (default: core.remote of .dvc/config)")
    p.add_argument("-j", "--jobs", type=int, help="parallel transfers of `dvc pull`")
    p.add_argument("--cores", help="Snakemake --cores for the figures (default: the profile's)")
    p.add_argument("--snakemake-arg", dest="extra", action="append", default=[], metavar="ARG",
                   help="one more Snakemake flag of the recorded run (repeatable, e.g. --snakemake-arg=--config "
                        "--snakemake-arg=python=/opt/py)")
    g = p.add_argument_group("dvc.yaml")
    g.add_argument("--write-dvc-yaml", nargs="?", const="dvc.yaml", metavar="PATH",
                   help="write the DVC stages for the run of --configfile (default config/config.yaml) and stop")
    g.add_argument("--print-targets", metavar="PHASE", choices=sorted(PHASES),
                   help="print one phase's output files for --configfile and stop")
    g.add_argument("--configfile", nargs="+", action="extend", default=[], metavar="FILE",
                   help="with --write-dvc-yaml / --print-targets: Snakemake's --configfile (merged over "
                        "config/config.yaml)")
    p.set_defaults(func=_main)


def _main(a) -> int:
    flags = ["--configfile", *a.configfile] if a.configfile else []
    if a.write_dvc_yaml:
        text = dvc_yaml_text(flags)
        if a.write_dvc_yaml == "-":
            sys.stdout.write(text)
        else:
            Path(a.write_dvc_yaml).write_text(text)
            print(f"wrote {a.write_dvc_yaml} ({len(PHASES)} stages)", file=sys.stderr)
        return 0
    if a.print_targets:
        jobs = [j for j in dag_jobs(flags) if phase_of(j) == a.print_targets]
        print("\n".join(sorted({o for j in jobs for o in j["outputs"]})))
        return 0
    if a.configfile:
        raise PullError("--configfile is for --write-dvc-yaml / --print-targets: the pull uses the flags in dvc.yaml")
    if a.repro:
        repro(a.targets)
        return 0
    pull(a.targets, from_cache=a.from_cache, remote=a.remote, jobs=a.jobs, cores=a.cores, extra=a.extra)
    return 0


def add_pull_command(sub) -> None:
    """Register `ambient pull` on the main parser's sub-commands."""
    p = sub.add_parser("pull", help="dvc pull, snakemake --touch, check nothing recomputes, render the figures",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)


def main(argv: list[str] | None = None) -> int:
    from .entry import standalone_main

    return standalone_main("python -m ambient.pull", __doc__, _add_arguments, "pull", argv)


if __name__ == "__main__":
    sys.exit(main())

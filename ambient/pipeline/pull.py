"""`python -m ambient.pipeline.pull` (`ambient pull`): a recorded run from a DVC remote, ready to use.

dvc.yaml (hand-written, docs/dvc.md) has one stage per phase, each recording the phase's directory
(ambient.layout): datasets, models, samples, evaluation, metrics, figures. Plain `dvc pull` and
`dvc repro` work. This command adds what a Snakemake user also needs after a pull:

1. The targets are checked first: one that is neither a stage of dvc.yaml nor a path of (or
   in, or above) one of its outs stops with the stages and their outs, before any remote.
2. The temporary files of killed writes (`*.tmp`, `.*.extracting/`, also in .dvcignore) are removed
   from the phase directories.
3. The remote is checked: a missing or unreachable one stops with one line naming it, its
   URL and the command that points it elsewhere.
4. `dvc pull [TARGETS]` (the remotes of .dvc/config set `verify = true`: DVC drops a corrupt download).
5. Every pulled file is hashed again against dvc.lock (directories: DVC's .dir manifest): DVC
   checks out a corrupted cache object and `dvc status` stays clean. A mismatch stops the pull,
   naming the file, its cache object and the remote's object, and the commands that recover
   (ambient.pipeline.integrity).
6. Modification times in phase order (every file of a phase gets one time, later than the
   phase before): DVC writes files with fresh mtimes in any order, after which a plain
   `snakemake` would retrain whatever happened to be older than its inputs.
7. `dvc status` must be clean (code, config and files are those of dvc.lock), else it stops
   and names what differs, before anything recomputes.

`--render` then re-renders the figures from the pulled files (`dvc repro --force --single-item
figures`): nothing trains, samples or evaluates.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..entry import UserError
from ..layout import PHASE_DIRS
from . import integrity


class PullError(UserError):
    """The pull stopped on purpose (the message says why and what to do)."""

    exit_code = 3


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DVC_NO_ANALYTICS": "1",
        # dvc.yaml's commands call `snakemake`: this interpreter's, also when the venv is not active
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def dvc(*args: str, cwd: Path = Path("."), capture: bool = False) -> str:
    """Run `python -m dvc ARGS`; PullError with the output's tail when it fails."""
    argv = [sys.executable, "-m", "dvc", *args]
    print(f"+ {shlex.join(argv[1:])}", file=sys.stderr, flush=True)
    r = subprocess.run(argv, cwd=cwd, env=_env(), text=True, capture_output=capture)
    if r.returncode != 0:
        tail = ((r.stdout or "") + (r.stderr or ""))[-4000:]
        raise PullError(f"dvc {args[0]} failed (exit {r.returncode})\n{tail}".rstrip())
    return r.stdout or ""


# ---------------------------------------------------------------- remote


def _remote_hint(name: str) -> str:
    return (
        f"point it at your copy of the results with `dvc remote modify --local {name} url URL` (a directory, "
        f"or s3://BUCKET/PATH with `pip install -e '.[s3]'`), or name another remote with -r (docs/dvc.md, Remotes)"
    )


def check_remote(cwd: Path = Path("."), remote: str | None = None) -> tuple[str, str]:
    """(name, url) of the remote `dvc pull` will use; PullError (one line saying what to set) when
    none is configured or a directory remote does not exist on this machine."""
    from dvc.repo import Repo

    config = Repo(str(cwd)).config
    name = remote or config["core"].get("remote")
    if not name:
        raise PullError("no DVC remote is configured: add one with `dvc remote add --local -d NAME URL` (docs/dvc.md)")
    if name not in config["remote"]:
        raise PullError(
            f"DVC remote '{name}' is not configured here (known: {', '.join(config['remote']) or 'none'}); "
            + _remote_hint(name)
        )
    url = str(config["remote"][name]["url"])
    if "://" not in url and not Path(url).is_dir():
        raise PullError(
            f"DVC remote '{name}' is the directory {url}, which does not exist on this machine; " + _remote_hint(name)
        )
    return name, url


# ---------------------------------------------------------------- after the pull


def order_mtimes(cwd: Path = Path("."), now: float | None = None) -> int:
    """Give every file of a phase directory one modification time, one second later than the
    phase before it (layout.PHASE_DIRS order), so Snakemake sees each phase as newer than its
    inputs. Returns the number of files touched."""
    start = (time.time() if now is None else now) - len(PHASE_DIRS)
    count = 0
    for i, directory in enumerate(PHASE_DIRS):
        stamp = start + i
        root = Path(cwd) / directory
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            os.utime(path, (stamp, stamp))
        count += len(files)
    return count


def dvc_changes(cwd: Path = Path(".")) -> dict:
    """`dvc status --json`: {} when dvc.lock matches the workspace (deps, params, outs)."""
    out = dvc("status", "--json", cwd=cwd, capture=True)
    return json.loads(out) if out.strip() else {}


def format_changes(changes: dict) -> str:
    lines = []
    for stage, entries in changes.items():
        for entry in entries:
            if not isinstance(entry, dict):
                lines.append(f"  {stage}: {entry}")
                continue
            for kind, files in entry.items():
                items = files.items() if isinstance(files, dict) else [(files, "")]
                lines += [f"  {stage}: {kind}: {f} {what}".rstrip() for f, what in items]
    return "\n".join(lines)


def _dvc_pull(cwd: Path, name: str, url: str, jobs: int | None, targets: list[str]) -> None:
    """`dvc pull`; when it fails, files that are missing or corrupt (the remote's `verify = true`
    drops a corrupt download) are named with the way to recover, else the remote is blamed."""
    try:
        dvc("pull", "-r", name, *(["-j", str(jobs)] if jobs else []), *targets, cwd=cwd)
    except PullError as e:  # DVC's own error is above; the lines that say what to do come last
        bad = integrity.verify_outputs(cwd, targets, url)
        corrupt = [b for b in bad if b.remote_state.startswith("corrupt") or b.cache_state.startswith("corrupt")]
        lacking = [b for b in bad if b.remote_state == "missing"]
        # every out lacking (one Bad each: a file, or a .dir manifest): the wrong remote, not a bad object
        some_lacking = lacking and len(lacking) < len(integrity.lock_outs(cwd, targets))
        if corrupt or some_lacking or (bad and "://" in url and "Checkout failed" in str(e)):
            raise PullError(f"{e}\n{integrity.corruption_message(bad, name, url, dvc_failed=True)}") from None
        raise PullError(f"{e}\ncould not pull from DVC remote '{name}' ({url}): {_remote_hint(name)}") from None


def pull(
    targets: list[str],
    *,
    remote: str | None = None,
    jobs: int | None = None,
    render: bool = False,
    cwd: Path = Path("."),
    log=print,
) -> dict:
    """The steps of the module docstring; returns the seconds of each. Raises PullError instead of
    recomputing anything."""
    cwd = Path(cwd)
    if not (cwd / "dvc.yaml").is_file():
        raise PullError(f"{cwd / 'dvc.yaml'}: not found (run in the repository root)")
    unknown = integrity.check_targets(targets, cwd)
    if unknown:
        raise PullError(integrity.unknown_targets_message(unknown, cwd))
    integrity.clean_temp(cwd, log=log)
    name, url = check_remote(cwd, remote)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    _dvc_pull(cwd, name, url, jobs, targets)
    times["dvc pull"] = time.perf_counter() - t0
    t = time.perf_counter()
    bad = integrity.verify_outputs(cwd, targets, url)
    if bad:
        raise PullError(integrity.corruption_message(bad, name, url))
    times["verify"] = time.perf_counter() - t
    touched = order_mtimes(cwd)
    t = time.perf_counter()
    changes = {} if targets else dvc_changes(cwd)
    if changes:
        raise PullError(
            "`dvc status` says this checkout is not the recorded run (its code, config or files "
            "differ from dvc.lock):\n"
            + format_changes(changes)
            + "\n`dvc repro` recomputes what differs; `git checkout` the commit of dvc.lock, or "
            "`dvc checkout --force`, to return to the recorded run."
        )
    times["dvc status"] = time.perf_counter() - t
    if render:
        t = time.perf_counter()
        dvc("repro", "--force", "--single-item", "figures", cwd=cwd)
        times["figures"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    log(
        f"pulled from {name} ({url}); {touched} files in phase order "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in times.items())})"
    )
    return times


# ---------------------------------------------------------------- command line


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="*", help="DVC stages or files to pull (default: all of dvc.yaml)")
    p.add_argument("-r", "--remote", help="DVC remote (default: core.remote of .dvc/config)")
    p.add_argument("-j", "--jobs", type=int, help="parallel transfers of `dvc pull`")
    p.add_argument(
        "--render",
        action="store_true",
        help="then render the figures again from the pulled files (dvc repro -f -s figures)",
    )
    p.set_defaults(func=_main)


def _main(a) -> int:
    pull(a.targets, remote=a.remote, jobs=a.jobs, render=a.render)
    return 0


def add_pull_command(sub) -> None:
    """Register `ambient pull` on the main parser's sub-commands."""
    p = sub.add_parser(
        "pull",
        help="dvc pull, mtimes in phase order, check dvc status (--render: figures again)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)


def main(argv: list[str] | None = None) -> int:
    from ..entry import standalone_main

    return standalone_main("python -m ambient.pipeline.pull", __doc__, _add_arguments, "pull", argv)


if __name__ == "__main__":
    sys.exit(main())

"""What `ambient pull` checks besides DVC (docs/dvc.md, Getting a run).

- `check_targets`: every target is a stage of dvc.yaml or a path of (or inside, or above) one of
  its outs, before any remote is contacted.
- `verify_outputs`: every pulled file hashed again (md5) against dvc.lock, directories through
  DVC's `.dir` manifest. DVC's own state database trusts the cache: a corrupted cache object is
  checked out and `dvc status` stays clean. A mismatch is reported with the workspace file, its
  cache object, the remote's object where the remote is a directory, and the commands that recover.
- `clean_temp`: the temporary files the library's atomic writes leave when killed (the patterns of
  `.dvcignore`, TEMP_PATTERNS below) are removed from the phase directories.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..entry import UserError
from ..layout import PHASE_DIRS

# ambient.utils.atomic_path, eval/claims.py and readme_tables.py: .<name>.<random>.tmp;
# critical_path.py: <name>.json.tmp; pipeline/download.py: .<name>.<random>.extracting/ (a folder).
# The same patterns are in .dvcignore (tests/test_pull_verify.py holds them together).
TEMP_PATTERNS = ("*.tmp", ".*.extracting")


def stages_and_outs(cwd: Path = Path(".")) -> dict[str, list[str]]:
    """{stage: [out path, ...]} of dvc.yaml, in its order."""
    doc = yaml.safe_load((Path(cwd) / "dvc.yaml").read_text()) or {}
    return {
        stage: [next(iter(o)) if isinstance(o, dict) else str(o) for o in spec.get("outs", [])]
        for stage, spec in (doc.get("stages") or {}).items()
    }


def _related(a: str, b: str) -> bool:
    """a and b are the same path, or one lies inside the other."""
    a, b = a.strip("/"), b.strip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def check_targets(targets: list[str], cwd: Path = Path(".")) -> list[str]:
    """The targets that are neither a stage (`NAME` or `dvc.yaml:NAME`) nor a path related to an out."""
    layout = stages_and_outs(cwd)
    outs = [o for paths in layout.values() for o in paths]
    unknown = []
    for t in targets:
        name = t.removeprefix("dvc.yaml:")
        if name not in layout and not any(_related(t, o) for o in outs):
            unknown.append(t)
    return unknown


def unknown_targets_message(unknown: list[str], cwd: Path = Path(".")) -> str:
    layout = stages_and_outs(cwd)
    listing = "\n".join(f"  {stage}: {', '.join(outs)}" for stage, outs in layout.items())
    return (
        f"unknown DVC stage or output: {', '.join(unknown)} (nothing was pulled). "
        f"The stages of {Path(cwd) / 'dvc.yaml'} and their outs:\n{listing}"
    )


# ---------------------------------------------------------------- hashes


def md5_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _state(path: Path | None, oid: str) -> str:
    """'ok', 'missing' or 'corrupt (md5 …)' of a file that should hash to oid ('' when unknown)."""
    if path is None:
        return ""
    if not path.is_file():
        return "missing"
    actual = md5_file(path)
    return "ok" if actual == oid.removesuffix(".dir") else f"corrupt (md5 {actual})"


def object_path(root: Path, oid: str) -> Path:
    """Where DVC 3 keeps an object under a cache or directory remote: files/md5/ab/cdef…"""
    return Path(root) / "files" / "md5" / oid[:2] / oid[2:]


@dataclass
class Bad:
    """One pulled file (or `.dir` manifest) that is not what dvc.lock records."""

    path: str  # in the workspace
    oid: str  # dvc.lock's md5
    workspace: str  # 'missing' or 'corrupt (md5 …)'
    cache: Path
    cache_state: str
    remote: Path | None
    remote_state: str
    directory: str | None = None  # the .dir object of the directory out it belongs to


@dataclass
class Places:
    """Where the objects are: the checkout, its cache, and the remote's directory (None: not a directory)."""

    cwd: Path
    cache: Path
    remote: Path | None

    def check(self, path: str, oid: str, workspace_state: str) -> Bad | None:
        if workspace_state == "ok":
            return None
        cache = object_path(self.cache, oid)
        remote = object_path(self.remote, oid) if self.remote else None
        return Bad(path, oid, workspace_state, cache, _state(cache, oid), remote, _state(remote, oid))


def places(cwd: Path, remote_url: str | None) -> Places:
    from dvc.repo import Repo

    cache_files = Path(Repo(str(cwd)).cache.local.path)  # <cache dir>/files/md5
    remote = Path(remote_url) if remote_url and "://" not in remote_url else None
    return Places(Path(cwd), cache_files.parent.parent, remote)


def lock_outs(cwd: Path, targets: list[str]) -> list[tuple[str, str, list[str]]]:
    """(path, md5, the targets inside it) of the outs of dvc.lock the targets name: all of them without
    targets; [] as the third item when the whole out is wanted (its stage, itself or a folder above)."""
    lock = yaml.safe_load((Path(cwd) / "dvc.lock").read_text()) or {}
    names = {t.removeprefix("dvc.yaml:") for t in targets}
    found = []
    for stage, spec in (lock.get("stages") or {}).items():
        for o in spec.get("outs", []):
            path = o["path"].strip("/")
            inside = [t for t in targets if _related(t, path) and len(t.strip("/")) > len(path)]
            whole = not targets or stage in names or any(_related(t, path) for t in targets if t not in inside)
            if o.get("md5") and (whole or inside):
                found.append((path, o["md5"], [] if whole else inside))
    return found


def _manifest(where: Places, path: str, oid: str) -> tuple[list[dict] | None, Bad | None]:
    """The entries of a directory out's `.dir` object (the cache's, else the remote's), checked."""
    for root in (where.cache, where.remote):
        obj = object_path(root, oid) if root else None
        if obj is not None and _state(obj, oid) == "ok":
            return json.loads(obj.read_text()), None
    return None, where.check(f"{path}/ (its .dir manifest)", oid, "missing")


def verify_outputs(cwd: Path, targets: list[str], remote_url: str | None = None) -> list[Bad]:
    """Every file of the selected outs of dvc.lock, hashed in the workspace; the ones that differ."""
    where = places(Path(cwd), remote_url)
    bad: list[Bad] = []
    for path, oid, inside in lock_outs(cwd, targets):
        if not oid.endswith(".dir"):
            files = [(path, oid)]
        else:
            entries, problem = _manifest(where, path, oid)
            if problem:
                bad.append(problem)
                continue
            files = [(f"{path}/{e['relpath']}", e["md5"]) for e in entries]
        for file, md5 in files:
            if not inside or any(_related(t, file) for t in inside):
                problem = where.check(file, md5, _state(Path(cwd) / file, md5))
                if problem:
                    problem.directory = oid if oid.endswith(".dir") else None
                    bad.append(problem)
    return bad


def _remote_step(b: Bad, remote_name: str, remote_url: str) -> str:
    """Delete the remote's object (and its directory's .dir object: while that is there, `dvc push`
    takes every file of the directory as present) and push again from a good copy."""
    oids = [b.oid, *([b.directory] if b.directory else [])]
    if b.remote:
        objects = [str(object_path(b.remote.parents[3], o)) for o in oids]
        delete = f"`{shlex.join(['rm', '-f', *objects])}`"
    else:
        objects = [f"{remote_url.rstrip('/')}/files/md5/{o[:2]}/{o[2:]}" for o in oids]
        delete = f"delete {' and '.join(objects)} from the remote"
    return (
        f"the remote's copy is {b.remote_state or 'missing or corrupt'}: re-push it from a good copy "
        f"(a checkout whose cache holds the right {b.path}): {delete}, then `dvc push -r {remote_name}` "
        f"there (DVC does not overwrite an object the remote already has)"
    )


def _describe(b: Bad, remote_name: str, remote_url: str, dvc_failed: bool) -> list[str]:
    lines = [
        f"  {b.path}: {b.workspace} in the workspace, dvc.lock says md5 {b.oid.removesuffix('.dir')}",
        f"    cache object {b.cache}: {b.cache_state}",
    ]
    if b.remote:
        lines.append(f"    remote '{remote_name}' object {b.remote}: {b.remote_state}")
    in_remote = b.remote_state.startswith(("corrupt", "missing")) or (
        not b.remote and dvc_failed and b.cache_state == "missing"
    )
    if in_remote:  # with `verify = true` DVC drops a corrupt download from the cache
        lines.append("    " + _remote_step(b, remote_name, remote_url))
    return lines


def corruption_message(bad: list[Bad], remote_name: str, remote_url: str, dvc_failed: bool = False) -> str:
    """What is wrong with each file and how to recover: fix the remote's copy if it is the bad one,
    delete the corrupt cache object and workspace file, pull again."""
    blocked = [b for b in bad if b.workspace == "missing" and b.cache_state == "ok"]  # not checked out
    named = [b for b in bad if b not in blocked] or blocked
    lines = [f"{len(named)} pulled file(s) do not match dvc.lock (nothing was recomputed):"]
    for b in named[:20]:
        lines += _describe(b, remote_name, remote_url, dvc_failed)
    if len(named) > 20:
        lines.append(f"  ... and {len(named) - 20} more")
    if named is not blocked and blocked:
        lines.append(
            f"  ({len(blocked)} other file(s) were not checked out because of these; their cache objects are fine)"
        )
    doomed = [str(b.cache) for b in named if b.cache_state.startswith("corrupt")]
    doomed += [b.path for b in named if b.workspace.startswith("corrupt") and "(" not in b.path]
    doomed = list(dict.fromkeys(doomed))
    first = "fix the remote's copy (above), " if any("the remote's copy is" in line for line in lines) else ""
    lines.append(
        f"to recover, {first}delete the corrupt cache object(s) and workspace file(s) (DVC's state "
        "database would keep them), and pull again:"
    )
    lines.append(f"  {shlex.join(['rm', '-f', *doomed])} && ambient pull" if doomed else "  ambient pull")
    return "\n".join(lines)


# ---------------------------------------------------------------- temporary files


def temp_files(cwd: Path = Path(".")) -> list[Path]:
    """Leftovers of killed atomic writes (TEMP_PATTERNS) inside the phase directories."""
    found = []
    for directory in PHASE_DIRS:
        root = Path(cwd) / directory
        if root.is_dir():
            found += [p for p in root.rglob("*") if any(fnmatch.fnmatch(p.name, pat) for pat in TEMP_PATTERNS)]
    return sorted(p for p in found if not any(q in p.parents for q in found))


def clean_temp(cwd: Path = Path("."), log=print) -> list[Path]:
    """Remove them (files and the download's extraction folders); refuses while Snakemake runs here."""
    found = temp_files(cwd)
    locks = Path(cwd) / ".snakemake" / "locks"
    if found and locks.is_dir() and any(locks.iterdir()):
        raise UserError(f"{locks}: a Snakemake run holds this checkout; not removing {len(found)} temporary files")
    for p in found:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
        log(f"removed a temporary file left by a killed write: {p}")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ambient.pipeline.integrity", description="remove the temporary files of killed writes"
    )
    p.add_argument("--clean-temp", action="store_true", help="remove them (default: list them)")
    a = p.parse_args(argv)
    if a.clean_temp:
        try:
            clean_temp(log=lambda m: print(m, file=sys.stderr))
        except UserError as e:
            print(f"{p.prog}: {e}", file=sys.stderr)
            return 1
    else:
        print("".join(f"{p}\n" for p in temp_files()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

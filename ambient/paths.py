"""Output paths checked before the work, not after it. Torch-free (the CLI runner uses it).

A command declares which of its options are read and which are written (`declare_paths`, on its
parser); `check_paths` then refuses, before any work, an output that is one of the inputs or another
output, an output that is a folder, empty, read-only or in a folder that cannot be written.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _named(path: Path, label: str | None) -> str:
    return f"{label} {path}" if label else str(path)


def check_writable(path: str | os.PathLike, label: str | None = None) -> None:
    """Fail before long work if `path` cannot be written: its folder is created if missing.

    A file without any write bit counts as read-only even for root (a write-protected result)."""
    path = Path(path)
    name = _named(path, label)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"{name}: cannot create its folder {path.parent} ({e.strerror}); choose another output path"
        ) from None
    if path.is_dir():
        raise IsADirectoryError(f"{name}: is a folder; give a file name")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{name}: its folder is not writable; choose another output path or fix the permissions")
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise PermissionError(f"{name}: is read-only; choose another output path or fix the permissions")


def check_writable_dir(path: str | os.PathLike, label: str | None = None) -> None:
    """Fail before long work if folder `path` cannot be made or written into (nothing is created)."""
    path = Path(path)
    name = _named(path, label)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{name}: is a file; give a folder")
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise NotADirectoryError(f"{name}: {existing} is a file, so the folder cannot be made; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK) or (existing == path and not path.stat().st_mode & 0o222):
        raise PermissionError(f"{name}: not writable; choose another output folder or fix the permissions")


@dataclass(frozen=True)
class PathRoles:
    """Which options (argparse dests) of a command name paths, and how it uses them.

    inputs: read (files or folders); outputs: files written; out_dirs: folders written into (a run
    directory); in_place: files read and rewritten by design (README.md, the schema), never checked
    writable since --check writes nothing; derived(args): outputs defaulted from other options,
    {label: path} (e.g. --csv's OUT stem + .csv, RUN_DIR/model.pt)."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    out_dirs: tuple[str, ...] = ()
    in_place: tuple[str, ...] = ()
    derived: Callable[[argparse.Namespace], dict[str, str | os.PathLike]] | None = None

    def dests(self) -> set[str]:
        return {*self.inputs, *self.outputs, *self.out_dirs, *self.in_place}


def declare_paths(p: argparse.ArgumentParser, **roles) -> None:
    """Declare a command's path options (PathRoles' fields); entry.check_arguments checks them."""
    p.set_defaults(path_roles=PathRoles(**{k: tuple(v) if k != "derived" else v for k, v in roles.items()}))


def option_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def same_path(a: Path, b: Path) -> bool:
    """The same file or folder: equal once resolved (symlinks followed), or os.path.samefile."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _given(args: argparse.Namespace, roles: PathRoles) -> list[tuple[str, Path, str]]:
    """(label, path, role) of every path option given (or derived); an empty written path is refused."""
    entries = []
    for role in ("inputs", "outputs", "out_dirs", "in_place"):
        for dest in getattr(roles, role):
            value = getattr(args, dest, None)
            if value is None or (value == "" and role == "inputs"):
                continue
            if str(value) == "":
                raise ValueError(f"{option_name(dest)} is empty: give a path")
            entries.append((option_name(dest), Path(value), role))
    for label, path in (roles.derived(args) if roles.derived else {}).items():
        entries.append((label, Path(path), "outputs"))
    return entries


def check_paths(args: argparse.Namespace, roles: PathRoles) -> None:
    """Before any work: no output over an input or over another output; every output writable."""
    entries = _given(args, roles)
    for i, (label, path, role) in enumerate(entries):
        if role == "inputs":
            continue
        # an output against every input, and against each output before it (the pair named once)
        for j, (other, other_path, other_role) in enumerate(entries):
            if j != i and (other_role == "inputs" or j < i) and same_path(path, other_path):
                kind = "path" if role == "out_dirs" or path.is_dir() else "file"
                raise ValueError(f"{label} {path} is the same {kind} as {other}: choose another output path")
    for label, path, role in entries:
        if role == "outputs":
            check_writable(path, label)
        elif role == "out_dirs":
            check_writable_dir(path, label)

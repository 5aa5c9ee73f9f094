"""Running a parsed command: one error path for `python -m ambient` and the module entry points.

Kept apart from cli.py (which imports every command) so a module's entry point depends on
nothing else: DVC's stages list the modules each phase imports.
"""

from __future__ import annotations

import argparse
import os
import sys

from .paths import PathRoles, check_paths


class UserError(RuntimeError):
    """A condition the user fixes (a busy run directory, no CUDA, a failed download or pull): one line."""


# Shown as one line naming the command; anything else is a bug and shows its traceback. With
# AMBIENT_DEBUG=1 (or `ambient --debug`) these show theirs too.
USER_ERRORS = (ValueError, OSError, UserError)


# Counts that every command reads the same way: at least 1 when given (None: the default).
AT_LEAST_ONE = (
    "num",
    "batch_size",
    "steps",
    "num_images",
    "threads",
    "kid_subsets",
    "kid_subset_size",
    "k",
    "bins",
    "resample",
    "samples",
    "log_every",
    "checkpoint_every",
    "resolution",
)
# Counts that size an array up front: a typo (1e12) would die in a memory traceback, not a message.
AT_MOST = {"bins": 10**6, "kid_subsets": 10**5, "k": 10**4, "gallery_size": 10**4}


def check_arguments(args: argparse.Namespace) -> None:
    """The checks every command shares, before any work: counts >= 1 (some bounded above), seeds >= 0, and the paths it
    declared: no output over an input or another output, every output writable (ambient.paths.check_paths)."""
    for key in AT_LEAST_ONE:
        value = getattr(args, key, None)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and not isinstance(v, bool) and v < 1:
                raise ValueError(f"--{key.replace('_', '-')} {v} must be >= 1")
    for key, most in AT_MOST.items():
        v = getattr(args, key, None)
        if isinstance(v, int) and v > most:
            raise ValueError(f"--{key.replace('_', '-')} {v} must be <= {most}")
    for key, v in vars(args).items():  # every seed: numpy and torch refuse a negative one without naming it
        if (key == "seed" or key.endswith("_seed")) and isinstance(v, int) and not isinstance(v, bool) and v < 0:
            raise ValueError(f"--{key.replace('_', '-')} {v} must be >= 0")
    # every path option the command declared (ambient.paths.declare_paths); an undeclared --out is an output
    roles = getattr(args, "path_roles", None) or PathRoles(outputs=("out",) if hasattr(args, "out") else ())
    check_paths(args, roles)


def run_command(args: argparse.Namespace, name: str) -> int:
    """Run a parsed command; a user error prints one line naming the command (no traceback).

    Exit status: the command's own, else 0; an error's `exit_code` attribute, else 2."""
    try:
        check_arguments(args)
        return args.func(args) or 0
    except USER_ERRORS as e:
        if getattr(args, "debug", False) or os.environ.get("AMBIENT_DEBUG", "") not in ("", "0"):
            raise
        print(f"ambient {name}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)


def standalone_main(prog: str, doc: str | None, add_arguments, name: str, argv: list[str] | None = None) -> int:
    """`python -m ambient.<module>` entry points: the module's arguments at the top level."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_command(parser.parse_args(argv), name)

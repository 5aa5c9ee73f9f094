"""Running a parsed command: one error path for `python -m ambient` and the module entry points.

Kept apart from cli.py (which imports every command) so a module's entry point depends on
nothing else: DVC's stages list the modules each phase imports.
"""
from __future__ import annotations

import argparse
import sys

USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, KeyError, OSError)


def run_command(args: argparse.Namespace, name: str) -> int:
    """Run a parsed command; a user error prints one line naming the command (no traceback).

    Exit status: the command's own, else 0; an error's `exit_code` attribute, else 2."""
    try:
        return args.func(args) or 0
    except USER_ERRORS as e:
        print(f"ambient {name}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)


def standalone_main(prog: str, doc: str | None, add_arguments, name: str, argv: list[str] | None = None) -> int:
    """`python -m ambient.<module>` entry points: the module's arguments at the top level."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_command(parser.parse_args(argv), name)

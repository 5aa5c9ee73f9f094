"""Command line: `python -m ambient <command>`. Each command reads and writes files only.

One module per phase registers its commands: data (prepare, download-dataset), train, sample,
evaluate (fetch-weights, ref-stats, fid, extractor-check, neighbors, attack, hf-energy), metrics
(summarize, claims), sdxl (sdxl-*), pipeline (pull, readme-tables).
"""

from __future__ import annotations

import argparse
import sys

from ..entry import run_command
from . import data, evaluate, metrics, pipeline, sample, sdxl, train
from .common import HelpFormatter

PHASES = (data, train, sample, evaluate, metrics, sdxl, pipeline)


def command_names() -> list[str]:
    """Every sub-command, in the order `ambient --help` lists them."""
    return [n for m in PHASES for n in getattr(m, "NAMES", m.COMMANDS)]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ambient")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(names=None, prog: str = "ambient") -> argparse.ArgumentParser:
    """The `ambient` parser with every command (or only those in `names`: building a command's parser
    imports what its defaults come from, so `main` builds only the one it runs)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error (or AMBIENT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for phase in PHASES:
        phase.register(sub, names)
    return parser


def main(argv: list[str] | None = None, prog: str = "ambient", names=None) -> int:
    """Parse and run one command. `names` limits the commands (a module's own entry point)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    allowed = command_names() if names is None else list(names)
    args = build_parser([first] if first in allowed else allowed, prog).parse_args(argv)
    return run_command(args, args.command)

"""Pipeline commands: `ambient pull` (DVC pull / repro around the Snakemake workflow) and `ambient
readme-tables` (the generated blocks of README.md and docs/)."""

from __future__ import annotations

import argparse

from .common import Command, declare_paths
from .common import register as _register


def _readme_tables(p: argparse.ArgumentParser) -> None:
    from ..pipeline.readme_tables import add_arguments

    add_arguments(p)


def cmd_schema(a) -> int:
    from ..settings import update_schema
    from ..training import schema_sections

    with open(a.file, encoding="utf-8") as f:
        text = f.read()
    new = update_schema(text, schema_sections())
    if a.check:
        if new != text:
            print(f"{a.file}: its generated sections differ from the dataclasses; run `python -m ambient schema`")
            return 1
        return 0
    if new != text:
        from ..utils import atomic_path

        with atomic_path(a.file) as tmp:
            tmp.write_text(new, encoding="utf-8")
        print(f"wrote {a.file}")
    return 0


def _schema(p: argparse.ArgumentParser) -> None:
    from ..layout import SCHEMA

    p.add_argument("--file", default=SCHEMA, help="the workflow's config schema")
    p.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 when the file differs")
    declare_paths(p, in_place=["file"])
    p.set_defaults(func=cmd_schema)


COMMANDS = {
    "schema": Command(
        "rewrite (or --check) the config schema's training and network sections from their dataclasses", _schema
    ),
    "readme-tables": Command(
        "rewrite (or --check) the blocks of README.md and docs/ generated from the run's files", _readme_tables
    ),
}


# `pull` registers itself (ambient.pipeline.pull.add_pull_command: its module docstring is its help)
NAMES = ("pull", *COMMANDS)


def register(sub, names=None) -> None:
    """Add the pipeline commands to the `ambient` parser's sub-commands."""
    if names is None or "pull" in names:
        from ..pipeline.pull import add_pull_command

        add_pull_command(sub)
    _register(sub, COMMANDS, names)

"""README.md and docs/: one page for a newcomer, every command named, every page linked, no stale
pointer to a file that is not in the repository."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from ambient.cli import build_parser
from ambient.pipeline import readme_tables as RT

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_README_LINES = 200


def _texts() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in (README, REPO / "CONTRIBUTING.md", *DOCS)}


def _subcommands() -> list[str]:
    """Every sub-command of the `ambient` parser itself (not a list kept beside it)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_readme_is_one_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move the long sections to docs/ and link them"
    )


def test_every_cli_command_has_a_line_in_the_readme_or_docs():
    """A command counts as named where `ambient NAME` or `python -m ambient NAME` is written."""
    text = "\n".join(_texts().values())
    names = _subcommands()
    assert len(names) > 20, names  # the parser was built whole
    missing = [n for n in names if not re.search(rf"`(?:python -m )?ambient {re.escape(n)}[` ]", text)]
    assert not missing, f"commands named in neither README.md nor docs/*.md: {missing} (add a line to docs/commands.md)"


def test_every_docs_page_is_linked_from_the_readme():
    readme = README.read_text(encoding="utf-8")
    unlinked = [p.name for p in DOCS if f"](docs/{p.name}" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_relative_links_resolve():
    """Every relative Markdown link points at a file of the repository (an anchor at a heading of it)."""
    broken = []
    for path, text in _texts().items():
        for link in _links(text):
            if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
                continue
            target, _, anchor = link.partition("#")
            dest = (path.parent / target).resolve() if target else path
            if not dest.is_file():
                broken.append(f"{path.relative_to(REPO)}: {link}")
            elif anchor and dest.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)}
                if anchor not in slugs:
                    broken.append(f"{path.relative_to(REPO)}: {link} (no such heading)")
    assert not broken, broken


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# Folders of the repository whose files the docs name; a named path under one of them must exist.
TRACKED = ("ambient/", "workflow/", "config/", "tests/", "paper_figures/", "profiles/", "docs/")


def test_named_repository_files_exist():
    """`ambient/eval/c2st.py`, `config/faces24.yaml`, ...: a path in backticks under a tracked folder is
    a file or folder of the checkout (module moves must update the docs)."""
    missing = []
    for path, text in _texts().items():
        for name in re.findall(r"`([A-Za-z0-9_./-]+)`", text):
            if not name.startswith(TRACKED) or any(c in name for c in "*{}<>"):
                continue
            if not (REPO / name).exists():
                missing.append(f"{path.relative_to(REPO)}: {name}")
    assert not missing, missing


def test_docs_need_nothing_outside_the_repository():
    for path, text in _texts().items():
        assert "../shared" not in text, f"{path.relative_to(REPO)} points outside the repository (../shared)"


def test_every_generated_block_is_in_exactly_one_file():
    """README.md and docs/*.md hold each block of readme_tables once (duplicates raise)."""
    where = RT.locate_blocks(RT.doc_files(README), README)
    assert sorted(where) == sorted(RT.BLOCKS), f"blocks in no file: {sorted(set(RT.BLOCKS) - set(where))}"


@pytest.mark.parametrize("block, page", [("results", "README.md"), ("claims", "README.md")])
def test_the_newcomer_blocks_stay_in_the_readme(block, page):
    where = RT.locate_blocks(RT.doc_files(README), README)
    assert where[block].resolve() == (REPO / page).resolve()

"""Every branch through one layout (issue 24): the branch table ambient.layout.BRANCHES, the one figure
table FIGURES, a figure = its notebook + its table entry, and the SDXL branch's paths from the layout.

The dry runs copy the workflow with the library (ambient/) into a temporary directory: Snakemake
imports the copy's ambient.layout there (`python -m snakemake` puts the working directory first).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ambient import layout

REPO = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "workflow", "config", "paper_figures", "profiles", "environment.yml", "ambient")


def copy_workflow_and_library(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.pyc")
    dest.mkdir(parents=True)
    for name in COPIED:
        src = REPO / name
        (shutil.copytree(src, dest / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, dest / name))
    return dest


def snakemake(workdir: Path, *args) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", *map(str, args)], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r.stdout + r.stderr


def planned(out: str) -> dict[str, int]:
    """rule -> job count of `snakemake -n --quiet rules`."""
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}


def changed_files(wd: Path) -> set[str]:
    """The files of the copied workflow that are new or differ from the checkout's."""
    out = set()
    for p in wd.rglob("*"):
        rel = p.relative_to(wd)
        if p.is_file() and rel.parts[0] in COPIED and ".snakemake" not in rel.parts:
            if not (REPO / rel).is_file() or (REPO / rel).read_bytes() != p.read_bytes():
                out.add(rel.as_posix())
    return out


def merged_config(*paths: str, root: Path = REPO) -> dict:
    """config/config.yaml with `paths` (relative to root) over it, and the schema's defaults, as Snakemake
    validates it."""
    from snakemake.utils import update_config, validate

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for path in paths:
        update_config(cfg, yaml.safe_load((root / path).read_text()))
    validate(cfg, str(REPO / layout.SCHEMA))
    return cfg


# ---------------------------------------------------------------- the tables


def test_every_notebook_has_one_table_entry_and_every_entry_its_notebook():
    notebooks = sorted(p.stem for p in (REPO / "paper_figures").glob("*.ipynb"))
    stems = [f.stem for f in layout.FIGURES]
    assert sorted(stems) == notebooks, "paper_figures/*.ipynb and ambient.layout.FIGURES differ"
    assert len(set(stems)) == len(stems) and len({f.rule for f in layout.FIGURES}) == len(layout.FIGURES)
    for fig in layout.FIGURES:
        assert (REPO / fig.notebook_path).is_file(), fig.notebook_path
        assert layout.notebook_description(str(REPO / fig.notebook_path)), f"{fig.stem}: no markdown cell"


def test_every_figure_belongs_to_a_branch_and_reads_its_files():
    assert {f.branch for f in layout.FIGURES} <= {b.name for b in layout.BRANCHES}
    assert sorted(f.rule for b in layout.BRANCHES for f in b.figures) == sorted(f.rule for f in layout.FIGURES)
    for fig in layout.FIGURES:
        assert set(fig.files) <= set(fig.of.files), fig.rule
        assert (REPO / fig.of.figlib).is_file() and (REPO / fig.of.conda).is_file(), fig.of.name
        if fig.caption:
            assert (REPO / "workflow" / "report" / fig.caption).is_file(), fig.caption


def test_every_branch_file_lies_in_one_phase_of_its_branch():
    for b in layout.BRANCHES:
        keys = [k for phase in b.phases.values() for k in phase]
        assert sorted(keys) == sorted(b.files), f"{b.name}: each file in exactly one phase"
        assert set(b.phases) <= set(layout.PHASES), b.name
        for key, path in b.files.items():
            assert path.startswith(b.results_dir + "/") or b is layout.PIXEL, (b.name, key)
    for phase, d in zip(layout.PHASES, layout.PHASE_DIRS):  # the pixel branch: one directory per phase
        assert all(layout.PIXEL.files[k].startswith(d + "/") for k in layout.PIXEL.phases[phase]), phase


def test_the_sdxl_grid_fills_every_wildcard_of_its_figures_files():
    cfg = merged_config("config/sdxl-smoke.yaml")
    for fig in layout.SDXL.figures:
        for key in fig.files:
            paths = layout.SDXL.expand(key, cfg)
            assert paths and not any("{" in p for p in paths), (fig.rule, key, paths)
            assert all(p.startswith("results/sdxl/smoke/") for p in paths), paths
    assert len(layout.SDXL.expand("samples", cfg)) == len(cfg["sdxl"]["noise_levels"]) * 2
    assert set(layout.SDXL_ATTACK_SCORES) <= set(layout.SDXL_ATTACK_OUTPUTS)


def test_a_figure_without_a_caption_file_gets_its_notebooks_words():
    """workflow/report/figure.rst renders (Jinja, then reStructuredText without a warning) the label and
    the notebook's first markdown cell, for every figure that has no caption file of its own."""
    import jinja2
    from docutils.core import publish_parts
    from test_workflow import load_common

    ns = load_common()
    template = jinja2.Template((REPO / "workflow/report/figure.rst").read_text())
    figures = [f for f in layout.FIGURES if not f.caption]
    assert figures and all(f.branch == "sdxl" for f in figures)  # the pixel figures keep their own files
    for fig in figures:
        caption = ns["figure_caption"](fig, str(REPO / fig.notebook_path))
        assert caption.startswith(f"**{fig.label}.** ") and len(caption) > len(fig.label) + 40
        rst = template.render(snakemake=SimpleNamespace(params=SimpleNamespace(caption=caption)))
        html = publish_parts(rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})
        assert fig.label in html["body"] and "system-message" not in html["body"], fig.rule


# ---------------------------------------------------------------- a new figure: two files


THROWAWAY_NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# A throwaway figure\n", "What it shows, in a line."]},
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {"tags": ["parameters"]},
            "outputs": [],
            "source": ["root = None\n", "out_dir = None\n", 'stem = "zz_throwaway"'],
        },
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.mark.parametrize(
    "branch,entry,configs",
    [
        ("pixel", 'Figure("zz_throwaway", "A throwaway figure", files=("samples",))', []),
        (
            "sdxl",
            'Figure("zz_throwaway", "A throwaway figure", files=("similarity_json",), branch="sdxl")',
            ["--configfile", "config/sdxl-smoke.yaml"],
        ),
    ],
)
def test_a_new_figure_is_its_notebook_and_its_table_entry(tmp_path, branch, entry, configs):
    """A table entry (appended to ambient/layout.py) and a notebook: the dry run schedules its rule,
    reading the branch's files and writing to the branch's figures folder; no other file changes."""
    wd = copy_workflow_and_library(tmp_path / "wf")
    with open(wd / "ambient" / "layout.py", "a") as f:
        f.write(f"\n\nFIGURES = (*FIGURES, {entry})\n")
    (wd / "paper_figures" / "zz_throwaway.ipynb").write_text(json.dumps(THROWAWAY_NOTEBOOK, indent=1) + "\n")
    assert changed_files(wd) == {"ambient/layout.py", "paper_figures/zz_throwaway.ipynb"}
    jobs = planned(snakemake(wd, "-n", "--forceall", "--cores", "1", "--quiet", "rules", *configs))
    assert jobs.get("zz_throwaway") == 1, jobs
    out = snakemake(wd, "-n", "--forceall", "--cores", "1", "-p", "zz_throwaway", *configs)
    cfg = merged_config(*configs[1:])
    fig_dir = layout.branch(branch).fig_dir(cfg)
    for path in (
        f"{fig_dir}/zz_throwaway.png",
        f"{fig_dir}/zz_throwaway.pdf",
        f"{fig_dir}/notebooks/zz_throwaway.ipynb",
    ):
        assert path in out, path
    reads = layout.branch(branch).path("similarity_json", cfg) if branch == "sdxl" else "results/samples/"
    assert reads.split("{")[0] in out.split("rule zz_throwaway:")[1]
    if branch == "pixel":  # also a target of the figures phase (rule `figures`)
        phase = planned(snakemake(wd, "figures", "-n", "--forceall", "--cores", "1", "--quiet", "rules"))
        assert phase.get("zz_throwaway") == 1, phase


# ---------------------------------------------------------------- the SDXL branch's paths


def summary_outputs(workdir: Path, *args) -> dict[str, str]:
    """output file -> rule of every output the DAG plans (`snakemake --summary`)."""
    out = snakemake(workdir, "--summary", *args)
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file"))
    rows = [line.split("\t") for line in lines[start + 1 :] if "\t" in line]
    return {r[0]: r[2] for r in rows}


def test_the_sdxl_branch_writes_where_the_layout_says(tmp_path):
    """Every output of the SDXL DAG (paper config, then under another sdxl.name) is a path template of
    ambient.layout.SDXL_FILES or a figure file of SDXL.figure_outputs, under the layout's folders."""
    wd = copy_workflow_and_library(tmp_path / "wf")
    renamed = yaml.safe_load((REPO / "config/paper-sdxl.yaml").read_text())
    renamed["sdxl"]["name"] = "renamed"
    (wd / "config" / "renamed.yaml").write_text(yaml.safe_dump(renamed))
    for configfile in ("config/paper-sdxl.yaml", "config/renamed.yaml"):
        cfg = merged_config(configfile, root=wd)
        outputs = summary_outputs(wd, "--cores", "1", "--configfile", configfile)
        figures = layout.SDXL.figure_outputs(cfg)
        assert set(figures) <= set(outputs) and outputs
        root, fig_dir = layout.SDXL.dir(cfg), layout.SDXL.fig_dir(cfg)
        # each file template of the layout with the config's name, its other wildcards any path component
        templates = [re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(layout.SDXL.path(k, cfg))) for k in layout.SDXL_FILES]
        assert root == f"results/sdxl/{cfg['sdxl']['name']}" and fig_dir.endswith(f"/sdxl/{cfg['sdxl']['name']}")
        for path, rule in outputs.items():
            if path in figures:
                assert path.startswith(fig_dir + "/") and rule in {f.rule for f in layout.SDXL.figures}
                continue
            assert any(re.fullmatch(t, path) for t in templates), (rule, path)

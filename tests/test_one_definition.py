"""Every fact has one definition: a copy that comes back fails here.

The settings' defaults, bounds and help live on their dataclass fields (ambient.settings); the
config schema's training and network sections are generated from them, and the names below
(attack kinds, precisions, masked kinds, similarity thresholds, result paths, run labels, the
run-name parser, the SDXL branch's folders and attack scores) are each written in one module only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ambient import layout
from ambient.settings import PRECISIONS, check_settings, schema_properties, update_schema
from ambient.training import TrainConfig, schema_sections

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / layout.SCHEMA


def _code_files():
    """The code a copy could hide in: the library, the workflow and the figure notebooks' code."""
    files = [*REPO.glob("ambient/**/*.py"), REPO / "Snakefile", *REPO.glob("workflow/rules/*.smk")]
    files += [*REPO.glob("paper_figures/*.py")]
    out = {p.relative_to(REPO).as_posix(): p.read_text(encoding="utf-8") for p in files}
    for nb in REPO.glob("paper_figures/*.ipynb"):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        out[nb.relative_to(REPO).as_posix()] = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "code"
        )
    return out


# (what, a pattern of its literal, the one file allowed to hold it)
ONE_PLACE = [
    ("attack kinds", r"[\"']inpaint[\"'],\s*[\"']noise[\"'],\s*[\"']key[\"']|inpaint\|noise\|key", "ambient/layout.py"),
    ("precision names", r"[\"']fp32[\"'],\s*[\"']bf16[\"']", "ambient/settings.py"),
    ("masked kinds", r"\(\s*[\"']dust[\"'],\s*[\"']box[\"']\s*\)", "ambient/layout.py"),
    ("similarity thresholds", r"0\.9\d?,\s*(0\.95|COPY_THRESHOLD),\s*0\.99", "ambient/layout.py"),
    ("dust's default delta", r"DUST_DELTA\s*=|[\"']delta[\"'],\s*0\.1\b|0\.1 if [^\n]*dust", "ambient/layout.py"),
    # a path in a string (a docstring may name it)
    ("the summary path", r"[\"'][^\"'\n]*metrics/summary\.csv[^\"'\n]*[\"']", "ambient/layout.py"),
    ("the claims path", r"[\"'][^\"'\n]*metrics/claims\.csv[^\"'\n]*[\"']", "ambient/layout.py"),
    ("the run label", r"def run_label\b", "ambient/layout.py"),
    # the SDXL branch (issue 24): its folders and the names of its scored attack outputs
    ("the SDXL folders", r"[\"'][^\"'\n]*(results|figures|FIGURES_DIR\})/sdxl/[^\"'\n]*[\"']", "ambient/layout.py"),
    (
        "the SDXL attack scores",
        r"[\"']inpaint_inpainted[\"'],\s*[\"']noise_one_step[\"']|[\"']noise_one_step[\"'],\s*[\"']noise_full[\"']",
        "ambient/layout.py",
    ),
    ("the run-name parser", r"def parse_run_name\b", "ambient/layout.py"),
]


@pytest.mark.parametrize("what,pattern,home", ONE_PLACE, ids=[w for w, _, _ in ONE_PLACE])
def test_a_fact_is_written_in_one_module(what, pattern, home):
    found = sorted(path for path, text in _code_files().items() if re.search(pattern, text))
    assert [f for f in found if f != home] == [], f"{what}: defined in {home}; import it instead of a copy in"


def test_the_guard_sees_a_copy():
    """The patterns match the copies they were written against (the old code had each of them)."""
    old = {
        "attack kinds": 'choices=["inpaint", "noise", "key"]',
        "precision names": 'if precision not in ("fp32", "bf16"):',
        "masked kinds": 'if kind in ("dust", "box"):',
        "similarity thresholds": "THRESHOLDS = (0.90, 0.95, 0.99)",
        "dust's default delta": 'entry.get("delta", 0.1)',
        "the summary path": 'default="results/metrics/summary.csv"',
        "the SDXL folders": "return f\"{FIGURES_DIR}/sdxl/{sdxl_cfg()['name']}\"",
        "the SDXL attack scores": 'SDXL_ATTACK_SCORES = ("noise_one_step", "noise_full", "inpaint_inpainted")',
    }
    patterns = {w: p for w, p, _ in ONE_PLACE}
    for what, line in old.items():
        assert re.search(patterns[what], line), what


def test_the_schema_sections_are_the_dataclasses():
    """`python -m ambient schema` has been run: the file's generated sections equal the dataclasses."""
    text = SCHEMA.read_text(encoding="utf-8")
    assert update_schema(text, schema_sections()) == text, "run `python -m ambient schema`"
    schema = yaml.safe_load(text)["properties"]
    for section, (cls, exclude) in schema_sections().items():
        props = schema[section]["properties"]
        for name, prop in schema_properties(cls, exclude).items():
            assert props[name] == prop, f"{section}.{name}"


def test_the_hand_written_corruption_seed_is_the_corruptions():
    """training.corruption_seed is Corruption.seed (not a TrainConfig field, so written by hand)."""
    from dataclasses import fields

    from ambient.corruption import Corruption

    prop = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))["properties"]["training"]["properties"]["corruption_seed"]
    seed = next(f for f in fields(Corruption) if f.name == "seed")
    assert (prop["type"], prop["default"]) == ("integer", seed.default)


def test_schema_check_command_fails_on_an_edited_default(tmp_path):
    edited = tmp_path / "schema.yaml"
    edited.write_text(SCHEMA.read_text(encoding="utf-8").replace('"default": 200,', '"default": 201,', 1))
    check = [sys.executable, "-m", "ambient", "schema", "--file", str(edited), "--check"]
    assert subprocess.run(check, cwd=REPO, capture_output=True).returncode == 1
    assert subprocess.run([*check[:-1]], cwd=REPO, capture_output=True).returncode == 0
    assert subprocess.run(check, cwd=REPO, capture_output=True).returncode == 0


def test_every_precision_enum_of_the_schema_is_precisions():
    """The pixel branch's precisions (training, sampling, attacks) are ambient.settings.PRECISIONS."""
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))["properties"]
    enums = {
        "training": schema["training"]["properties"]["precision"]["enum"],
        "sampling": schema["sampling"]["properties"]["precision"]["enum"],
        "attacks": schema["evaluation"]["properties"]["attacks"]["properties"]["precision"]["enum"],
    }
    assert enums == {k: list(PRECISIONS) for k in enums}


def test_the_cli_options_are_the_settings():
    """`ambient train`'s options and their choices come from the dataclass fields."""
    from ambient.cli import build_parser

    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    options = {a.dest: a for a in train._actions}
    for f in schema_properties(TrainConfig):
        assert f in options, f"ambient train has no --{f.replace('_', '-')}"
    assert tuple(options["precision"].choices) == PRECISIONS


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_float_setting_must_be_finite(value):
    with pytest.raises(ValueError, match="lr=.* must be a finite number"):
        TrainConfig(dataset="x.zip", lr=value)
    cfg = TrainConfig(dataset="x.zip")
    cfg.grad_clip = value
    with pytest.raises(ValueError, match="grad_clip"):
        check_settings(cfg)


def test_the_schema_kinds_are_the_layouts():
    """A YAML file cannot import: the schema's corruption kinds are held to ambient.layout here."""
    entry = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))["$defs"]["corruption"]
    assert entry["properties"]["kind"]["enum"] == list(layout.AUTO_LOSS)
    masked = [c["if"]["properties"]["kind"] for c in entry["allOf"] if "enum" in c["if"]["properties"].get("kind", {})]
    assert masked == [{"enum": list(layout.MASKED_KINDS)}]

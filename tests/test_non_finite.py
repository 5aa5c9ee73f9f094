"""No silent NaN (issue 28): a training run whose loss or weights stop being finite stops there and
saves nothing from it; every float option of every command refuses inf and nan; a config's .inf /
.nan is refused before any job, naming the key."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import TINY_NET_ARGS, run_cli
from test_workflow import copy_workflow, snakemake

from ambient.checkpoints import checkpoint_step, list_checkpoints, load_checkpoint
from ambient.cli import build_parser
from ambient.settings import finite_float

REPO = Path(__file__).resolve().parents[1]


def test_a_diverging_training_stops_at_the_step_and_saves_nothing_from_it(tiny_dataset, tmp_path):
    """lr 1e30 is finite, so it passes the option check; the weights overflow after the first step."""
    run = tmp_path / "run"
    args = ["train", "--dataset", tiny_dataset, "--steps", 6, "--batch-size", 4, "--lr", "1e30", "--warmup-steps", 1]
    r = run_cli([*args, "--checkpoint-every", 1, *TINY_NET_ARGS, "--device", "cpu", "--run-dir", run, "--quiet"])
    assert r.returncode == 2, (r.returncode, r.stderr)
    m = re.search(
        r"training diverged at step (\d+): (the loss is (?:nan|inf|-inf)|\w+ weight \S+ is not finite)", r.stderr
    )
    assert m and "Traceback" not in r.stderr, r.stderr
    step = int(m[1])
    assert not (run / "model.pt").exists()
    saved = list_checkpoints(run)
    assert all(checkpoint_step(p) < step for p in saved), saved
    for p in saved:  # what it kept is finite
        ckpt = load_checkpoint(p)
        assert all(
            v.isfinite().all() for part in ("model", "ema") for v in ckpt[part].values() if v.is_floating_point()
        )
    if saved:
        assert str(saved[-1]) in r.stderr


def _float_options():
    """(command, option, action) of every option of every `ambient` command that takes a float."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.type in (float, finite_float):
                yield name, action.option_strings[-1], action


def test_every_float_option_is_finite_float():
    options = list(_float_options())
    assert len(options) > 20  # the settings' options (lr, ema_decay, ...) and the commands' own
    plain = [f"{c} {o}" for c, o, a in options if a.type is float]
    assert not plain, f"type=float lets inf and nan through: use ambient.settings.finite_float for {plain}"
    # the modules whose parsers are their own (python -m ambient.pipeline.*) hold to it too
    for path in sorted((REPO / "ambient").rglob("*.py")):
        assert not re.search(r"type=float\b", path.read_text()), f"{path.relative_to(REPO)}: type=float"


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "Infinity"])
def test_finite_float_refuses_what_passes_every_bound(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a finite number"):
        finite_float(text)
    assert finite_float("1e-4") == 1e-4 and math.isfinite(finite_float("1e30"))


@pytest.mark.parametrize(
    "args,option",
    [
        (["train", "--dataset", "x.zip", "--lr", "inf"], "--lr"),
        (["train", "--dataset", "x.zip", "--delta", "nan"], "--delta"),
        (
            [
                "attack",
                "--kind",
                "noise",
                "--checkpoint",
                "m.pt",
                "--train",
                "t.zip",
                "--out",
                "a.json",
                "--sigma",
                "inf",
            ],
            "--sigma",
        ),
        (["sdxl-train", "--grad-clip", "nan"], "--grad-clip"),
    ],
)
def test_commands_refuse_a_non_finite_float_naming_the_option(args, option):
    r = run_cli(args)
    assert r.returncode == 2 and option in r.stderr and "not a finite number" in r.stderr, r.stderr


def test_sdxl_training_config_refuses_nan():
    from ambient.latent.lora import LoraTrainConfig

    for key in ("grad_clip", "weight_decay", "lr"):
        with pytest.raises(ValueError, match=f"{key}=nan must be"):
            LoraTrainConfig(dataset="x.zip", **{key: float("nan")})


def test_snakemake_refuses_inf_in_a_config_file_before_any_job(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    (wd / "bad.yaml").write_text("training:\n  lr: .inf\n")
    r = snakemake(wd, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert r.returncode != 0 and "invalid config at training.lr: inf is not a finite number" in r.stderr + r.stdout
    (wd / "bad.yaml").write_text(yaml.safe_dump({"corruptions": [{"kind": "noise", "sigma_n": float("inf")}]}))
    r = snakemake(wd, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert r.returncode != 0 and "corruptions[0].sigma_n: inf is not a finite number" in r.stderr + r.stdout

"""Data-parallel training under torchrun, on the CPU with the gloo backend and 2 processes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_NET_ARGS, run_cli

from ambient.checkpoints import load_checkpoint


@pytest.mark.parametrize("corruption", ["dust-p0.50", "noise-s0.20"])
def test_two_process_training_matches_one_process_on_the_same_global_batch(tiny_dataset, tmp_path, corruption):
    args = [
        "train",
        "--dataset",
        tiny_dataset,
        "--corruption",
        corruption,
        "--steps",
        4,
        "--batch-size",
        8,
        "--warmup-steps",
        1,
        "--threads",
        1,
        "--device",
        "cpu",
        "--quiet",
        "--log-every",
        1,
        *TINY_NET_ARGS,
    ]
    single = run_cli([*args, "--run-dir", tmp_path / "one"])
    assert single.returncode == 0, single.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [
            str(torchrun if torchrun.exists() else shutil.which("torchrun")),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "ambient",
            *map(str, args),
            "--run-dir",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("wrote") == 1  # only rank 0 writes
    a, b = load_checkpoint(tmp_path / "one" / "model.pt"), load_checkpoint(tmp_path / "two" / "model.pt")
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], atol=1e-5), key
    moved = max(
        (a["model"][k] - load_checkpoint(tmp_path / "one" / "checkpoint-0000004.pt")["model"][k]).abs().max()
        for k in a["model"]
    )
    assert moved == 0  # the final file holds the last step's weights
    log_one = (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()
    log_two = (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()
    assert len(log_one) == len(log_two) == 4  # one writer, the loss averaged over both ranks


def test_batch_must_split_evenly(tiny_dataset, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "ambient",
            "train",
            "--dataset",
            str(tiny_dataset),
            "--batch-size",
            "7",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--run-dir",
            str(tmp_path),
            *TINY_NET_ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and "divisible" in r.stderr

"""ambient.pipeline.bench: the benchmark runs the code that trains (train_step, batch_at) and writes its roofline.

Tiny step counts: this checks that every variant and the JSON keys work, not speed (speed is
`make bench`'s job, never a test's)."""

from __future__ import annotations

import json

import pytest
import torch

from ambient import training as T
from ambient.pipeline import bench as B


def test_setup_follows_the_config(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "dataset: {resolution: 16}\ntraining: {batch_size: 8}\n"
        "network: {base_channels: 8, channel_mult: [1, 2], attn_resolutions: [8]}\n"
    )
    setup = B.default_setup(str(cfg))
    assert setup["resolution"] == 16 and setup["batch_size"] == 8
    assert setup["network"]["base_channels"] == 8 and setup["network"]["num_blocks"] == 1  # default kept
    assert B.default_setup(str(tmp_path / "missing.yaml"))["batch_size"] == 32


def test_bench_calls_the_training_step(monkeypatch):
    calls = []
    real = T.train_step

    def counting(*args, **kwargs):
        calls.append(args[6][0].shape)  # the batch's x
        return real(*args, **kwargs)

    monkeypatch.setattr(B, "train_step", counting)
    setup = {
        "resolution": 16,
        "batch_size": 4,
        "network": {"base_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [8]},
    }
    assert B.bench_train("bf16", steps=2, warmup=1, setup=setup) > 0
    assert calls == [torch.Size([4, 1, 16, 16])] * 3
    assert B.bench_train("plain", steps=2, warmup=1, setup=setup) > 0
    assert B.bench_loss("tweedie", steps=1, warmup=1, setup=setup) > 0


@pytest.mark.slow
def test_main_writes_the_roofline(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "dataset: {resolution: 16}\ntraining: {batch_size: 4}\n"
        "network: {base_channels: 8, channel_mult: [1, 2], attn_resolutions: [8]}\n"
    )
    out = tmp_path / "bench.json"
    B.main(
        [
            "--steps",
            "1",
            "--threads",
            "1",
            "--variants",
            "plain,bf16",
            "--samples",
            "4",
            "--sample-variants",
            "bf16",
            "--losses",
            "edm",
            "--gemm-n",
            "64",
            "--config",
            str(cfg),
            "--packing",
            "--json",
            str(out),
        ]
    )
    rows = json.loads(out.read_text())
    assert rows["resolution"] == 16 and rows["batch_size"] == 4
    for key in (
        "gemm[fp32] GFLOP/s",
        "gemm[bf16] GFLOP/s",
        "train[plain] img/s",
        "train[bf16] of bf16 peak",
        "loss[edm] img/s",
        "sample[bf16] 4 s",
        "sample[bf16] of bf16 peak",
        "packing[train] 1 job x 1 threads img/s",
        "packing[train] 2 jobs x 1 thread img/s",
        "packing[plain] 2 jobs x 1 thread img/s",
        "packing[sample] 2 jobs x 1 thread samples/s",
    ):
        assert rows[key] > 0, key
    # the README's speed block states the packing comparison
    from ambient.pipeline.readme_tables import render_speed

    text = render_speed(out, tmp_path / "README.md")
    assert "two 1-thread jobs side by side" in text and "training (bf16 step)" in text
    assert "Training as the DAG runs it" in text and "the plain loop packed the same way" in text

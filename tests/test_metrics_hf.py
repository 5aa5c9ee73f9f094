"""ambient.eval.metrics_hf: the high-frequency energy of samples vs clean vs noisy training data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ambient.cli import main as cli_main
from ambient.data import embedded_faces, write_image_zip
from ambient.eval import metrics_hf as hf


def test_white_noise_energy_matches_its_expectation():
    x = np.random.default_rng(0).normal(0, 0.3, (400, 1, 24, 24))
    frac = hf.hf_mask(24, 24).mean()
    assert 0.79 < frac < 0.81  # radial cutoff at half Nyquist keeps ~80% of the DFT bins
    assert hf.hf_energy(x).mean() == pytest.approx(0.09 * frac, rel=0.02)
    _, spec = hf.radial_spectrum(x)
    assert np.nanmax(np.abs(spec - 0.09)) < 0.01  # white: flat at sigma^2
    assert hf.hf_energy(np.zeros((3, 3, 8, 8))).tolist() == [0.0, 0.0, 0.0]


def test_parseval_and_a_pure_high_frequency():
    x = np.zeros((1, 1, 8, 8))
    x[0, 0] = np.where((np.arange(8)[:, None] + np.arange(8)[None]) % 2, 0.5, -0.5)  # Nyquist checkerboard
    assert hf.hf_energy(x)[0] == pytest.approx(0.25)  # all of its power (mean x^2) is above the cutoff
    assert hf.power_spectrum(x).sum() == pytest.approx((x**2).sum())


def test_report_orders_clean_noisy_and_indexes_samples():
    faces, _ = embedded_faces(40, 24)
    r = hf.hf_report(faces, faces, "noise-s0.40")
    assert r["hf_train_clean"] < r["hf_train_noisy"]
    # clipping to [-1, 1] (as the sampler does) removes part of the added noise power at sigma_n = 0.4
    assert 0.7 * r["hf_noise_expected"] < r["hf_train_noisy"] - r["hf_train_clean"] < 1.05 * r["hf_noise_expected"]
    assert r["hf_noise_index"] == pytest.approx(0.0)  # "samples" equal to the clean data
    noisy = hf.noisy_training_data(
        faces, __import__("ambient.corruption", fromlist=["Corruption"]).Corruption("noise", sigma_n=0.4)
    )
    r2 = hf.hf_report(noisy, faces, "noise-s0.40-naive")
    assert r2["loss"] == "edm" and r2["hf_noise_index"] == pytest.approx(1.0)
    assert r2["spectrum"]["train_noisy"] is not None and len(r2["spectrum"]["radius"]) == hf.SPECTRUM_BINS
    r3 = hf.hf_report(faces, faces, "dust-p0.50")
    assert r3["hf_train_noisy"] is None and r3["hf_noise_index"] is None
    json.dumps(r3, allow_nan=False)
    with pytest.raises(ValueError):
        hf.hf_report(faces[:, :, :8, :8], faces, "clean")


def test_command_line(tmp_path):
    faces, ids = embedded_faces(10, 8)
    write_image_zip(tmp_path / "train.zip", faces, ids)
    write_image_zip(tmp_path / "samples.zip", faces[:4], [f"s{i}" for i in range(4)])
    out = tmp_path / "hf.json"
    assert (
        cli_main(
            [
                "hf-energy",
                "--samples",
                str(tmp_path / "samples.zip"),
                "--train",
                str(tmp_path / "train.zip"),
                "--corruption",
                "noise-s0.20-naive",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert r["run"] == "noise-s0.20-naive" and r["corruption"] == "noise-s0.20" and r["hf_train_noisy"] > 0
    assert (
        cli_main(
            [
                "hf-energy",
                "--samples",
                str(tmp_path / "samples.zip"),
                "--train",
                str(tmp_path / "train.zip"),
                "--corruption",
                "blur-p0.2",
                "--out",
                str(out),
            ]
        )
        == 2
    )

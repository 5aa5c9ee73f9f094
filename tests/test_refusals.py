"""Issue 28's weak cases: every bad value is refused before the work, by a message that names it.

A manifest that is not JSON names its zip; a negative seed names its option; an absurd size is
bounded (not a NumPy memory traceback or a years-long progress bar); a setting a run would ignore
(--delta on a kind without further corruption) is refused rather than dropped.
"""

from __future__ import annotations

import zipfile

import pytest
from conftest import TINY_NET_ARGS, run_cli


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and all(w in r.stderr for w in words), r.stderr


def test_a_manifest_that_is_not_json_names_the_zip(tiny_dataset, tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(tiny_dataset) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"{not json" if name == "dataset.json" else src.read(name))
    r = run_cli(["train", "--dataset", bad, "--steps", 1, "--run-dir", tmp_path / "run", "--device", "cpu"])
    _one_line_error(r, str(bad), "dataset.json", "not a dataset manifest")


@pytest.mark.parametrize(
    "args,option",
    [
        (["prepare", "--split-seed", -1, "--out", "d.zip"], "--split-seed -1"),
        (["sample", "--checkpoint", "m.pt", "--seed", -1, "--out", "s.zip"], "--seed -1"),
        (["train", "--dataset", "d.zip", "--corruption-seed", -2, "--run-dir", "r"], "--corruption-seed -2"),
    ],
)
def test_a_negative_seed_is_refused_by_its_option(tmp_path, args, option):
    r = run_cli(args, cwd=tmp_path)
    _one_line_error(r, option, ">= 0")


@pytest.mark.parametrize(
    "args,words",
    [
        (["neighbors", "--samples", "s.zip", "--train", "t.zip", "--out", "n.json", "--bins", 10**12], "--bins"),
        (["fid", "--samples", "s.zip", "--ref", "r.npz", "--out", "f.json", "--kid-subsets", 10**12], "--kid-subsets"),
        (["neighbors", "--samples", "s.zip", "--train", "t.zip", "--out", "n.json", "--k", 10**9], "--k"),
    ],
)
def test_absurd_sizes_are_bounded_before_the_work(tmp_path, args, words):
    r = run_cli(args, cwd=tmp_path)
    _one_line_error(r, words, "must be <=")


def test_delta_on_a_kind_without_further_corruption_is_refused(tiny_dataset, tmp_path):
    for corruption in ("clean", "noise-s0.20"):
        r = run_cli(
            [
                "train",
                "--dataset",
                tiny_dataset,
                "--corruption",
                corruption,
                "--delta",
                0.1,
                "--run-dir",
                tmp_path / corruption,
            ]
        )
        _one_line_error(r, "delta=0.1", corruption, "takes no further corruption")
        assert not (tmp_path / corruption / "model.pt").exists()


def test_sample_refuses_more_images_than_memory(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train = ["train", "--dataset", tiny_dataset, "--steps", 1, "--batch-size", 4, *TINY_NET_ARGS]
    assert run_cli([*train, "--device", "cpu", "--run-dir", run, "--quiet"]).returncode == 0
    r = run_cli(["sample", "--checkpoint", run / "model.pt", "--num", 10**14, "--out", tmp_path / "s.zip", "--quiet"])
    _one_line_error(r, "--num 100000000000000", "GiB")
    assert not (tmp_path / "s.zip").exists()

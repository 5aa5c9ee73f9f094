"""Quality is scored against images no model trained on: the held-out split and KD's spread."""

import json

import numpy as np
import pytest

from ambient.cli import main
from ambient.data import read_image_zip, split_heldout
from ambient.eval import fid


def test_split_is_seeded_disjoint_and_validated():
    train, held = split_heldout(100, 20, seed=0, num_train=80)
    assert len(train) == 80 and len(held) == 20 and not set(train) & set(held)
    assert np.array_equal(held, split_heldout(100, 20, seed=0)[1])
    assert not np.array_equal(held, split_heldout(100, 20, seed=1)[1])
    assert np.array_equal(split_heldout(100, 20, seed=0, num_train=10)[0], train[:10])
    with pytest.raises(ValueError, match="num_images=90"):
        split_heldout(100, 20, num_train=90)
    with pytest.raises(ValueError, match="heldout_images=100"):
        split_heldout(100, 100)


def test_prepare_writes_the_two_splits(tmp_path, capsys):
    tr, ho = tmp_path / "train.zip", tmp_path / "held.zip"
    assert (
        main(
            [
                "prepare",
                "--resolution",
                "8",
                "--num-images",
                "30",
                "--heldout-images",
                "10",
                "--out",
                str(tr),
                "--heldout-out",
                str(ho),
            ]
        )
        == 0
    )
    a, b = read_image_zip(tr), read_image_zip(ho)
    assert (len(a), len(b)) == (30, 10) and a.manifest["split"] == "train" and b.manifest["split"] == "heldout"
    assert not {e["source"] for e in a.manifest["images"]} & {e["source"] for e in b.manifest["images"]}
    assert main(["prepare", "--heldout-images", "10", "--out", str(tr)]) == 2  # where would they go?
    assert "--heldout-out" in capsys.readouterr().err


def test_kd_subsets_are_clean_fids_and_give_a_spread():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(60, 16)), rng.normal(0.3, 1.0, size=(25, 16))
    per = fid.kernel_subsets(f1, f2, seed=3, num_subsets=30, max_subset_size=1000)
    with fid.numpy_seed(3):
        ref = kernel_distance(f1, f2, num_subsets=30, max_subset_size=1000)
    assert per.mean() == pytest.approx(ref, rel=1e-12) and per.std() > 0
    d = fid.distances(
        f1,
        {"mu": f2.mean(0), "sigma": np.cov(f2, rowvar=False), "features": f2},
        "pixel",
        kid_subsets=30,
        ref_name="heldout",
    )
    assert (d["fd_key"], d["kd_key"], d["kd_std_key"]) == (
        "fd_pixel_heldout",
        "kd_pixel_heldout",
        "kd_pixel_heldout_std",
    )
    assert d["kd_pixel_heldout_std"] > 0 and json.dumps(d)

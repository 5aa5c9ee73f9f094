"""The quality ruler (ambient.eval.c2st) and the claims that read it, on real faces and degenerate generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ambient.data import embedded_faces
from ambient.eval import claims as C
from ambient.eval.c2st import two_sample_test
from ambient.eval.extractor_check import check
from ambient.eval.features import get_extractor
from ambient.eval.neighbors import pixel_features
from ambient.utils import signed_to_uint8, uint8_to_signed

RULER = "c2st_filterbank_heldout"


@pytest.fixture(scope="module")
def faces():
    """The embedded default's split: 40 training faces and 60 held-out ones at 16x16."""
    images, _ = embedded_faces(100, 16)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    return images[order[:40]], images[order[40:]]


def test_same_distribution_is_near_chance_and_different_is_told_apart():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((200, 8)), rng.standard_normal((200, 8))
    same = two_sample_test(a, b, seed=0)
    assert abs(same["accuracy"] - 0.5) < 0.08 and same["n_per_class"] == 200
    shifted = two_sample_test(a, b + 1.0, seed=0)
    assert shifted["accuracy"] > 0.85
    assert two_sample_test(a, b + 1.0, seed=0) == shifted  # deterministic given the seed
    assert two_sample_test(a, b, max_per_class=50)["n_per_class"] == 50


@pytest.mark.parametrize(
    "ref, other, message",
    [
        (np.zeros((3, 2)), np.zeros((10, 2)), "at least 5 rows"),
        (np.zeros((10, 2)), np.zeros((10, 3)), "one D"),
        (np.zeros((10, 2)), np.full((10, 2), np.nan), "NaN"),
    ],
)
def test_bad_features_are_refused(ref, other, message):
    with pytest.raises(ValueError, match=message):
        two_sample_test(ref, other)


def test_the_ruler_passes_its_disturbance_test_on_the_faces(faces):
    train, heldout = faces
    ex = get_extractor("filterbank")
    res = check(ex, train, ex(heldout), kid_subsets=20)
    assert res["c2st_key"] == RULER
    assert res["c2st_consistent"], {k: v["c2st"] for k, v in res["disturbances"].items()}
    for kind, d in res["disturbances"].items():
        assert d["c2st"][-1] > 0.9, kind  # every kind of damage is told apart at its largest level
    assert "contrast" in res["disturbances"]


def _generators(train: np.ndarray, n: int = 60) -> dict[str, np.ndarray]:
    """Degenerate generators and the baselines the claims compare against, as uint8 images."""
    rng = np.random.default_rng(0)
    x = uint8_to_signed(train, torch.float64).numpy()
    mu, sd = x.mean(0), x.std(0)
    flat = x.reshape(len(x), -1)
    cov = np.cov(flat, rowvar=False, bias=True)
    gauss = rng.multivariate_normal(flat.mean(0), cov, size=n, method="eigh").reshape((n, *mu.shape))
    keep = rng.random((len(x), *mu.shape)) >= 0.5
    pick = rng.integers(0, len(x), n)

    def u8(a):
        return signed_to_uint8(torch.from_numpy(np.ascontiguousarray(a))).numpy()

    return {
        "train": train,
        "noise_matched": u8(mu + sd * rng.standard_normal((n, *mu.shape))),
        "mean_face": u8(np.repeat(mu[None], n, 0)),
        "gauss": u8(gauss),
        "naive_dust": u8((x * keep)[pick]),  # what the naive model learns: faces with erased pixels at 0
        "naive_noise": u8(x[pick] + 0.2 * rng.standard_normal((n, *mu.shape))),
    }


@pytest.fixture(scope="module")
def ruler_values(faces):
    train, heldout = faces
    ex = get_extractor("filterbank")
    ref = ex(heldout)
    gens = _generators(train)
    out = {}
    for name, images in gens.items():
        r = two_sample_test(ref, ex(images), seed=0)
        sims = (pixel_features(images) @ pixel_features(train).T).numpy()
        out[name] = {
            RULER: r["accuracy"],
            f"{RULER}_std": r["accuracy_std"],
            "share": float((sims.max(1) > 0.95).mean()),
        }
    return out


def _row(name, kind, level, loss, values, hf=0.02):
    return {
        "corruption": name,
        "kind": kind,
        "level": level,
        "loss": loss,
        "share_gt_0.95": values["share"],
        RULER: values[RULER],
        f"{RULER}_std": values[f"{RULER}_std"],
        "hf_samples": hf,
        "hf_train_clean": 0.02,
        "hf_train_noisy": 0.05,
    }


def _claims(rows) -> dict[str, str]:
    columns = list(rows[0])
    runs = [C.Run(r["corruption"], r["kind"], r["level"], r["loss"], {c: r[c] for c in columns}) for r in rows]
    return {row["claim"]: row["holds"] for row in C.evaluate(columns, runs)}


def _ambient_world(v, ambient: str) -> dict[str, str]:
    """The p = 0.5 ambient model played by generator `ambient`, beside real baselines."""
    return _claims(
        [
            _row("clean", "clean", 0.0, "edm", v["train"]),
            _row("dust-p0.50", "dust", 0.5, "ambient", v[ambient]),
            _row("dust-p0.50-naive", "dust", 0.5, "edm", v["naive_dust"]),
            _row("gauss", "gauss", 0.0, "gauss", v["gauss"]),
        ]
    )


@pytest.mark.parametrize("degenerate", ["noise_matched", "mean_face"])
def test_ambient_learns_fails_on_degenerate_generators(ruler_values, degenerate):
    assert _ambient_world(ruler_values, degenerate)["ambient_learns"] == "no"


def test_ambient_learns_can_hold_and_the_training_set_fails_the_copy_claim(ruler_values):
    """The training set itself is a perfect sampler: it learns the distribution, and it copies."""
    got = _ambient_world(ruler_values, "train")
    assert got["ambient_learns"] == "yes"
    assert got["heavy_corruption_no_copies"] == "no"
    assert ruler_values["train"]["share"] == 1.0


@pytest.mark.parametrize("degenerate, hf", [("noise_matched", 0.08), ("mean_face", 0.0)])
def test_the_tweedie_claim_fails_on_degenerate_generators(ruler_values, degenerate, hf):
    v = ruler_values
    got = _claims(
        [
            _row("noise-s0.20", "noise", 0.2, "tweedie", v[degenerate], hf=hf),
            _row("noise-s0.20-naive", "noise", 0.2, "edm", v["naive_noise"], hf=0.05),
        ]
    )
    assert got["tweedie_samples_clean"] == "no"
    # the real training faces in the Tweedie model's place: clean, and closer than the noisy baseline
    got = _claims(
        [
            _row("noise-s0.20", "noise", 0.2, "tweedie", v["train"], hf=0.02),
            _row("noise-s0.20-naive", "noise", 0.2, "edm", v["naive_noise"], hf=0.05),
        ]
    )
    assert got["tweedie_samples_clean"] == "yes"


def test_the_quality_cost_fails_when_the_corrupted_model_is_as_good_as_clean(ruler_values):
    v = ruler_values
    rows = [_row("clean", "clean", 0.0, "edm", v["train"]), _row("dust-p0.50", "dust", 0.5, "ambient", v["train"])]
    assert _claims(rows)["quality_cost"] == "no"
    rows[1] = _row("dust-p0.50", "dust", 0.5, "ambient", v["noise_matched"])
    assert _claims(rows)["quality_cost"] == "yes"

import hashlib
import math
import subprocess
import sys

import pytest
import torch

from ambient.corruption import Corruption


def _digest(corr: Corruption, n=50, res=16) -> str:
    a, at = corr.dataset_masks(n, res)
    return hashlib.sha256(a.numpy().tobytes() + at.numpy().tobytes()).hexdigest()


def test_masks_are_fixed_per_image_across_calls_and_processes():
    corr = Corruption("dust", p=0.5, delta=0.1, seed=3)
    here = _digest(corr)
    assert here == _digest(corr)  # a second "epoch"
    code = ("from ambient.corruption import Corruption;import hashlib;"
            "c=Corruption('dust',p=0.5,delta=0.1,seed=3);a,t=c.dataset_masks(50,16);"
            "print(hashlib.sha256(a.numpy().tobytes()+t.numpy().tobytes()).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == here
    assert _digest(Corruption("dust", p=0.5, delta=0.1, seed=4)) != here
    # image i's mask does not depend on how many images there are
    a_small, _ = corr.dataset_masks(5, 16)
    a_big, _ = corr.dataset_masks(50, 16)
    assert torch.equal(a_small, a_big[:5])


@pytest.mark.parametrize("p,delta", [(0.2, 0.1), (0.5, 0.1), (0.8, 0.0)])
def test_dust_erased_share_matches_p(p, delta):
    a, at = Corruption("dust", p=p, delta=delta).dataset_masks(200, 24)
    assert abs((1 - a.mean().item()) - p) < 0.01
    assert abs(at.mean().item() - (1 - p) * (1 - delta)) < 0.01
    assert torch.all(at <= a)  # further corruption only removes pixels
    assert a.shape == (200, 1, 24, 24)  # one mask shared across channels


def test_box_erases_a_square_of_side_ceil_pH():
    corr = Corruption("box", p=0.3, delta=0.0)
    a, _ = corr.dataset_masks(30, 20)
    side = math.ceil(0.3 * 20)
    assert torch.all((1 - a).flatten(1).sum(1) == side * side)
    assert len({tuple(torch.nonzero(1 - m[0])[0].tolist()) for m in a}) > 5  # positions vary


def test_apply_zeroes_erased_pixels_and_noise_is_fixed():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    y, a, at = Corruption("dust", p=0.5, delta=0.1).apply(x)
    assert torch.all(y[a.expand_as(y) == 0] == 0) and torch.equal(y * a, y)
    n1, _, _ = Corruption("noise", sigma_n=0.2).apply(x)
    n2, _, _ = Corruption("noise", sigma_n=0.2).apply(x)
    assert torch.equal(n1, n2) and abs((n1 - x).std().item() - 0.2) < 0.02


def test_names_parse_and_bad_values_are_refused():
    c = Corruption.from_name("dust-p0.50", delta=0.1)
    assert (c.kind, c.p, c.delta, c.name) == ("dust", 0.5, 0.1, "dust-p0.50")
    assert Corruption.from_name("noise-s0.20").sigma_n == 0.2
    assert Corruption.from_name("clean").masked is False
    with pytest.raises(ValueError, match="p=1.5"):
        Corruption("dust", p=1.5)
    with pytest.raises(ValueError, match="blur"):
        Corruption("blur")
    with pytest.raises(ValueError, match="dust-x"):
        Corruption.from_name("dust-x")


def test_sampling_masks_follow_the_training_distribution():
    corr = Corruption("dust", p=0.5, delta=0.1)
    m = corr.sampling_masks(range(100), 24, seed=7)
    assert abs(m.mean().item() - 0.45) < 0.01
    assert torch.equal(m, corr.sampling_masks(range(100), 24, seed=7))
    assert not torch.equal(m, corr.sampling_masks(range(100), 24, seed=8))

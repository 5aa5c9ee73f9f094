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
    code = (
        "from ambient.corruption import Corruption;import hashlib;"
        "c=Corruption('dust',p=0.5,delta=0.1,seed=3);a,t=c.dataset_masks(50,16);"
        "print(hashlib.sha256(a.numpy().tobytes()+t.numpy().tobytes()).hexdigest())"
    )
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


def test_box_erases_a_square_of_side_ceil_pH_anywhere_clipped_at_the_border():
    corr = Corruption("box", p=0.3)
    a, at = corr.dataset_masks(200, 20)
    side = math.ceil(0.3 * 20)
    erased = (1 - a).flatten(1).sum(1)
    assert erased.max() == side * side and erased.min() < side * side  # clipped boxes near the border
    corners = {tuple(torch.nonzero(1 - m[0])[0].tolist()) for m in a}
    assert max(t for t, _ in corners) > 20 - side  # the corner ranges over the whole image, as in the official code
    # the further corruption is a second box of the same size, disjoint from the first
    second = (a - at).flatten(1).sum(1)
    assert second.max() == side * side and torch.all(second > 0)
    assert torch.all(at <= a)


def test_box_refuses_delta():
    with pytest.raises(ValueError, match="second box"):
        Corruption("box", p=0.4, delta=0.1)


def _posterior_observed(a: torch.Tensor, at: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Per distinct A~ pattern: (count, hidden pixels, Monte Carlo P(A_i = 1 | A~) on them)."""
    groups: dict[bytes, list[int]] = {}
    for k, m in enumerate(at):
        groups.setdefault(m.to(torch.uint8).numpy().tobytes(), []).append(k)
    out = []
    for members in groups.values():
        hidden = at[members[0]] == 0
        out.append((len(members), hidden, a[members].mean(0)[hidden]))
    return out


def _unlearnable_share(a, at, min_count=40):
    """Share of hidden pixels (over patterns seen >= min_count times) never observed in A given A~."""
    zero = total = 0
    for count, _, post in _posterior_observed(a, at):
        if count >= min_count:
            zero += int((post == 0).sum())
            total += post.numel()
    assert total > 0
    return zero / total


@pytest.mark.parametrize("corr,res", [(Corruption("dust", p=0.5, delta=0.5), 3), (Corruption("box", p=0.4), 5)])
def test_every_hidden_pixel_is_learnable(corr, res):
    """The learnability condition (E[A^T A | A~] full rank): every pixel hidden in A~ is observed in A
    with positive probability given A~, so the loss on A supervises it. Monte Carlo on a small grid,
    grouping draws by their A~."""
    a, at = corr.dataset_masks(20000, res)
    assert _unlearnable_share(a, at) == 0.0


def test_learnability_check_catches_a_box_that_stays_visible():
    """The same check on the two unlearnable designs: dust on top of a box (the box stays visible in
    A~) and the official independent second box (their overlap is hidden in A and A~ alike)."""
    n = 20000
    box3 = Corruption("box", p=0.5)  # a 2x2 box on a 3x3 grid
    a3 = torch.stack([box3.observation_mask(i, 3) for i in range(n)])
    dust = torch.stack([Corruption("dust", p=0.5, delta=0.5).further_mask(i, 3) for i in range(n)])
    assert _unlearnable_share(a3, a3 * dust, min_count=5) > 0.1
    res, side = 5, 2
    a = torch.stack([Corruption("box", p=0.4).observation_mask(i, res) for i in range(n)])
    g = torch.Generator().manual_seed(0)
    second = torch.ones(n, 1, res, res)
    for k, (top, left) in enumerate(torch.randint(0, res, (n, 2), generator=g).tolist()):
        second[k, :, top : top + side, left : left + side] = 0
    assert _unlearnable_share(a, a * second) > 0.02


@pytest.mark.parametrize(
    "corr",
    [Corruption("dust", p=0.5, delta=0.1), Corruption("box", p=0.4), Corruption("dust", p=0.2, delta=0.1, seed=5)],
)
def test_sampling_masks_never_replay_training_masks(corr):
    """Equal sampling and corruption seeds (the configs' default): sample j must not get training
    image j's mask (nor, for dust, any training image's mask)."""
    a, at = corr.dataset_masks(100, 24)
    m = corr.sampling_masks(range(256), 24, seed=corr.seed)
    assert not any(torch.equal(m[j], at[j]) for j in range(100))
    if corr.kind == "dust":
        train = {x.numpy().tobytes() for x in at}
        assert not any(x.numpy().tobytes() in train for x in m)
    # the mask-key attack's training masks are the ones training used, image by image
    assert torch.equal(corr.training_masks([7, 3, 99], 24), at[[7, 3, 99]])


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
    _, at = Corruption("box", p=0.4).dataset_masks(300, 24)
    mb = Corruption("box", p=0.4).sampling_masks(range(300), 24, seed=7)
    assert abs(mb.mean().item() - at.mean().item()) < 0.02
    assert torch.equal(m, corr.sampling_masks(range(100), 24, seed=7))
    assert not torch.equal(m, corr.sampling_masks(range(100), 24, seed=8))

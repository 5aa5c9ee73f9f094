"""The ambient loss, in both formulations, is minimised by D = E[x0 | A~ x_t, A~].

Analytic toy: x0 is uniform over K = 3 fixed 4x4 grayscale images, A is a fixed mask that erases
4 of the 16 pixels, B keeps each pixel with probability 0.6 (fresh per sample) and A~ = A B.
Given what the network sees, the posterior over the K images is a softmax over the pixels of A~
only, so the exact denoiser is

    m(A~ x_t, A~) = sum_k w_k x_k,   w = softmax_k(-||A~ (x_t - x_k)||^2 / (2 sigma^2)).

It is written as the inner network of an `EDMPrecond` (the preconditioning is inverted so that
the model's D equals m, or m + eps v for a perturbation direction v), and the per-pixel
`AmbientLoss` is averaged by Monte Carlo over 2^16 draws of (x0, B, noise) at a fixed sigma (0.6
and 1.2; the minimiser holds at every sigma). The same draws (common random numbers: the same
images, masks and generator seed for the loss's noise) score every denoiser, so the comparison is
not drowned by sampling noise. Since the loss is quadratic in eps,
L(eps) = L(0) + eps g0 + eps^2 q, and the analytic denoiser is the minimiser when g0 ~ 0 while
q > 0, in every direction the loss can see, including those supported only on A minus A~ (the
pixels the network must inpaint: it is scored on them, never shown them).

If the loss were taken on A~ instead of A, the inpainting directions would be flat (q = 0): the
negative control below checks that this test would then fail (and it does fail, 4 of 4, when
`AmbientLoss` itself is patched to score `further_mask` instead of `mask`).
"""

from __future__ import annotations

import functools

import pytest
import torch

from ambient.losses import AmbientLoss
from ambient.networks import EDMPrecond

K, H, N, KEEP = 3, 4, 1 << 16, 0.6
SD = 0.5  # sigma_data of EDMPrecond and the losses


def _toy():
    g = torch.Generator().manual_seed(0)
    candidates = torch.randn(K, 1, H, H, generator=g) * 0.5
    a = torch.ones(1, 1, H, H)
    a[..., [0, 1, 2, 3], [1, 3, 0, 2]] = 0  # 4 erased pixels, one per row and column
    images = candidates[torch.randint(0, K, (N,), generator=g)]
    b = (torch.rand(N, 1, H, H, generator=g) < KEEP).float()
    u = torch.randn(3, 1, 1, H, H, generator=g)  # fixed patterns for the directions
    return candidates, a, a * b, images, u


CANDIDATES, A, A_TILDE, IMAGES, U = _toy()


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are small: one intra-op thread is much faster than two fighting over busy cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class FixedSigmaLoss(AmbientLoss):
    """AmbientLoss at one noise level (the minimiser holds at each sigma; a fixed one keeps the EDM
    weight, up to 1/sigma^2, from inflating the Monte Carlo variance). Draws only the noise."""

    def __init__(self, formulation: str, sigma: float):
        super().__init__(formulation)
        self.sigma = sigma

    def sigma_and_weight(self, n, generator, device):
        s = torch.full((n, 1, 1, 1), self.sigma, device=device)
        return s, (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2


# Perturbation directions: functions of what the network sees (A~ x_t, A~), and of the posterior
# mean m (itself such a function); A is fixed, so (A - A~) is one too.
DIRECTIONS = {
    "observed pixels": lambda xt, at, m: at * U[0],
    "inpainted pixels": lambda xt, at, m: (A - at) * U[1],
    "inpainted, toward candidate 0": lambda xt, at, m: (A - at) * (CANDIDATES[0] - m),
    "inpainted, nonlinear in x_t": lambda xt, at, m: (A - at) * torch.tanh(xt.sum((1, 2, 3), keepdim=True)) * U[2],
    "outside A": lambda xt, at, m: (1 - A) * U[0],  # never scored: the loss must be flat along it
}
SCORED = [d for d in DIRECTIONS if d != "outside A"]
INPAINTING = [d for d in DIRECTIONS if d.startswith("inpainted")]
EPS = 0.5


def posterior(xt: torch.Tensor, at: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (N, K), mean (N, 1, H, W)) of x0 given A~ x_t = xt and A~ = at."""
    logits = -((at[:, None] * (xt[:, None] - CANDIDATES[None])) ** 2).sum((2, 3, 4)) / (2 * sigma.view(-1, 1) ** 2)
    w = logits.softmax(dim=1)
    return w, torch.einsum("nk,kchw->nchw", w, CANDIDATES)


class PosteriorMeanNet(torch.nn.Module):
    """The inner network whose EDMPrecond output is D = m + sum_j eps_j v_j(A~ x_t, A~, m).

    It reads sigma from c_noise = log(sigma) / 4, A~ from the mask channel (nonzero: 0/1 under
    `split`, c_in A~ under `official`) and A~ x_t from the image channel divided by c_in, then
    inverts the formulation's output map:
      official: D = c_skip A~ x + c_out F                       ->  F = (D - c_skip A~ x) / c_out
      split:    D = A~ (c_skip x + c_out F) + (1 - A~) sd F     ->  F = A~ (D - c_skip x) / c_out + (1 - A~) D / sd
    """

    def __init__(self, formulation: str, eps: torch.Tensor | None = None):
        super().__init__()
        self.formulation, self.eps = formulation, eps

    def forward(self, inp: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        sigma = (4 * c_noise).exp().view(-1, 1, 1, 1)
        c_in = 1 / (sigma**2 + SD**2).sqrt()
        c_skip, c_out = SD**2 / (sigma**2 + SD**2), sigma * SD / (sigma**2 + SD**2).sqrt()
        xt, at = inp[:, :1] / c_in, (inp[:, 1:] != 0).float()
        d = m = posterior(xt, at, sigma)[1]
        if self.eps is not None:
            d = m + sum(e * v(xt, at, m) for e, v in zip(self.eps, DIRECTIONS.values()))
        if self.formulation == "official":
            return (d - c_skip * xt) / c_out
        return at * (d - c_skip * xt) / c_out + (1 - at) * d / SD


def expected_loss(formulation: str, sigma: float, eps: list[float], on_a_tilde: bool = False):
    """(L, dL/deps) of the Monte Carlo mean of the per-image loss (sum over pixels) at the denoiser
    m + sum_j eps_j v_j, always on the same draws (images, masks, and the loss's noise from the same
    seed). on_a_tilde: the loss taken on A~ instead of A (the negative control)."""
    e = torch.tensor(eps, requires_grad=True)
    model = EDMPrecond(PosteriorMeanNet(formulation, e), img_channels=1, masked=True, formulation=formulation)
    mask = A_TILDE if on_a_tilde else A.expand_as(A_TILDE)
    per_pixel = FixedSigmaLoss(formulation, sigma)(
        model, IMAGES, torch.Generator().manual_seed(1), mask=mask, further_mask=A_TILDE
    )
    assert per_pixel.shape == IMAGES.shape
    loss = per_pixel.double().sum() / N
    (grad,) = torch.autograd.grad(loss, e)
    return loss.item(), grad.double()


@functools.cache
def probe(formulation: str, sigma: float, on_a_tilde: bool = False) -> dict[str, dict]:
    """Per direction: L0 = L(0), L+ = L(EPS v), L- = L(-EPS v), g0 and g+ the derivatives along v at
    0 and at EPS v, and q with L(eps v) = L0 + g0 eps + q eps^2 (exact: the loss is quadratic in D)."""
    J = len(DIRECTIONS)
    l0, g0 = expected_loss(formulation, sigma, [0.0] * J, on_a_tilde)
    out = {}
    for j, name in enumerate(DIRECTIONS):
        lp, gp = expected_loss(formulation, sigma, [EPS if i == j else 0.0 for i in range(J)], on_a_tilde)
        lm, _ = expected_loss(formulation, sigma, [-EPS if i == j else 0.0 for i in range(J)], on_a_tilde)
        out[name] = {
            "L0": l0,
            "L+": lp,
            "L-": lm,
            "g0": g0[j].item(),
            "g+": gp[j].item(),
            "q": (lp + lm - 2 * l0) / (2 * EPS**2),
        }
    return out


def is_strict_minimum(s: dict) -> bool:
    """The analytic denoiser beats both perturbed ones by at least half the loss's own curvature term
    (the gain is q EPS^2 - |g0| EPS), and its directional derivative is ~0 next to the one at the
    perturbed denoiser (g+ = g0 + 2 q EPS)."""
    gain = min(s["L+"], s["L-"]) - s["L0"]
    return s["q"] > 1e-6 * s["L0"] and gain > 0.5 * s["q"] * EPS**2 and abs(s["g0"]) < 0.05 * abs(s["g+"])


@pytest.mark.parametrize("sigma", [0.6, 1.2])
@pytest.mark.parametrize("formulation", ["official", "split"])
def test_posterior_mean_minimises_the_ambient_loss(formulation, sigma):
    stats = probe(formulation, sigma)
    for name in SCORED:
        assert is_strict_minimum(stats[name]), (name, stats[name])
    # along a direction outside A the loss is flat: the model is never scored there
    s = stats["outside A"]
    assert s["g0"] == 0 and s["g+"] == 0 and s["L+"] == s["L-"] == s["L0"]


@pytest.mark.parametrize("formulation", ["official", "split"])
def test_negative_control_loss_on_a_tilde_would_fail(formulation):
    """Were the loss taken on A~ instead of A, nothing would pin the inpainted pixels: the check above
    must then fail for every inpainting direction (while still passing on the observed ones)."""
    stats = probe(formulation, 1.2, on_a_tilde=True)
    for name in INPAINTING:
        assert not is_strict_minimum(stats[name]), (name, stats[name])
        assert stats[name]["q"] == 0 and stats[name]["g+"] == 0
    assert is_strict_minimum(stats["observed pixels"])


def test_the_toy_is_not_degenerate():
    """The posterior is genuinely mixed (not one-hot), the masks leave pixels to inpaint, and the
    wrapped network's D is the posterior mean in both formulations."""
    hidden = (A - A_TILDE).sum((1, 2, 3))
    assert hidden.float().mean() > 4 and (hidden > 0).float().mean() > 0.99
    sigma = torch.full((N,), 1.2)
    xt = A_TILDE * (IMAGES + 1.2 * torch.randn(IMAGES.shape, generator=torch.Generator().manual_seed(2)))
    w, m = posterior(xt, A_TILDE, sigma)
    assert 0.5 < float(w.max(dim=1).values.mean()) < 0.9
    for formulation in ("official", "split"):
        d = EDMPrecond(PosteriorMeanNet(formulation), 1, masked=True, formulation=formulation)(xt, sigma, A_TILDE)
        torch.testing.assert_close(d, m, atol=1e-5, rtol=1e-5)

"""Training losses (EDM form), all of them: EDMLoss (clean data, and the naive baselines),
AmbientLoss (erased pixels), TweedieLoss (Gaussian-noisy data). Each returns a per-pixel loss;
the trainer sums it and divides by the batch size, as the official code does.

Random draws come from an explicit source (a utils.SampleRNG in training: one CPU stream per
sample, or a torch.Generator) so a step is a pure function of (weights, batch, seed): resume
is bitwise exact and data-parallel ranks draw what a single process would.
"""

from __future__ import annotations

import math

import torch

from .networks import EDMPrecond


def _randn(shape, rng, device) -> torch.Tensor:
    if isinstance(rng, torch.Generator):
        return torch.randn(tuple(shape), generator=rng).to(device)
    return rng.randn(tuple(shape)).to(device)


class EDMLoss:
    """Karras et al. (2022): sigma ~ logNormal(P_mean, P_std), weight (s^2 + sd^2) / (s sd)^2."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5):
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data

    def sigma_and_weight(self, n: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = (_randn((n, 1, 1, 1), generator, device) * self.P_std + self.P_mean).exp()
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return sigma, weight

    def __call__(self, net: EDMPrecond, images: torch.Tensor, generator, **_) -> torch.Tensor:
        sigma, weight = self.sigma_and_weight(len(images), generator, images.device)
        noise = _randn(images.shape, generator, images.device) * sigma
        denoised = net(images + noise, sigma)
        return weight * (denoised - images) ** 2


class AmbientLoss(EDMLoss):
    """Ambient Diffusion (Daras et al. 2023) for erased pixels.

    y = A x is the observed image; the network sees only A~ (y + sigma n) and A~ = A B;
    the loss is taken on the pixels of A, so the model must predict the pixels that the
    further corruption B hid from it. It never sees or is scored on a pixel outside A.

    formulation `official`: EDM weight on every pixel of A.
    formulation `split`: EDM weight on A~, 1/sigma_data^2 on A minus A~ (those pixels are
    predicted at the data scale, not as a residual, so the EDM weight ~ 1/sigma^2 would
    let the small-sigma inpainting error dominate). Both have the minimiser E[x0 | A~ x_t, A~].
    """

    def __init__(self, formulation: str = "split", **kwargs):
        super().__init__(**kwargs)
        if formulation not in ("official", "split"):
            raise ValueError(f"formulation {formulation!r} is unknown: use official or split")
        self.formulation = formulation

    def __call__(
        self,
        net: EDMPrecond,
        images: torch.Tensor,
        generator,
        mask: torch.Tensor = None,
        further_mask: torch.Tensor = None,
        **_,
    ) -> torch.Tensor:
        if mask is None or further_mask is None:
            raise ValueError("AmbientLoss needs mask (A) and further_mask (A~)")
        sigma, weight = self.sigma_and_weight(len(images), generator, images.device)
        y = images * mask
        noise = _randn(images.shape, generator, images.device) * sigma
        denoised = net(further_mask * (y + noise), sigma, further_mask)
        if self.formulation == "split":
            weight = further_mask * weight + (1 - further_mask) / self.sigma_data**2
        return weight * (mask * (denoised - y)) ** 2


class TweedieLoss(EDMLoss):
    """Training on Gaussian-noisy data ("Consistent Diffusion Meets Tweedie", Daras et al. 2024), EDM/VE form.

    The model only sees observations x_n = x0 + sigma_n * eps (the noise fixed per image).

    * Tweedie term, every sample of the batch, at a noise level sigma > sigma_n: noise x_n further to
      x_t = x_n + sqrt(sigma^2 - sigma_n^2) eta. Since E[x_n | x_t] = r x_t + (1 - r) E[x0 | x_t] with
      r = sigma_n^2 / sigma^2, the loss || (1 - r) h(x_t, sigma) + r x_t - x_n ||^2 is minimised by
      h = E[x0 | x_t]: the clean denoiser, learned from noisy data only. sigma is EDM's log-normal
      restricted to (sigma_n, inf), the analogue of the official t ~ U[t_n, T): the early-stopped
      sampler only ever queries that range.
    * Consistency term, optional (weight `consistency_weight`; the official shipped config uses 0), at a
      second level s <= sigma_n drawn from the log-normal restricted to (0, sigma_n]: from x_n take a
      stochastic step down to s with the model's own x0 estimate at sigma_n (the VE posterior step),
      then ask that the model's expected x0 estimate there equal its estimate at sigma_n (a martingale
      property of E[x0 | x_t]). The squared norm of an expectation is estimated without bias by the
      product of two independent draws; the sigma_n estimate is the (stop-gradient) target. It teaches
      the model the range below sigma_n, which only the full-length sampler uses.

    Weights: the Tweedie residual gets the EDM weight; the consistency residual, whose size does
    not shrink with sigma, gets `consistency_weight / sigma_data^2`.
    """

    def __init__(self, sigma_n: float, consistency_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if sigma_n <= 0:
            raise ValueError(f"TweedieLoss needs sigma_n > 0, got {sigma_n}")
        if consistency_weight < 0:
            raise ValueError(f"consistency_weight={consistency_weight} must be >= 0")
        self.sigma_n, self.consistency_weight = sigma_n, consistency_weight

    # The pieces are kept apart so __call__ can run ONE forward pass with gradients for the
    # whole batch (DistributedDataParallel expects one per step), and tests can probe each term.

    def _tweedie_input(self, noisy, sigma, eta):
        return noisy + (sigma**2 - self.sigma_n**2).clamp_min(0).sqrt() * eta

    def _tweedie_residual(self, pred, x_t, noisy, sigma):
        r = self.sigma_n**2 / sigma**2
        return ((1 - r) * pred + r * x_t - noisy) ** 2

    def _consistency_inputs(self, net, noisy, sigma, z1, z2):
        """The stop-gradient target h(x_n, sigma_n) and two independent draws of x_s from the VE
        posterior of x_s given x_n and x0, with x0 replaced by that target."""
        inner = getattr(net, "module", net)  # under DDP: a no-grad pass must not join the collective
        with torch.no_grad():
            target = inner(noisy, torch.full_like(sigma, self.sigma_n))
        ratio = sigma**2 / self.sigma_n**2
        mean = target + ratio * (noisy - target)
        std = (sigma**2 * (1 - ratio)).clamp_min(0).sqrt()
        return target, torch.cat([mean + std * z1, mean + std * z2])

    @staticmethod
    def _consistency_residual(pred, target):
        p1, p2 = pred.chunk(2)
        return (p1 - target) * (p2 - target)

    def tweedie_term(self, net, noisy: torch.Tensor, sigma: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """Per-pixel Tweedie residual^2 (unweighted) at noise levels sigma > sigma_n; eta ~ N(0, I)."""
        x_t = self._tweedie_input(noisy, sigma, eta)
        return self._tweedie_residual(net(x_t, sigma), x_t, noisy, sigma)

    def consistency_term(
        self, net, noisy: torch.Tensor, sigma: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
    ) -> torch.Tensor:
        """Per-pixel unbiased estimate of || E[h(x_s, s)] - h(x_n, sigma_n) ||^2 for s = sigma <= sigma_n;
        z1, z2 ~ N(0, I) are the two independent draws."""
        target, xs = self._consistency_inputs(net, noisy, sigma, z1, z2)
        return self._consistency_residual(net(xs, torch.cat([sigma, sigma])), target)

    def _lognormal_between(self, n: int, rng, device, lo: float | None, hi: float | None) -> torch.Tensor:
        """EDM's sigma ~ logNormal(P_mean, P_std) restricted to (lo, hi], by inverse CDF of one normal draw."""
        u = torch.special.ndtr(_randn((n, 1, 1, 1), rng, "cpu").double())

        def cdf(s: float) -> float:
            return 0.5 * (1 + math.erf((math.log(s) - self.P_mean) / (self.P_std * math.sqrt(2))))

        a, b = (cdf(lo) if lo else 0.0), (cdf(hi) if hi else 1.0)
        u = (a + (b - a) * u).clamp(1e-12, 1 - 1e-12)
        return (self.P_mean + self.P_std * torch.special.ndtri(u)).exp().float().to(device)

    def tweedie_sigma(self, n: int, rng, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise levels above sigma_n for the Tweedie term, with their EDM weights."""
        sigma = self._lognormal_between(n, rng, device, self.sigma_n, None).clamp_min(self.sigma_n * (1 + 1e-6))
        return sigma, (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def __call__(self, net, images: torch.Tensor, generator, **_) -> torch.Tensor:
        """`images` are the noisy observations x_n. One forward pass with gradients for every term."""
        n, dev = len(images), images.device
        sigma, weight = self.tweedie_sigma(n, generator, dev)
        x_t = self._tweedie_input(images, sigma, _randn(images.shape, generator, dev))
        inputs, sigmas = [x_t], [sigma]
        if self.consistency_weight > 0:
            s_low = self._lognormal_between(n, generator, dev, None, self.sigma_n)
            z1, z2 = (_randn(images.shape, generator, dev) for _ in range(2))
            target, xs = self._consistency_inputs(net, images, s_low, z1, z2)
            inputs.append(xs)
            sigmas += [s_low, s_low]
        pred = net(torch.cat(inputs), torch.cat(sigmas))
        loss = weight * self._tweedie_residual(pred[:n], x_t, images, sigma)
        if self.consistency_weight > 0:
            loss = loss + (self.consistency_weight / self.sigma_data**2) * self._consistency_residual(pred[n:], target)
        return loss

"""Training losses (EDM form). Each returns a per-pixel loss; the trainer sums it and
divides by the batch size, as the official code does.

Random draws come from an explicit source (a utils.SampleRNG in training: one CPU stream per
sample, or a torch.Generator) so a step is a pure function of (weights, batch, seed): resume
is bitwise exact and data-parallel ranks draw what a single process would.
"""

from __future__ import annotations

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

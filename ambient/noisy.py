"""Training on Gaussian-noisy data ("Consistent Diffusion Meets Tweedie", Daras et al. 2024), EDM/VE form.

The model only sees observations x_n = x0 + sigma_n * eps (the noise fixed per image).

* sigma > sigma_n, Tweedie loss: noise x_n further to x_t = x_n + sqrt(sigma^2 - sigma_n^2) eta.
  Since E[x_n | x_t] = r x_t + (1 - r) E[x0 | x_t] with r = sigma_n^2 / sigma^2, the loss
  || (1 - r) h(x_t, sigma) + r x_t - x_n ||^2 is minimised by h = E[x0 | x_t]: the clean
  denoiser, learned from noisy data only.
* sigma <= sigma_n, consistency loss: from x_n take a stochastic step down to sigma with the
  model's own x0 estimate at sigma_n (the VE posterior step), then ask that the model's
  expected x0 estimate there equal its estimate at sigma_n (a martingale property of
  E[x0 | x_t]). The squared norm of an expectation is estimated without bias by the product
  of two independent draws; the sigma_n estimate is the (stop-gradient) target.

Weights: the Tweedie residual gets the EDM weight; the consistency residual, whose size does
not shrink with sigma, gets `consistency_weight / sigma_data^2`.
"""
from __future__ import annotations

import torch

from .losses import EDMLoss, _randn


class TweedieLoss(EDMLoss):
    def __init__(self, sigma_n: float, consistency_weight: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if sigma_n <= 0:
            raise ValueError(f"TweedieLoss needs sigma_n > 0, got {sigma_n}")
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

    def consistency_term(self, net, noisy: torch.Tensor, sigma: torch.Tensor, z1: torch.Tensor,
                         z2: torch.Tensor) -> torch.Tensor:
        """Per-pixel unbiased estimate of || E[h(x_s, s)] - h(x_n, sigma_n) ||^2 for s = sigma <= sigma_n;
        z1, z2 ~ N(0, I) are the two independent draws."""
        target, xs = self._consistency_inputs(net, noisy, sigma, z1, z2)
        return self._consistency_residual(net(xs, torch.cat([sigma, sigma])), target)

    def __call__(self, net, images: torch.Tensor, generator, **_) -> torch.Tensor:
        """`images` are the noisy observations x_n."""
        sigma, weight = self.sigma_and_weight(len(images), generator, images.device)
        eta, z1, z2 = (_randn(images.shape, generator, images.device) for _ in range(3))
        high = (sigma > self.sigma_n).flatten()
        low = ~high if self.consistency_weight > 0 else torch.zeros_like(high)
        x_t = self._tweedie_input(images[high], sigma[high], eta[high])
        inputs, sigmas = [x_t], [sigma[high]]
        if low.any():
            target, xs = self._consistency_inputs(net, images[low], sigma[low], z1[low], z2[low])
            inputs.append(xs)
            sigmas += [sigma[low], sigma[low]]
        pred = net(torch.cat(inputs), torch.cat(sigmas))
        loss = torch.zeros_like(images)
        n_high = int(high.sum())
        loss[high] = weight[high] * self._tweedie_residual(pred[:n_high], x_t, images[high], sigma[high])
        if low.any():
            loss[low] = (self.consistency_weight / self.sigma_data**2) * self._consistency_residual(pred[n_high:], target)
        return loss

"""The Gaussian baseline: a model that learned only the second-order statistics of its training set.

Fit: the mean mu and the covariance S (1/N, the Gaussian's maximum-likelihood estimate) of the clean
training images in [-1, 1] (as the trainer maps them, ambient.utils.uint8_to_signed), flattened to
d = C*H*W values; S = V diag(lambda) V^T is decomposed once, in float64, its eigenvalues clipped at 0
and raised by a tiny `eps` so the prior N(mu, S + eps I) is a proper (positive definite) Gaussian.

Model: the exact denoiser of that prior under Gaussian noise of std sigma (Tweedie's formula),

    D(x; sigma) = E[x0 | x0 + sigma n = x] = mu + S (S + sigma^2 I)^{-1} (x - mu)
                = mu + V diag(lambda / (lambda + sigma^2)) V^T (x - mu),

with EDMPrecond's call signature (model(x, sigma) in [-1, 1] image space, `masked` False,
`img_channels`), so the EDM Heun sampler, the attacks and every evaluation take it as they take a
trained network; sampling it integrates the probability-flow ODE of N(mu, S + eps I) (exact up to the
discretisation). `ambient train --corruption gauss` writes it (ambient.training.fit_gaussian_model) and
ambient.checkpoints.load_model reads it back.
"""

from __future__ import annotations

import torch
from torch import nn

GAUSSIAN_FORMAT = "ambient-gaussian/1"
# Added to every eigenvalue: the covariance of N training images has rank <= N - 1 (768 values at 16x16).
DEFAULT_EPS = 1e-6


def fit_gaussian(images: torch.Tensor, eps: float = DEFAULT_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean (d,), eigenvalues (d,), eigenvectors (d, d)) of images (N, C, H, W), all float64.

    The covariance is the 1/N (maximum-likelihood) estimate; eigenvalues ascending, clipped at 0, + eps."""
    if images.ndim != 4 or len(images) < 1:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1, got shape {tuple(images.shape)}")
    if not eps > 0:
        raise ValueError(f"eps={eps} must be > 0 (it keeps the covariance positive definite)")
    x = images.reshape(len(images), -1).to(torch.float64)
    mean = x.mean(0)
    z = x - mean
    cov = z.T @ z / len(x)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    return mean, eigenvalues.clamp_min(0) + eps, eigenvectors


class GaussianDenoiser(nn.Module):
    """D(x; sigma) of the prior N(mean, V diag(eigenvalues) V^T): model(x, sigma) as EDMPrecond's."""

    masked = False  # never takes a mask: sampled and attacked like the clean model

    def __init__(
        self,
        mean: torch.Tensor,
        eigenvalues: torch.Tensor,
        eigenvectors: torch.Tensor,
        img_channels: int,
        resolution: int,
    ):
        super().__init__()
        d = img_channels * resolution * resolution
        if mean.shape != (d,) or eigenvalues.shape != (d,) or eigenvectors.shape != (d, d):
            raise ValueError(
                f"a Gaussian of {img_channels}x{resolution}x{resolution} images needs mean ({d},), eigenvalues "
                f"({d},) and eigenvectors ({d}, {d}); got {tuple(mean.shape)}, {tuple(eigenvalues.shape)}, "
                f"{tuple(eigenvectors.shape)}"
            )
        if not bool((eigenvalues > 0).all()):
            raise ValueError("the eigenvalues of a Gaussian model must be > 0 (fit_gaussian adds eps)")
        self.img_channels, self.resolution = img_channels, resolution
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("eigenvalues", eigenvalues.to(torch.float64))
        self.register_buffer("eigenvectors", eigenvectors.to(torch.float64))

    @property
    def covariance(self) -> torch.Tensor:
        """S = V diag(lambda) V^T (d, d), float64."""
        v = self.eigenvectors
        return (v * self.eigenvalues) @ v.T

    def forward(self, x: torch.Tensor, sigma, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("the Gaussian model takes no mask (it is unmasked, like the clean model)")
        n = len(x)
        s2 = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1) ** 2
        if s2.numel() == 1:
            s2 = s2.expand(n)
        if s2.numel() != n:
            raise ValueError(f"sigma has {s2.numel()} values for {n} images")
        # float64 throughout, also under the sampler's bf16 autocast (which leaves float64 alone anyway)
        with torch.autocast(x.device.type, enabled=False):
            z = x.reshape(n, -1).to(torch.float64) - self.mean
            coef = z @ self.eigenvectors  # (n, d): x - mu in the eigenbasis
            shrink = self.eigenvalues / (self.eigenvalues + s2[:, None])
            out = self.mean + (coef * shrink) @ self.eigenvectors.T
        return out.reshape(x.shape).to(x.dtype)

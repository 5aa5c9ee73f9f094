"""The Tweedie loss in the DDPM/VP form of latent diffusion (SDXL), as the official LoRA fine-tuning.

"Consistent Diffusion Meets Tweedie" fine-tunes SDXL on noisy images (ambient-tweedie,
`train_text_to_image_lora_sdxl.py` with `configs/train_low_level.yaml`): each training latent is
noised once, to the timestep t_n ("timestep_nature", 100), and the noise stays fixed per image:

    x_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps.

Training draws t uniform in [t_n, T) and noises x_n further along the same VP chain,

    x_t = sqrt(abar_t / abar_n) x_n + sqrt(1 - abar_t / abar_n) eta,

so x_t has the law of the forward process at t. Given x0, (x_n, x_t) is Gaussian and

    E[x_n | x_t, x0] = c0 x0 + r x_t,  r = sqrt(abar_t / abar_n) (1 - abar_n) / (1 - abar_t),
                                       c0 = sqrt(abar_n) - r sqrt(abar_t),

linear in x0, hence E[x_n | x_t] = c0 E[x0 | x_t] + r x_t, and the residual
|| c0 h(x_t, t) + r x_t - x_n ||^2 is minimised by h = E[x0 | x_t]: the clean denoiser, from noisy
latents only (the official `--x0_pred` path: the x0 estimate mapped to the prediction of x_n,
plain MSE). In the VE limit (abar -> 1 with sigma^2 = (1 - abar)/abar) r -> sigma_n^2 / sigma^2 and
c0 -> 1 - r, the pixel loss of ambient.noisy.TweedieLoss. The UNet predicts epsilon; x0 comes
from it by the usual DDPM identity (`x0_from_eps`).

Not here yet (issue 13): the optional consistency term (coefficient 0 in the shipped config), the
LoRA training loop, the early-stopped sampler and the attacks.
"""
from __future__ import annotations

import torch


def ddpm_alphas_cumprod(num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """abar_t of SDXL's scheduler ("scaled_linear" betas, float64)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


class LatentTweedieLoss:
    """Per-element Tweedie residual^2 of a VP model trained on latents noised once to t_n."""

    def __init__(self, alphas_cumprod: torch.Tensor, t_n: int):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or len(abar) < 2 or not bool(((abar > 0) & (abar < 1)).all()):
            raise ValueError("alphas_cumprod must be a 1-D schedule of values in (0, 1)")
        if not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must decrease with t")
        if not 0 <= t_n < len(abar) - 1:
            raise ValueError(f"t_n={t_n} (timestep_nature) must lie in [0, {len(abar) - 2}] for a "
                             f"{len(abar)}-step schedule: training draws t in [t_n, T)")
        self.abar, self.t_n, self.T = abar, int(t_n), len(abar)

    def _at(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.abar.to(like.device)[t.long()].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def noisy_latents(self, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_n: the data the model is trained on (eps fixed per image by the caller)."""
        a = self.abar[self.t_n].to(x0.dtype)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """t uniform in [t_n, T), as the official loop."""
        return torch.randint(self.t_n, self.T, (n,), generator=generator).to(device)

    def noise_further(self, x_n: torch.Tensor, t: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        if bool((t < self.t_n).any()):
            raise ValueError(f"the Tweedie term needs t >= t_n={self.t_n}, got min t={int(t.min())}")
        ratio = self._at(t, x_n) / self.abar[self.t_n].to(x_n.dtype)
        return ratio.sqrt() * x_n + (1 - ratio).sqrt() * eta

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c0, r) of E[x_n | x_t, x0] = c0 x0 + r x_t."""
        a_t, a_n = self._at(t, like), self.abar[self.t_n].to(like.dtype)
        r = (a_t / a_n).sqrt() * (1 - a_n) / (1 - a_t)
        return a_n.sqrt() - r * a_t.sqrt(), r

    def x0_from_eps(self, eps_pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a_t = self._at(t, x_t)
        return (x_t - (1 - a_t).sqrt() * eps_pred) / a_t.sqrt()

    def residual(self, x0_pred: torch.Tensor, x_t: torch.Tensor, x_n: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c0, r = self.coefficients(t, x_t)
        return (c0 * x0_pred + r * x_t - x_n) ** 2

    def __call__(self, eps_model, x_n: torch.Tensor, generator: torch.Generator | None = None, **cond) -> torch.Tensor:
        """Per-element loss for a batch of noisy latents; `eps_model(x_t, t, **cond)` predicts epsilon."""
        t = self.sample_t(len(x_n), generator, x_n.device)
        eta = torch.randn(x_n.shape, generator=generator).to(x_n)
        x_t = self.noise_further(x_n, t, eta)
        x0 = self.x0_from_eps(eps_model(x_t, t, **cond), x_t, t)
        return self.residual(x0, x_t, x_n, t)

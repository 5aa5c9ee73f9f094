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
c0 -> 1 - r, the pixel loss of ambient.losses.TweedieLoss. The UNet predicts epsilon; x0 comes
from it by the usual DDPM identity (`x0_from_eps`).

Sampling (`ddim_sample`): deterministic DDIM from t = T - 1 down to a last timestep. The
early-stopped sampler of the paper stops at t_n, where the model has been trained, and returns its
x0 estimate there (one x0 step): the samples never carry the training noise. Down to t = 0 it is
the full-length sampler (which needs the consistency term to be right below t_n).

The LoRA training loop, generation and the attacks on SDXL are in ambient/latent/.

The consistency term (optional; `consistency_coeff` 0 in the shipped config), as the official loop:
from a start (x_u, u), either the Tweedie term's own (x_t, t) (`run_consistency_everywhere`, True in
the shipped config) or the data (x_n, t_n) (the boundary, as the pixel `ambient.losses.TweedieLoss`),
go down to s = max(0, u - d), d uniform in {1, ..., max_steps_diff} (100), taking the model's own
stop-gradient x0 estimate at u as the target and drawing x_s twice from the DDPM posterior
q(x_s | x_u, x0 = target) (one stochastic DDPM step, the official `move_one_step`),

    mean = sqrt(abar_s) (1 - a) / (1 - abar_u) x0 + sqrt(a) (1 - abar_s) / (1 - abar_u) x_u,
    var  = (1 - abar_s) (1 - a) / (1 - abar_u),   a = abar_u / abar_s,

and penalise (h(x_s1, s) - target) * (h(x_s2, s) - target): an unbiased estimate of
|| E[h(x_s, s)] - h(x_u, u) ||^2, which the true E[x0 | x_t] makes zero (E[x0 | x_s] averaged over
the reverse step from x_u is E[x0 | x_u]). Below t_n it trains the range that only the full-length
sampler visits. One step (`num_consistency_steps` 1, the shipped value); the target never carries a
gradient (the official `with_grad` switch is not reproduced).
"""

from __future__ import annotations

import torch


def ddpm_alphas_cumprod(
    num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """abar_t of SDXL's scheduler ("scaled_linear" betas, float64)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


class LatentTweedieLoss:
    """Per-element Tweedie residual^2 of a VP model trained on latents noised once to t_n."""

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        t_n: int,
        consistency_weight: float = 0.0,
        consistency_everywhere: bool = True,
        max_steps_diff: int = 100,
    ):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or len(abar) < 2 or not bool(((abar > 0) & (abar < 1)).all()):
            raise ValueError("alphas_cumprod must be a 1-D schedule of values in (0, 1)")
        if not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must decrease with t")
        if not 0 <= t_n < len(abar) - 1:
            raise ValueError(
                f"t_n={t_n} (timestep_nature) must lie in [0, {len(abar) - 2}] for a "
                f"{len(abar)}-step schedule: training draws t in [t_n, T)"
            )
        if consistency_weight < 0:
            raise ValueError(f"consistency_weight={consistency_weight} must be >= 0")
        if consistency_weight > 0 and t_n < 1:
            raise ValueError("the consistency term needs t_n >= 1: it steps down from timesteps >= t_n")
        if max_steps_diff < 1:
            raise ValueError(f"max_steps_diff={max_steps_diff} must be >= 1")
        self.abar, self.t_n, self.T = abar, int(t_n), len(abar)
        self.consistency_weight = float(consistency_weight)
        self.consistency_everywhere, self.max_steps_diff = bool(consistency_everywhere), int(max_steps_diff)

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

    def posterior_draws(
        self, x_u: torch.Tensor, u: torch.Tensor, x0: torch.Tensor, s: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
    ) -> torch.Tensor:
        """Two draws of x_s ~ q(x_s | x_u, x0) for 0 <= s < u (DDPM posterior), stacked along the batch."""
        if bool((s >= u).any()) or bool((s < 0).any()):
            raise ValueError("the consistency step needs 0 <= s < u (it goes down from the start timestep u)")
        a_s, a_u = self._at(s, x_u), self._at(u, x_u)
        a = a_u / a_s
        mean = a_s.sqrt() * (1 - a) / (1 - a_u) * x0 + a.sqrt() * (1 - a_s) / (1 - a_u) * x_u
        std = ((1 - a_s) * (1 - a) / (1 - a_u)).clamp_min(0).sqrt()
        return torch.cat([mean + std * z1, mean + std * z2])

    def step_down(self, u: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """s = max(0, u - d), d uniform in {1, ..., max_steps_diff}, as the official loop."""
        d = torch.randint(1, self.max_steps_diff + 1, u.shape, generator=generator).to(u.device)
        return (u - d).clamp_min(0)

    def consistency_term(
        self, eps_model, x_u: torch.Tensor, u: torch.Tensor, s: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, **cond
    ) -> torch.Tensor:
        """Per-element unbiased estimate of || E[h(x_s, s)] - h(x_u, u) ||^2 (h: the x0 estimate)."""
        with torch.no_grad():
            target = self.x0_from_eps(eps_model(x_u, u, **cond), x_u, u)
        xs = self.posterior_draws(x_u, u, target, s, z1, z2)
        ss = torch.cat([s, s])
        p1, p2 = self.x0_from_eps(eps_model(xs, ss, **cond), xs, ss).chunk(2)
        return (p1 - target) * (p2 - target)

    def __call__(self, eps_model, x_n: torch.Tensor, generator: torch.Generator | None = None, **cond) -> torch.Tensor:
        """Per-element loss for a batch of noisy latents; `eps_model(x_t, t, **cond)` predicts epsilon."""
        t = self.sample_t(len(x_n), generator, x_n.device)
        eta = torch.randn(x_n.shape, generator=generator).to(x_n)
        x_t = self.noise_further(x_n, t, eta)
        x0 = self.x0_from_eps(eps_model(x_t, t, **cond), x_t, t)
        loss = self.residual(x0, x_t, x_n, t)
        if self.consistency_weight > 0:  # drawn after the Tweedie term's draws: weight 0 leaves those unchanged
            x_u, u = (x_t, t) if self.consistency_everywhere else (x_n, torch.full_like(t, self.t_n))
            s = self.step_down(u, generator)
            z1, z2 = (torch.randn(x_n.shape, generator=generator).to(x_n) for _ in range(2))
            loss = loss + self.consistency_weight * self.consistency_term(eps_model, x_u, u, s, z1, z2, **cond)
        return loss


@torch.no_grad()
def ddim_from(
    eps_model, x_t: torch.Tensor, alphas_cumprod: torch.Tensor, start_t: int, num_steps: int, stop_t: int = 0, **cond
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from x_t at `start_t` down to `stop_t`, then the x0 estimate there.
    `eps_model(x_t, t, **cond)` predicts epsilon; t is a (N,) long tensor. The noise attack starts at
    t_attack; `ddim_sample` starts at T - 1."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    T = len(abar)
    if not 0 <= stop_t <= start_t < T:
        raise ValueError(f"need 0 <= stop_t={stop_t} <= start_t={start_t} < {T}")
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    ts = torch.linspace(start_t, stop_t, num_steps + 1, dtype=torch.float64).round().long().unique_consecutive()
    x, n = x_t.to(torch.float64), len(x_t)
    shape = (n, *([1] * (x.ndim - 1)))

    def x0_eps(x, t):
        a = abar[t].to(x.device).view(1).expand(n).view(shape)
        eps = eps_model(x.to(x_t.dtype), torch.full((n,), int(t), device=x.device, dtype=torch.long), **cond)
        eps = eps.to(torch.float64)
        return (x - (1 - a).sqrt() * eps) / a.sqrt(), eps

    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        x0, eps = x0_eps(x, t_cur)
        a_next = abar[t_next].to(x.device)
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    x0, _ = x0_eps(x, ts[-1])
    return x0.to(x_t.dtype)


@torch.no_grad()
def ddim_sample(
    eps_model, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, num_steps: int = 50, stop_t: int = 0, **cond
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from x_T ~ N(0, I) at t = T - 1 down to `stop_t`, then the x0
    estimate there. stop_t = t_n: the early-stopped sampler; stop_t = 0: the full-length one.
    `eps_model(x_t, t, **cond)` predicts epsilon; t is a (N,) long tensor."""
    T = len(alphas_cumprod)
    if not 0 <= stop_t < T - 1:
        raise ValueError(f"stop_t={stop_t} must lie in [0, {T - 2}]")
    return ddim_from(eps_model, x_T, alphas_cumprod, T - 1, num_steps, stop_t, **cond)

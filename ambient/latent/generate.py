"""Generation from SDXL (base or LoRA fine-tuned): early-stopped at t_n then one x0 step, or full-length.

Reproduces the sampling of ambient-tweedie `train_text_to_image_lora_sdxl.py` (its validation /
inference with `timestep_nature`): the fine-tuned model is trained only for t >= t_n, so the paper
samples from t = T - 1 down to t_n and returns the model's x0 estimate there (one x0 step); the
full-length sampler goes down to t = 0 (right below t_n only with the consistency term, which the
shipped config leaves off: Figs. 5-6 compare both).

Our own loop instead of the diffusers pipeline: `ambient.latent_tweedie.ddim_sample` (deterministic
DDIM, eta = 0, float64 state), the sampler whose early stop the latent Tweedie tests check; the
official code patches the pipeline's timestep loop to stop early. The diffusers pipeline has no
early stop, and one sampler for the pixel-identity tests, the generations and the noise attack
keeps them the same maths. `ddim_from` starts the same DDIM at any t (the noise attack starts at
t_attack); from T - 1 it equals `ddim_sample`. Initial noise of sample i comes from a generator
seeded by (seed, i): samples do not depend on the batch size.
"""
from __future__ import annotations

import numpy as np
import torch

from ..latent_tweedie import ddim_sample
from ..utils import generator

_STREAM_XT = 21


@torch.no_grad()
def ddim_from(eps_model, x_t: torch.Tensor, alphas_cumprod: torch.Tensor, start_t: int, num_steps: int,
              stop_t: int = 0) -> torch.Tensor:
    """Deterministic DDIM from x_t at `start_t` down to `stop_t`, then the x0 estimate there."""
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
        eps = eps_model(x.to(x_t.dtype), torch.full((n,), int(t), device=x.device, dtype=torch.long)).to(torch.float64)
        return (x - (1 - a).sqrt() * eps) / a.sqrt(), eps

    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        x0, eps = x0_eps(x, t_cur)
        a_next = abar[t_next].to(x.device)
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    x0, _ = x0_eps(x, ts[-1])
    return x0.to(x_t.dtype)


def initial_noise(n: int, shape: tuple, seed: int, offset: int = 0) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=generator(seed, _STREAM_XT, offset + i)) for i in range(n)])


@torch.no_grad()
def generate(m, cond: dict, num: int, resolution: int, seed: int = 0, num_steps: int = 50, stop_t: int = 0,
             guidance_scale: float = 1.0, batch_size: int = 4) -> np.ndarray:
    """uint8 (num, 3, res, res): DDIM from T - 1 to stop_t (t_n: early-stopped; 0: full), decoded."""
    if resolution % m.vae_factor:
        raise ValueError(f"resolution={resolution} must be a multiple of the VAE factor {m.vae_factor}")
    shape = (m.unet.config.in_channels, resolution // m.vae_factor, resolution // m.vae_factor)
    out = []
    for i in range(0, num, batch_size):
        x_T = initial_noise(min(batch_size, num - i), shape, seed, i).to(m.device)
        z = ddim_sample(m.eps_model(cond, guidance_scale), x_T, m.alphas_cumprod, num_steps=num_steps, stop_t=stop_t)
        out.append(m.decode(z.float()))
    return np.concatenate(out)

"""Generation from SDXL (base or LoRA fine-tuned): early-stopped at t_n then one x0 step, or full-length.

Reproduces the sampling of ambient-tweedie `train_text_to_image_lora_sdxl.py` (its validation /
inference with `timestep_nature`): the fine-tuned model is trained only for t >= t_n, so the paper
samples from t = T - 1 down to t_n and returns the model's x0 estimate there (one x0 step); the
full-length sampler goes down to t = 0 (right below t_n only with the consistency term, which the
shipped config leaves off: Figs. 5-6 compare both).

Our own loop instead of the diffusers pipeline: `ambient.latent.tweedie.ddim_sample` (deterministic
DDIM, eta = 0, float64 state), the sampler whose early stop the latent Tweedie tests check; the
official code patches the pipeline's timestep loop to stop early. The diffusers pipeline has no
early stop, and one sampler for the pixel-identity tests, the generations and the noise attack
keeps them the same maths (`tweedie.ddim_from` starts it at any t: the noise attack starts at
t_attack). Initial noise of sample i comes from a generator
seeded by (seed, i): samples do not depend on the batch size.
"""

from __future__ import annotations

import numpy as np
import torch

from ..utils import generator
from .tweedie import ddim_sample

_STREAM_XT = 21


def initial_noise(n: int, shape: tuple, seed: int, offset: int = 0) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=generator(seed, _STREAM_XT, offset + i)) for i in range(n)])


@torch.no_grad()
def generate(
    m,
    cond: dict,
    num: int,
    resolution: int,
    seed: int = 0,
    num_steps: int = 50,
    stop_t: int = 0,
    guidance_scale: float = 1.0,
    batch_size: int = 4,
) -> np.ndarray:
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

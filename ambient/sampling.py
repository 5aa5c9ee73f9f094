"""EDM Heun sampler (deterministic, S_churn = 0) and seeded sample generation.

Every sample j draws its latent (and, for ambient models, its fixed mask A~) from a
generator seeded by (seed, j): the samples do not depend on the batch size or device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .corruption import Corruption
from .networks import EDMPrecond
from .settings import PRECISIONS
from .utils import generator, signed_to_uint8

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def edm_sigmas(
    num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> torch.Tensor:
    """Karras et al. time steps, float64, with a final 0 appended (num_steps + 1 values)."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(num_steps, dtype=torch.float64)
    if num_steps == 1:
        t = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        t = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sample(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate the probability-flow ODE from sigmas[0] to sigmas[-1] with Heun's method
    (Euler on the last step when it ends at 0). `x` starts at noise level sigmas[0]."""
    x = x.to(torch.float64)
    for t_cur, t_next in zip(sigmas[:-1], sigmas[1:]):
        d_cur = (x - denoise(x, t_cur).to(torch.float64)) / t_cur
        x_next = x + (t_next - t_cur) * d_cur
        if t_next > 0:
            d_next = (x_next - denoise(x_next, t_next).to(torch.float64)) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_next)
        x = x_next
    return x


def model_denoiser(model: EDMPrecond, mask: torch.Tensor | None = None, clip: bool = False) -> Denoiser:
    """Wrap a model as D(x, sigma) in float32 on the model's device; ambient models keep one fixed mask."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(len(x))
        out = model(x.float(), s, mask) if model.masked else model(x.float(), s)
        return out.clamp(-1, 1) if clip else out

    return denoise


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return signed_to_uint8(images).cpu().numpy()


@torch.no_grad()
def generate(
    model: EDMPrecond,
    corruption: Corruption,
    num_samples: int,
    resolution: int,
    seed: int = 0,
    batch_size: int = 256,
    num_steps: int = 18,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: str | torch.device = "cpu",
    stop_sigma: float | None = None,
    precision: str = "fp32",
    progress: bool = True,
) -> np.ndarray:
    """Draw `num_samples` images as uint8 (N, C, H, W).

    Ambient models: one mask A~ per sample from the training distribution of A * B, used at
    every step, outputs clipped to [-1, 1] (as in the official sampler).
    stop_sigma (Tweedie models trained on noisy data: sigma_n): integrate only down to it and
    return the model's x0 estimate there (early stopping), so samples never carry the noise.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
    if num_samples < 1 or batch_size < 1 or num_steps < 1:
        raise ValueError(f"num_samples={num_samples}, batch_size={batch_size} and num_steps={num_steps} must be >= 1")
    model.eval()
    dev = torch.device(device)
    # bf16 autocast runs the network in bfloat16; the ODE state and its updates stay float64
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    c = model.img_channels
    sigmas = edm_sigmas(num_steps, sigma_min, sigma_max, rho)
    if stop_sigma:
        sigmas = edm_sigmas(num_steps, max(sigma_min, stop_sigma), sigma_max, rho)[:-1]
    out = []
    for start in tqdm(range(0, num_samples, batch_size), desc="sampling", unit="batch", disable=not progress):
        idx = list(range(start, min(start + batch_size, num_samples)))
        latents = torch.stack([torch.randn(c, resolution, resolution, generator=generator(seed, j)) for j in idx])
        mask = None
        if model.masked:
            mask = corruption.sampling_masks(idx, resolution, seed).to(device)
        denoise = model_denoiser(model, mask, clip=model.masked)
        with autocast:
            x = heun_sample(denoise, latents.to(device, torch.float64) * sigmas[0], sigmas.to(device))
            if stop_sigma:
                x = denoise(x, sigmas[-1])
        out.append(to_uint8(x.float()))
    return np.concatenate(out)

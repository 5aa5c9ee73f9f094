"""The two memorization attacks on SDXL: noise (Fig. 4) and inpainting (Fig. 1).

- Noise attack, as ambient-tweedie `attack_scripts/attack_with_noise.py`: each image is encoded by
  the VAE, its latents noised to t_attack (900 in the paper) with noise seeded per image,
  x_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps; then (a) the one-step x0 prediction of the UNet at
  t_attack and (b) the full denoising from t_attack down to 0 (our deterministic DDIM `ddim_from`
  with `num_steps` steps; the official script runs the SDXL img2img pipeline with its default
  scheduler at strength 0.9), both decoded. If the model memorised an image, both come back close
  to it although 90% of the signal was noise.
- Inpainting attack, as `attack_scripts/attack_with_masking.py`: diffusers'
  `StableDiffusionXLInpaintPipeline` built from the same loaded components (with a DDIM scheduler
  from the model's scheduler config), strength 1.0, a centred square box mask covering
  `fraction` of the image area (white = to inpaint). Not RePaint: the pipeline's own masked sampler.

Ranges are checked before any work: fraction in (0, 1), t_attack in [0, T).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..utils import generator
from .models import check_timestep
from .tweedie import ddim_from

_STREAM_ATTACK = 31


def check_fraction(fraction: float, key: str = "mask_fraction") -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"{key}={fraction} must lie in (0, 1): the share of the image area the box masks")
    return float(fraction)


def box_mask(resolution: int, fraction: float) -> np.ndarray:
    """(H, W) uint8, 255 inside a centred square of area ~fraction * H * W (the part to inpaint)."""
    check_fraction(fraction)
    side = max(1, min(resolution, round(math.sqrt(fraction) * resolution)))
    top = (resolution - side) // 2
    mask = np.zeros((resolution, resolution), dtype=np.uint8)
    mask[top : top + side, top : top + side] = 255
    return mask


@torch.no_grad()
def noise_attack(
    m,
    images_uint8: np.ndarray,
    cond: dict,
    t_attack: int = 900,
    num_steps: int = 50,
    seed: int = 0,
    guidance_scale: float = 1.0,
    batch_size: int = 4,
) -> dict[str, np.ndarray]:
    """{'noised', 'one_step', 'full'}: uint8 images (N, 3, H, W) (noised = the noisy latents decoded)."""
    t_attack = check_timestep("t_attack", t_attack, m.T)
    a = m.alphas_cumprod[t_attack]
    out = {"noised": [], "one_step": [], "full": []}
    eps_model = m.eps_model(cond, guidance_scale)
    for i in range(0, len(images_uint8), batch_size):
        z0 = m.encode(images_uint8[i : i + batch_size]).double()
        eps = (
            torch.stack(
                [
                    torch.randn(tuple(z0.shape[1:]), generator=generator(seed, _STREAM_ATTACK, i + j))
                    for j in range(len(z0))
                ]
            )
            .double()
            .to(z0.device)
        )
        x_t = (a.sqrt() * z0 + (1 - a).sqrt() * eps).float()
        t = torch.full((len(x_t),), t_attack, dtype=torch.long, device=x_t.device)
        one = (x_t.double() - (1 - a).sqrt() * eps_model(x_t, t).double()) / a.sqrt()
        full = ddim_from(eps_model, x_t, m.alphas_cumprod, t_attack, num_steps, 0)
        out["noised"].append(m.decode(x_t))
        out["one_step"].append(m.decode(one.float()))
        out["full"].append(m.decode(full.float()))
    return {k: np.concatenate(v) for k, v in out.items()}


def inpaint_pipeline(m):
    from diffusers import DDIMScheduler, StableDiffusionXLInpaintPipeline

    c = dict(m.c)
    c["scheduler"] = DDIMScheduler.from_config(m.scheduler.config)
    pipe = StableDiffusionXLInpaintPipeline(**c, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def inpaint_attack(
    m,
    images_uint8: np.ndarray,
    prompt: str,
    fraction: float = 0.5,
    num_steps: int = 50,
    seed: int = 0,
    guidance_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """{'masked', 'inpainted'}: uint8 (N, 3, H, W); masked = the input with the box greyed out."""
    from PIL import Image

    fraction = check_fraction(fraction)
    res = images_uint8.shape[-1]
    mask = box_mask(res, fraction)
    pipe = inpaint_pipeline(m)
    masked, painted = [], []
    for i, img in enumerate(images_uint8):
        g = torch.Generator(device=m.device).manual_seed(generator(seed, _STREAM_ATTACK, 10**6 + i).initial_seed())
        out = pipe(
            prompt=prompt,
            image=Image.fromarray(img.transpose(1, 2, 0)),
            mask_image=Image.fromarray(mask),
            height=res,
            width=res,
            strength=1.0,
            num_inference_steps=num_steps,
            guidance_scale=guidance_scale,
            generator=g,
            output_type="np",
        ).images[0]
        painted.append(np.clip(np.rint(out * 255), 0, 255).astype(np.uint8).transpose(2, 0, 1))
        mk = img.copy()
        mk[:, mask > 0] = 127
        masked.append(mk)
    return {"masked": np.stack(masked), "inpainted": np.stack(painted), "mask": mask}

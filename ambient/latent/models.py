"""Loading SDXL components from a local folder or the local Hugging Face cache; never downloading.

The official scripts (ambient-tweedie `train_text_to_image_lora_sdxl.py`,
`attack_scripts/attack_with_noise.py`, `attack_with_masking.py`) call `from_pretrained` on
stabilityai/stable-diffusion-xl-base-1.0 and let the hub download it. Here a model is either a local
diffusers-format folder (`--model-path`, e.g. the tiny models of `ambient.latent.tiny`) or a model id
resolved in the local cache (HF_HOME / HF_HUB_CACHE) with `local_files_only=True`. A missing model
fails before any work, with one message naming the model id and the command that fetches it.

`SDXL` bundles the loaded components with the small pieces every phase shares: the prompt
encoding of SDXL's two text encoders (penultimate hidden states concatenated, pooled output of the
second encoder, as the official `encode_prompt`), the six "add_time_ids" (original size, crop
top-left, target size: (res, res, 0, 0, res, res)), the epsilon-predicting UNet call with optional
classifier-free guidance (unconditional embeddings are zeros: SDXL base's force_zeros_for_empty_prompt),
and VAE encode/decode of uint8 images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..settings import LATENT_PRECISIONS
from ..utils import signed_to_uint8, uint8_to_signed

DTYPES = dict(zip(LATENT_PRECISIONS, (torch.float32, torch.bfloat16, torch.float16)))
SUBFOLDERS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


def fetch_hint(model_id: str) -> str:
    return (
        f"fetch it on a machine with internet: `huggingface-cli download {model_id}` (or `hf download "
        f"{model_id}`) into the cache of HF_HOME, or give its local folder as sdxl.model.path / --model-path"
    )


def resolve_model(model_id: str | None, path: str | os.PathLike | None = None) -> Path:
    """The local diffusers folder of a model: `path` if given, else the cached snapshot of `model_id`.
    Raises FileNotFoundError naming the model id and the fetch command; downloads nothing."""
    if path:
        p = Path(path)
        if not (p / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{p}: no diffusers model folder here (model_index.json missing) for model "
                f"{model_id or '(local)'}; "
                + (fetch_hint(model_id) if model_id else "build it (`ambient sdxl-tiny-models`)")
            )
        return p
    if not model_id:
        raise ValueError("no model: give sdxl.model.id (a Hugging Face model id) or sdxl.model.path")
    from huggingface_hub import snapshot_download

    try:
        snap = Path(
            snapshot_download(
                model_id, local_files_only=True, allow_patterns=["model_index.json", *[f"{s}/*" for s in SUBFOLDERS]]
            )
        )
    except Exception as e:  # LocalEntryNotFoundError, an offline-mode error, a malformed cache
        raise FileNotFoundError(
            f"model {model_id} is not in the local Hugging Face cache "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}; "
            f"{e.__class__.__name__}); {fetch_hint(model_id)}"
        ) from None
    missing = [
        s for s in ("model_index.json", "unet", "vae", "text_encoder", "text_encoder_2") if not (snap / s).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"model {model_id}: the cached snapshot {snap} lacks {', '.join(missing)}; " + fetch_hint(model_id)
        )
    return snap


def describe_model(model_dir: str | os.PathLike) -> dict:
    d = Path(model_dir)
    tiny = d / "ambient_tiny.json"
    return {
        "path": str(d),
        "tiny": tiny.is_file(),
        **({"tiny_info": json.loads(tiny.read_text())} if tiny.is_file() else {}),
    }


def load_components(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32) -> dict:
    """The seven components of a diffusers SDXL folder (no network: local_files_only)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as dlog
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):  # job logs: errors only, no loading progress bars
        log.set_verbosity_error()
        log.disable_progress_bar()
    d = str(model_dir)
    kw = dict(local_files_only=True)
    return dict(
        unet=UNet2DConditionModel.from_pretrained(d, subfolder="unet", torch_dtype=dtype, **kw),
        vae=AutoencoderKL.from_pretrained(d, subfolder="vae", torch_dtype=dtype, **kw),
        text_encoder=CLIPTextModel.from_pretrained(d, subfolder="text_encoder", torch_dtype=dtype, **kw),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(
            d, subfolder="text_encoder_2", torch_dtype=dtype, **kw
        ),
        tokenizer=CLIPTokenizer.from_pretrained(d, subfolder="tokenizer", **kw),
        tokenizer_2=CLIPTokenizer.from_pretrained(d, subfolder="tokenizer_2", **kw),
        scheduler=DDPMScheduler.from_pretrained(d, subfolder="scheduler", **kw),
    )


class SDXL:
    """Loaded components on a device, frozen, with the shared conditioning helpers."""

    def __init__(self, model_dir: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32"):
        if precision not in DTYPES:
            raise ValueError(f"precision={precision!r}: use one of {', '.join(DTYPES)}")
        self.model_dir, self.device, self.dtype = Path(model_dir), torch.device(device), DTYPES[precision]
        self.c = load_components(model_dir, self.dtype)
        for k in ("unet", "vae", "text_encoder", "text_encoder_2"):
            self.c[k].to(self.device).requires_grad_(False).eval()
        self.unet, self.vae, self.scheduler = self.c["unet"], self.c["vae"], self.c["scheduler"]
        # the scheduler's own abar_t (SDXL: scaled_linear 0.00085..0.012, 1000 steps), float64
        self.alphas_cumprod = torch.as_tensor(self.scheduler.alphas_cumprod, dtype=torch.float64)
        self.T = len(self.alphas_cumprod)
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------ conditioning
    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, pooled = [], None
        for tok, enc in (
            (self.c["tokenizer"], self.c["text_encoder"]),
            (self.c["tokenizer_2"], self.c["text_encoder_2"]),
        ):
            ids = tok(
                [prompt], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids.to(self.device)
            out = enc(ids, output_hidden_states=True)
            pooled = out[0]  # the projected pooled output of text_encoder_2 (the last one kept)
            embeds.append(out.hidden_states[-2])
        return torch.cat(embeds, dim=-1), pooled

    def time_ids(self, resolution: int) -> torch.Tensor:
        return torch.tensor(
            [[resolution, resolution, 0, 0, resolution, resolution]], device=self.device, dtype=self.dtype
        )

    def condition(self, prompt: str, resolution: int) -> dict:
        emb, pooled = self.encode_prompt(prompt)
        return {"emb": emb, "pooled": pooled, "time_ids": self.time_ids(resolution)}

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance_scale: float = 1.0) -> torch.Tensor:
        """UNet epsilon prediction; guidance_scale > 1: classifier-free guidance against zero embeddings."""
        n = len(x)
        emb, pooled, tids = cond["emb"].expand(n, -1, -1), cond["pooled"].expand(n, -1), cond["time_ids"].expand(n, -1)
        xin, tin = x.to(self.dtype), t.to(self.device)
        if guidance_scale != 1.0:
            emb, pooled, tids = (
                torch.cat([torch.zeros_like(emb), emb]),
                torch.cat([torch.zeros_like(pooled), pooled]),
                torch.cat([tids, tids]),
            )
            xin, tin = torch.cat([xin, xin]), torch.cat([tin, tin])
        out = self.unet(
            xin, tin, encoder_hidden_states=emb, added_cond_kwargs={"text_embeds": pooled, "time_ids": tids}
        ).sample.to(x.dtype)
        if guidance_scale != 1.0:
            uncond, cond_ = out.chunk(2)
            out = uncond + guidance_scale * (cond_ - uncond)
        return out

    def eps_model(self, cond: dict, guidance_scale: float = 1.0):
        """`eps_model(x_t, t)` as ambient.latent.tweedie expects it."""
        return lambda x, t: self.eps(x, t, cond, guidance_scale)

    # ------------------------------------------------------------ VAE
    @torch.no_grad()
    def encode(self, images_uint8: np.ndarray | torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> scaled latents (the posterior mean times scaling_factor), float32 on the device."""
        x = torch.as_tensor(np.asarray(images_uint8))
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images (N, 3, H, W), got {tuple(x.shape)}")
        out = []
        for i in range(0, len(x), batch_size):
            b = uint8_to_signed(x[i : i + batch_size].to(self.device))
            out.append(self.vae.encode(b.to(self.dtype)).latent_dist.mean.float() * self.vae.config.scaling_factor)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 8) -> np.ndarray:
        """scaled latents -> uint8 (N, 3, H, W) on the CPU."""
        out = []
        for i in range(0, len(latents), batch_size):
            z = latents[i : i + batch_size].to(self.device, self.dtype) / self.vae.config.scaling_factor
            x = self.vae.decode(z).sample.float()
            out.append(signed_to_uint8(x).cpu())
        return torch.cat(out).numpy()


def check_timestep(key: str, t: int, T: int, low: int = 0) -> int:
    if isinstance(t, bool) or int(t) != t or not low <= t < T:
        raise ValueError(f"{key}={t} must be an integer timestep in [{low}, {T})")
    return int(t)

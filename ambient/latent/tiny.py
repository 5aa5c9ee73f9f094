"""Tiny random-weight SDXL components, saved as a diffusers pipeline directory.

The SDXL experiments of the papers (ambient-tweedie: `train_text_to_image_lora_sdxl.py`,
`attack_scripts/attack_with_noise.py`, `attack_scripts/attack_with_masking.py`) run on
stabilityai/stable-diffusion-xl-base-1.0. Offline and on CPU the same code runs on the tiny models
built here from configs, the way diffusers tests its SDXL pipelines (`get_dummy_components`): a small
`UNet2DConditionModel` with SDXL's added conditioning (addition_embed_type "text_time": pooled text
embedding + the six size/crop "time ids"), a 2-level `AutoencoderKL` (latents at half the image
size, 4 channels), two small CLIP text encoders (the second with projection, its pooled output
conditions the UNet) and a CLIP BPE tokenizer built from a vocabulary written to disk here (no hub
download), and SDXL's scheduler (scaled_linear betas 0.00085..0.012, 1000 steps, epsilon
prediction). `build_tiny_pipeline(out_dir, seed)` writes them with `save_pretrained` in the layout
of the hub repository (model_index.json, unet/, vae/, text_encoder/, ...), so the same loader
(`ambient.latent.models.load_components`) reads tiny and real weights. Weights are random:
nothing these models produce means anything beyond exercising the code paths.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=2,
    projection_dim=32,
    max_position_embeddings=77,
    layer_norm_eps=1e-5,
    hidden_act="gelu",
)
TIME_EMBED_DIM = 8  # SDXL: 256; 6 time ids * 8 + the 32-d pooled text embedding = 80


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map of the 256 bytes to printable unicode characters."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _vocab() -> tuple[dict, list[str]]:
    """A byte-level BPE vocabulary: the 256 byte symbols (with and without the end-of-word mark),
    a few merges, and CLIP's special tokens. Any prompt tokenizes (unknown words fall to bytes)."""
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges = ["p h", "ph o", "pho t", "phot o</w>", "f a", "fa c", "fac e</w>", "o f</w>"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def write_tokenizer(out_dir: str | os.PathLike):
    """A CLIPTokenizer from a tiny vocab.json + merges.txt written to `out_dir` (saved there too)."""
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab()
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return CLIPTokenizer.from_pretrained(str(out))


def _tiny_unet(sample_size: int):
    """SDXL's UNet layout (text_time added conditioning), tiny; its weights come from torch's global RNG."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TINY_TEXT["projection_dim"],
        cross_attention_dim=2 * TINY_TEXT["hidden_size"],
        norm_num_groups=32,
    )


def _tiny_vae(sample_size: int):
    """A 2-level AutoencoderKL (latents at half the image size, 4 channels); weights from torch's global RNG."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=2 * sample_size,
        scaling_factor=0.13025,
    )


def _tiny_scheduler():
    """SDXL's scheduler: scaled_linear betas 0.00085..0.012, 1000 steps, epsilon prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="leading",
        clip_sample=False,
    )


def build_tiny_components(tokenizer_dir: str | os.PathLike, seed: int = 0, sample_size: int = 32) -> dict:
    """The tiny components, seeded (each module from its own seed, so they do not depend on each other)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab_size = len(_vocab()[0])
    text_cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        **TINY_TEXT,
    )
    torch.manual_seed(seed)
    unet = _tiny_unet(sample_size)
    torch.manual_seed(seed + 1)
    vae = _tiny_vae(sample_size)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(text_cfg)
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(text_cfg)
    tokenizer = write_tokenizer(tokenizer_dir)
    scheduler = _tiny_scheduler()
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=scheduler,
    )


def build_tiny_pipeline(out_dir: str | os.PathLike, seed: int = 0, sample_size: int = 32) -> Path:
    """Write the tiny pipeline to `out_dir` (diffusers layout), atomically (a temporary folder renamed)."""
    from diffusers import StableDiffusionXLPipeline

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        comps = build_tiny_components(tmp / "_tokenizer", seed, sample_size)
        pipe = StableDiffusionXLPipeline(**comps, force_zeros_for_empty_prompt=True)
        pipe.save_pretrained(str(tmp / "pipeline"), safe_serialization=True)
        info = {
            "tiny": True,
            "seed": seed,
            "sample_size": sample_size,
            "note": "random-weight tiny SDXL components (ambient.latent.tiny); outputs are meaningless",
        }
        (tmp / "pipeline" / "ambient_tiny.json").write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp / "pipeline", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

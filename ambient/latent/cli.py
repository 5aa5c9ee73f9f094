"""The `ambient sdxl-*` commands (issue 13): each reads and writes files only.

  sdxl-tiny-models   build the tiny random-weight SDXL pipeline folder (+ its model reference JSON)
  sdxl-locate        resolve a real model (local path or HF cache, never downloading) into a reference JSON
  sdxl-prepare       RGB training / attack images at the model resolution into a dataset zip
  sdxl-train         LoRA fine-tuning with the latent Tweedie loss at t_n (resumable)
  sdxl-generate      samples: early-stopped at t_n + one x0 step, or full-length
  sdxl-attack-noise  the noise attack (Fig. 4)
  sdxl-attack-inpaint the inpainting attack (Fig. 1)
  sdxl-score         similarity (pairs or nearest), histogram and shares above 0.90/0.95/0.99
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def _model_dir(ref: str) -> Path:
    """--model: a reference JSON (of sdxl-tiny-models / sdxl-locate) or a diffusers folder."""
    from .models import resolve_model

    p = Path(ref)
    if p.is_file() and p.suffix == ".json":
        info = json.loads(p.read_text())
        return resolve_model(info.get("model_id"), info["path"])
    return resolve_model(None, p)


def _device(name: str, threads: int | None):
    import torch

    from ..utils import resolve_device

    if threads:
        torch.set_num_threads(threads)
    return resolve_device(name)


def _write_zip(path, images, prefix, info):
    from ..data import write_image_zip

    write_image_zip(path, images, [f"{prefix}:{i}" for i in range(len(images))], info)
    print(f"wrote {path}: {len(images)} images")


def cmd_tiny(a) -> None:
    from ..utils import write_json
    from .models import describe_model
    from .tiny import build_tiny_pipeline

    out = build_tiny_pipeline(a.out_dir, a.seed, a.sample_size)
    write_json(a.ref, {"model_id": None, **describe_model(out)})
    print(f"wrote {out} and {a.ref}")


def cmd_locate(a) -> None:
    from ..utils import write_json
    from .models import describe_model, resolve_model

    d = resolve_model(a.model_id, a.model_path)
    write_json(a.ref, {"model_id": a.model_id, **describe_model(d)})
    print(f"{a.model_id or a.model_path}: {d}")


def cmd_prepare(a) -> None:
    from PIL import Image

    from ..data import embedded_faces, image_folder

    if a.source == "embedded":
        gray, ids = embedded_faces(a.num_images or 100, 24)
        images = np.stack([np.asarray(Image.fromarray(g[0]).resize((a.resolution, a.resolution), Image.BICUBIC))
                           for g in gray])[:, None].repeat(3, axis=1)
        info = {"source": "embedded:skimage.lfw_subset", "recipe": f"center crop 24, bicubic to {a.resolution}, gray as RGB"}
    else:
        if not a.folder:
            raise ValueError("--source folder needs --folder PATH")
        images, ids = image_folder(a.folder, a.resolution, 3, a.num_images)
        info = {"source": f"folder:{Path(a.folder).name}", "recipe": f"center crop, resize to {a.resolution}, RGB"}
    _write_zip(a.out, images, "img", info)


def cmd_train(a) -> None:
    from .lora import LoraTrainConfig, train_lora

    cfg = LoraTrainConfig(dataset=a.dataset, t_n=a.t_n, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                          weight_decay=a.weight_decay, rank=a.rank, grad_clip=a.grad_clip, seed=a.seed,
                          noise_seed=a.noise_seed, prompt=a.prompt, precision=a.precision,
                          checkpoint_every=a.checkpoint_every, log_every=a.log_every,
                          consistency_weight=a.consistency_weight,
                          consistency_everywhere=a.consistency_start == "everywhere", max_steps_diff=a.max_steps_diff)
    md = _model_dir(a.model)
    out = train_lora(cfg, md, a.run_dir, a.out, _device(a.device, a.threads), progress=not a.quiet)
    print(f"wrote {out}")


def _load(a, adapter=None):
    from .models import SDXL

    dev = _device(a.device, a.threads)
    md = _model_dir(a.model)
    if adapter:
        from .lora import load_finetuned

        return load_finetuned(md, adapter, dev, a.precision)
    return SDXL(md, dev, a.precision), None


def cmd_generate(a) -> None:
    from .generate import generate
    from .models import check_timestep

    m, st = _load(a, a.adapter)
    prompt = a.prompt if a.prompt is not None else (st["config"]["prompt"] if st else "")
    t_n = st["config"]["t_n"] if st else 0
    if a.sampler == "early":
        if not st:
            raise ValueError("--sampler early needs --adapter (a model fine-tuned at t_n)")
        stop = t_n
    else:
        stop = 0
    check_timestep("stop_t", stop, m.T - 1)
    res = a.resolution or (st["info"]["resolution"] if st else m.unet.config.sample_size * m.vae_factor)
    images = generate(m, m.condition(prompt, res), a.num, res, seed=a.seed, num_steps=a.steps, stop_t=stop,
                      guidance_scale=a.guidance_scale, batch_size=a.batch_size)
    _write_zip(a.out, images, "sample", {"sampler": a.sampler, "stop_t": stop, "t_n": t_n, "adapter": a.adapter,
                                         "model": str(m.model_dir), "steps": a.steps, "seed": a.seed,
                                         "guidance_scale": a.guidance_scale, "prompt": prompt})


def _images(path):
    from ..data import read_image_zip

    ds = read_image_zip(path)
    if ds.channels != 3:
        raise ValueError(f"{path}: SDXL attacks take RGB images")
    return ds.images


def cmd_attack_noise(a) -> None:
    from .attacks import noise_attack
    from .models import check_timestep

    images = _images(a.images)[: a.num_images]
    m, _ = _load(a)
    check_timestep("t_attack", a.t_attack, m.T)
    out = noise_attack(m, images, m.condition(a.prompt, images.shape[-1]), a.t_attack, a.steps, a.seed,
                       a.guidance_scale, a.batch_size)
    info = {"attack": "noise", "t_attack": a.t_attack, "steps": a.steps, "seed": a.seed, "model": str(m.model_dir)}
    out_dir = Path(a.out_dir)
    for k in ("noised", "one_step", "full"):
        _write_zip(out_dir / f"noise_{k}.zip", out[k], k, info)


def cmd_attack_inpaint(a) -> None:
    from .attacks import check_fraction, inpaint_attack

    check_fraction(a.fraction)
    images = _images(a.images)[: a.num_images]
    m, _ = _load(a)
    out = inpaint_attack(m, images, a.prompt, a.fraction, a.steps, a.seed, a.guidance_scale)
    info = {"attack": "inpaint", "mask_fraction": a.fraction, "steps": a.steps, "seed": a.seed, "model": str(m.model_dir)}
    out_dir = Path(a.out_dir)
    _write_zip(out_dir / "inpaint_masked.zip", out["masked"], "masked", info)
    _write_zip(out_dir / "inpaint_inpainted.zip", out["inpainted"], "inpainted", info)


def cmd_score(a) -> None:
    from ..data import read_image_zip
    from ..features import canonical_name, resolve_extractor
    from ..utils import atomic_path, write_json
    from .scoring import similarities, summarise

    images = read_image_zip(a.images).images
    ref = read_image_zip(a.reference).images
    if a.mode == "pairs":
        ref = ref[: len(images)]
    ex = resolve_extractor(a.extractor, a.fallback, _device(a.device, a.threads))
    sims, idx = similarities(ex, images, ref, a.mode)
    summary = {"label": a.label, "mode": a.mode, "images": a.images, "reference": a.reference,
               "extractor": ex.name, "extractor_requested": canonical_name(a.extractor),
               "is_dinov2": ex.name.startswith("dinov2"), **summarise(sims, a.bins)}
    with atomic_path(a.out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "reference_index", f"similarity_{ex.name}"])
        w.writerows([[i, int(j), f"{s:.6f}"] for i, (s, j) in enumerate(zip(sims, idx))])
    write_json(a.out_json, summary)
    print(f"wrote {a.out_json}: {a.label} [{ex.name}] shares above {summary['shares_above']}")


def _common(p, model=True):
    if model:
        p.add_argument("--model", required=True, help="model reference JSON (sdxl-tiny-models / sdxl-locate) or a diffusers folder")
        p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="dtype of the frozen weights")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None)


def add_sdxl_commands(sub) -> None:
    p = sub.add_parser("sdxl-tiny-models", help="build tiny random-weight SDXL components (offline tests)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--ref", required=True, help="model reference JSON to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-size", type=int, default=32, help="latent size of the UNet config")
    p.set_defaults(func=cmd_tiny)

    p = sub.add_parser("sdxl-locate", help="resolve an SDXL model in a local folder or the HF cache (no download)")
    p.add_argument("--model-id", default=None)
    p.add_argument("--model-path", default=None)
    p.add_argument("--ref", required=True)
    p.set_defaults(func=cmd_locate)

    p = sub.add_parser("sdxl-prepare", help="RGB images at the model resolution into a dataset zip")
    p.add_argument("--source", choices=["embedded", "folder"], default="embedded")
    p.add_argument("--folder", default=None)
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--num-images", type=int, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("sdxl-train", help="LoRA fine-tuning of the SDXL UNet with the latent Tweedie loss")
    _common(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--t-n", type=int, default=100, help="timestep_nature: the noise level of the data")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-seed", type=int, default=0, help="seed of the per-image noise at t_n")
    p.add_argument("--consistency-weight", type=float, default=0.0,
                   help="weight of the consistency term (official consistency_coeff; shipped 0)")
    p.add_argument("--consistency-start", choices=["everywhere", "boundary"], default="everywhere",
                   help="where its step down starts: the Tweedie term's (x_t, t) (official run_consistency_everywhere, "
                        "shipped) or the data (x_n, t_n)")
    p.add_argument("--max-steps-diff", type=int, default=100, help="the step goes down by 1..this many timesteps")
    p.add_argument("--prompt", default="a photo of a face")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sdxl-generate", help="samples of a (fine-tuned) SDXL model")
    _common(p)
    p.add_argument("--adapter", default=None, help="LoRA adapter of sdxl-train (none: the base model)")
    p.add_argument("--sampler", choices=["early", "full"], default="early")
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--guidance-scale", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--prompt", default=None, help="default: the adapter's training prompt")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("sdxl-attack-noise", help="noise attack: latents to t_attack, one-step x0 and full denoising")
    _common(p)
    p.add_argument("--images", required=True, help="dataset zip of the images to attack (sdxl-prepare)")
    p.add_argument("--num-images", type=int, default=None)
    p.add_argument("--t-attack", type=int, default=900)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--guidance-scale", type=float, default=1.0)
    p.add_argument("--prompt", default="")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_attack_noise)

    p = sub.add_parser("sdxl-attack-inpaint", help="inpainting attack with a centred box mask")
    _common(p)
    p.add_argument("--images", required=True)
    p.add_argument("--num-images", type=int, default=None)
    p.add_argument("--fraction", type=float, default=0.5, help="share of the image area masked, in (0, 1)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance-scale", type=float, default=1.0)
    p.add_argument("--prompt", default="")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_attack_inpaint)

    p = sub.add_parser("sdxl-score", help="similarity to references, histogram, shares above 0.90/0.95/0.99")
    _common(p, model=False)
    p.add_argument("--images", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--mode", choices=["pairs", "nearest"], required=True)
    p.add_argument("--extractor", default="dinov2_vitg14")
    p.add_argument("--fallback", default="pixel")
    p.add_argument("--label", default="")
    p.add_argument("--bins", type=int, default=50)
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-csv", required=True)
    p.set_defaults(func=cmd_score)

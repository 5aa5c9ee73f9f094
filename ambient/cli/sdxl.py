"""The `ambient sdxl-*` commands (issue 13): each reads and writes files only.

  sdxl-tiny-models   build the tiny random-weight SDXL pipeline folder (+ its model reference JSON)
  sdxl-locate        resolve a real model (local path or HF cache, never downloading) into a reference JSON
  sdxl-prepare       RGB training / attack images at the model resolution into a dataset zip
  sdxl-train         LoRA fine-tuning with the latent Tweedie loss at t_n (resumable)
  sdxl-generate      samples: early-stopped at t_n + one x0 step, or full-length
  sdxl-attack-noise  the noise attack (Fig. 4)
  sdxl-attack-inpaint the inpainting attack (Fig. 1)
  sdxl-score         similarity (pairs or nearest), histogram and shares above 0.90/0.95/0.99

A default is that of LoraTrainConfig (ambient.latent.lora) or of the function the command calls.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from ..layout import SDXL_ATTACK_PARTS
from ..settings import LATENT_PRECISIONS
from .common import (
    Command,
    add_device,
    add_field,
    add_quiet,
    declare_paths,
    default_of,
    fields_of,
    finite_float,
    parameter_defaults,
    setup_device,
)
from .common import register as _register


def _model_dir(ref: str) -> Path:
    """--model: a reference JSON (of sdxl-tiny-models / sdxl-locate) or a diffusers folder."""
    from ..latent.models import resolve_model

    p = Path(ref)
    if p.is_file() and p.suffix == ".json":
        info = json.loads(p.read_text())
        return resolve_model(info.get("model_id"), info["path"])
    return resolve_model(None, p)


def _write_zip(path, images, prefix, info):
    from ..data import write_image_zip

    write_image_zip(path, images, [f"{prefix}:{i}" for i in range(len(images))], info)
    print(f"wrote {path}: {len(images)} images")


def _load(a, adapter=None):
    from ..latent.models import SDXL

    dev = setup_device(a.device, a.threads)
    md = _model_dir(a.model)
    if adapter:
        from ..latent.lora import load_finetuned

        return load_finetuned(md, adapter, dev, a.precision)
    return SDXL(md, dev, a.precision), None


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --precision and the device options of every command that loads the model."""
    from ..latent.lora import LoraTrainConfig

    p.add_argument(
        "--model", required=True, help="model reference JSON (sdxl-tiny-models / sdxl-locate) or a diffusers folder"
    )
    p.add_argument(
        "--precision",
        choices=LATENT_PRECISIONS,
        default=default_of(LoraTrainConfig, "precision"),
        help="dtype of the frozen weights",
    )
    add_device(p)


# ---------------------------------------------------------------- models and data


def cmd_tiny(a) -> None:
    from ..latent.models import describe_model
    from ..latent.tiny import build_tiny_pipeline
    from ..utils import write_json

    out = build_tiny_pipeline(a.out_dir, a.seed, a.sample_size)
    write_json(a.ref, {"model_id": None, **describe_model(out)})
    print(f"wrote {out} and {a.ref}")


def _tiny(p: argparse.ArgumentParser) -> None:
    from ..latent.tiny import build_tiny_pipeline

    d = parameter_defaults(build_tiny_pipeline)
    p.add_argument("--out-dir", required=True, help="folder of the pipeline (diffusers layout)")
    p.add_argument("--ref", required=True, help="model reference JSON to write")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the random weights")
    p.add_argument("--sample-size", type=int, default=d["sample_size"], help="latent size of the UNet config")
    declare_paths(p, outputs=["ref"], out_dirs=["out_dir"])
    p.set_defaults(func=cmd_tiny)


def cmd_locate(a) -> None:
    from ..latent.models import describe_model, resolve_model
    from ..utils import write_json

    d = resolve_model(a.model_id, a.model_path)
    write_json(a.ref, {"model_id": a.model_id, **describe_model(d)})
    print(f"{a.model_id or a.model_path}: {d}")


def _locate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-id", default=None, help="Hugging Face model id, looked up in the local HF cache")
    p.add_argument("--model-path", default=None, help="local diffusers folder")
    p.add_argument("--ref", required=True, help="model reference JSON to write")
    declare_paths(p, inputs=["model_path"], outputs=["ref"])
    p.set_defaults(func=cmd_locate)


def cmd_prepare(a) -> None:
    import numpy as np
    from PIL import Image

    from ..data import embedded_faces, image_folder

    if a.source == "embedded":
        gray, ids = embedded_faces(a.num_images or 100, 24)
        images = np.stack(
            [np.asarray(Image.fromarray(g[0]).resize((a.resolution, a.resolution), Image.BICUBIC)) for g in gray]
        )[:, None].repeat(3, axis=1)
        info = {
            "source": "embedded:skimage.lfw_subset",
            "recipe": f"center crop 24, bicubic to {a.resolution}, gray as RGB",
        }
    else:
        if not a.folder:
            raise ValueError("--source folder needs --folder PATH")
        images, ids = image_folder(a.folder, a.resolution, 3, a.num_images)
        info = {"source": f"folder:{Path(a.folder).name}", "recipe": f"center crop, resize to {a.resolution}, RGB"}
    _write_zip(a.out, images, "img", info)


def _prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        choices=["embedded", "folder"],
        default="embedded",
        help="embedded: the faces shipped with scikit-image (gray as RGB); folder: an image folder",
    )
    p.add_argument("--folder", default=None, help="image folder (with --source folder)")
    p.add_argument("--resolution", type=int, required=True, help="image size in pixels (the model's)")
    p.add_argument("--num-images", type=int, default=None, help="number of images (None: embedded 100, folder all)")
    p.add_argument("--out", required=True, help="dataset zip")
    declare_paths(p, inputs=["folder"], outputs=["out"])
    p.set_defaults(func=cmd_prepare)


# ---------------------------------------------------------------- training and sampling


def cmd_train(a) -> None:
    from ..latent.lora import LoraTrainConfig, train_lora

    cfg = LoraTrainConfig(
        dataset=a.dataset,
        t_n=a.t_n,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=a.weight_decay,
        rank=a.rank,
        grad_clip=a.grad_clip,
        seed=a.seed,
        noise_seed=a.noise_seed,
        prompt=a.prompt,
        precision=a.precision,
        checkpoint_every=a.checkpoint_every,
        log_every=a.log_every,
        consistency_weight=a.consistency_weight,
        consistency_everywhere=a.consistency_start == "everywhere",
        max_steps_diff=a.max_steps_diff,
    )
    md = _model_dir(a.model)
    out = train_lora(cfg, md, a.run_dir, a.out, setup_device(a.device, a.threads), progress=not a.quiet)
    print(f"wrote {out}")


def _train(p: argparse.ArgumentParser) -> None:
    from ..latent.lora import LoraTrainConfig

    f = fields_of(LoraTrainConfig)
    _model_arguments(p)
    p.add_argument("--dataset", required=True, help="dataset zip (sdxl-prepare)")
    add_field(p, "--t-n", f, "timestep_nature: the noise level of the data")
    add_field(p, "--steps", f, "optimizer steps")
    add_field(p, "--batch-size", f, "images per step")
    add_field(p, "--lr", f, "AdamW learning rate")
    add_field(p, "--weight-decay", f, "AdamW weight decay")
    add_field(p, "--rank", f, "LoRA rank")
    add_field(p, "--grad-clip", f, "gradient norm clip")
    add_field(p, "--seed", f, "seed of the LoRA initialisation, batches and diffusion noise")
    add_field(p, "--noise-seed", f, "seed of the per-image noise at t_n")
    add_field(p, "--consistency-weight", f, "weight of the consistency term (official consistency_coeff; shipped 0)")
    p.add_argument(
        "--consistency-start",
        choices=["everywhere", "boundary"],
        default="everywhere" if default_of(LoraTrainConfig, "consistency_everywhere") else "boundary",
        help="where its step down starts: the Tweedie term's (x_t, t) (official "
        "run_consistency_everywhere, shipped) or the data (x_n, t_n)",
    )
    add_field(p, "--max-steps-diff", f, "the step goes down by 1..this many timesteps")
    add_field(p, "--prompt", f, "text prompt of every training image")
    add_field(p, "--checkpoint-every", f, "steps between checkpoints")
    add_field(p, "--log-every", f, "steps between log lines")
    p.add_argument("--run-dir", required=True, help="checkpoints and the training log; resumes from here")
    p.add_argument("--out", required=True, help="the final LoRA adapter")
    add_quiet(p)
    declare_paths(p, inputs=["model", "dataset"], outputs=["out"], out_dirs=["run_dir"])
    p.set_defaults(func=cmd_train)


def cmd_generate(a) -> None:
    from ..latent.generate import generate
    from ..latent.models import check_timestep

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
    images = generate(
        m,
        m.condition(prompt, res),
        a.num,
        res,
        seed=a.seed,
        num_steps=a.steps,
        stop_t=stop,
        guidance_scale=a.guidance_scale,
        batch_size=a.batch_size,
    )
    _write_zip(
        a.out,
        images,
        "sample",
        {
            "sampler": a.sampler,
            "stop_t": stop,
            "t_n": t_n,
            "adapter": a.adapter,
            "model": str(m.model_dir),
            "steps": a.steps,
            "seed": a.seed,
            "guidance_scale": a.guidance_scale,
            "prompt": prompt,
        },
    )


def _generate(p: argparse.ArgumentParser) -> None:
    from ..latent.generate import generate

    d = parameter_defaults(generate)
    _model_arguments(p)
    p.add_argument("--adapter", default=None, help="LoRA adapter of sdxl-train (None: the base model)")
    p.add_argument(
        "--sampler",
        choices=["early", "full"],
        default="early",
        help="early: stop at the adapter's t_n with one x0 step; full: down to t = 0",
    )
    p.add_argument("--num", type=int, default=8, help="number of samples")
    p.add_argument("--steps", type=int, default=d["num_steps"], help="DDIM steps")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the initial noise")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="samples per batch")
    p.add_argument("--guidance-scale", type=finite_float, default=d["guidance_scale"], help="classifier-free guidance")
    p.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="image size (None: the adapter's training resolution, else the model's)",
    )
    p.add_argument("--prompt", default=None, help="text prompt (None: the adapter's training prompt)")
    p.add_argument("--out", required=True, help="zip of the samples")
    declare_paths(p, inputs=["model", "adapter"], outputs=["out"])
    p.set_defaults(func=cmd_generate)


# ---------------------------------------------------------------- attacks and scores


def _images(path):
    from ..data import read_image_zip

    ds = read_image_zip(path)
    if ds.channels != 3:
        raise ValueError(f"{path}: SDXL attacks take RGB images")
    return ds.images


def _attack_zips(out_dir, attack: str) -> dict[str, Path]:
    """OUT_DIR/<attack>_<part>.zip of each part of an attack (ambient.layout.SDXL_ATTACK_PARTS)."""
    return {part: Path(out_dir) / f"{attack}_{part}.zip" for part in SDXL_ATTACK_PARTS[attack]}


def _declare_attack_paths(p: argparse.ArgumentParser, attack: str) -> None:
    """--model and --images are read, OUT_DIR/<attack>_<part>.zip written (so none may be an input)."""

    def zips(a) -> dict:
        return {f"--out-dir's {path.name}": path for path in _attack_zips(a.out_dir, attack).values()}

    declare_paths(p, inputs=["model", "images"], out_dirs=["out_dir"], derived=zips)


def cmd_attack_noise(a) -> None:
    from ..latent.attacks import noise_attack
    from ..latent.models import check_timestep

    images = _images(a.images)[: a.num_images]
    m, _ = _load(a)
    check_timestep("t_attack", a.t_attack, m.T)
    out = noise_attack(
        m, images, m.condition(a.prompt, images.shape[-1]), a.t_attack, a.steps, a.seed, a.guidance_scale, a.batch_size
    )
    info = {"attack": "noise", "t_attack": a.t_attack, "steps": a.steps, "seed": a.seed, "model": str(m.model_dir)}
    for part, path in _attack_zips(a.out_dir, "noise").items():  # ambient.layout.SDXL_FILES
        _write_zip(path, out[part], part, info)


def _attack_arguments(p: argparse.ArgumentParser, d: dict) -> None:
    """The options both attacks share; `d`: the attack function's defaults."""
    _model_arguments(p)
    p.add_argument("--images", required=True, help="dataset zip of the images to attack (sdxl-prepare)")
    p.add_argument("--num-images", type=int, default=None, help="attack the first N images (None: all)")
    p.add_argument("--steps", type=int, default=d["num_steps"], help="DDIM steps")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the attack's noise")
    p.add_argument("--guidance-scale", type=finite_float, default=d["guidance_scale"], help="classifier-free guidance")
    p.add_argument("--prompt", default="", help="text prompt")
    p.add_argument("--out-dir", required=True, help="folder of the attack's image zips")


def _attack_noise(p: argparse.ArgumentParser) -> None:
    from ..latent.attacks import noise_attack

    d = parameter_defaults(noise_attack)
    _attack_arguments(p, d)
    p.add_argument("--t-attack", type=int, default=d["t_attack"], help="timestep the latents are noised to")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per batch")
    _declare_attack_paths(p, "noise")
    p.set_defaults(func=cmd_attack_noise)


def cmd_attack_inpaint(a) -> None:
    from ..latent.attacks import check_fraction, inpaint_attack

    check_fraction(a.fraction)
    images = _images(a.images)[: a.num_images]
    m, _ = _load(a)
    out = inpaint_attack(m, images, a.prompt, a.fraction, a.steps, a.seed, a.guidance_scale)
    info = {
        "attack": "inpaint",
        "mask_fraction": a.fraction,
        "steps": a.steps,
        "seed": a.seed,
        "model": str(m.model_dir),
    }
    for part, path in _attack_zips(a.out_dir, "inpaint").items():
        _write_zip(path, out[part], part, info)


def _attack_inpaint(p: argparse.ArgumentParser) -> None:
    from ..latent.attacks import inpaint_attack

    d = parameter_defaults(inpaint_attack)
    _attack_arguments(p, d)
    p.add_argument(
        "--fraction", type=finite_float, default=d["fraction"], help="share of the image area masked, in (0, 1)"
    )
    _declare_attack_paths(p, "inpaint")
    p.set_defaults(func=cmd_attack_inpaint)


def cmd_score(a) -> None:
    from ..data import read_image_zip
    from ..eval.features import canonical_name, resolve_extractor
    from ..latent.scoring import similarities, summarise
    from ..utils import atomic_path, write_json

    images = read_image_zip(a.images).images
    ref = read_image_zip(a.reference).images
    if a.mode == "pairs":
        ref = ref[: len(images)]
    ex = resolve_extractor(a.extractor, a.fallback, setup_device(a.device, a.threads))
    sims, idx = similarities(ex, images, ref, a.mode)
    summary = {
        "label": a.label,
        "mode": a.mode,
        "images": a.images,
        "reference": a.reference,
        "extractor": ex.name,
        "extractor_requested": canonical_name(a.extractor),
        "is_dinov2": ex.name.startswith("dinov2"),
        **summarise(sims, a.bins),
    }
    with atomic_path(a.out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "reference_index", f"similarity_{ex.name}"])
        w.writerows([[i, int(j), f"{s:.6f}"] for i, (s, j) in enumerate(zip(sims, idx))])
    write_json(a.out_json, summary)
    print(f"wrote {a.out_json}: {a.label} [{ex.name}] shares above {summary['shares_above']}")


def _score(p: argparse.ArgumentParser) -> None:
    from ..latent.scoring import summarise

    add_device(p)
    p.add_argument("--images", required=True, help="image zip to score")
    p.add_argument("--reference", required=True, help="image zip compared with")
    p.add_argument(
        "--mode",
        choices=["pairs", "nearest"],
        required=True,
        help="pairs: image i against reference i; nearest: against the most similar reference",
    )
    p.add_argument("--extractor", default="dinov2_vitg14", help="feature extractor of the similarity")
    p.add_argument("--fallback", default="pixel", help="extractor used when the requested one's weights are missing")
    p.add_argument("--label", default="", help="name of this score in the summary")
    p.add_argument("--bins", type=int, default=parameter_defaults(summarise)["bins"], help="histogram bins")
    p.add_argument("--out-json", required=True, help="summary JSON")
    p.add_argument("--out-csv", required=True, help="per-image CSV")
    declare_paths(p, inputs=["images", "reference"], outputs=["out_json", "out_csv"])
    p.set_defaults(func=cmd_score)


COMMANDS = {
    "sdxl-tiny-models": Command("build tiny random-weight SDXL components (offline tests)", _tiny),
    "sdxl-locate": Command("resolve an SDXL model in a local folder or the HF cache (no download)", _locate),
    "sdxl-prepare": Command("RGB images at the model resolution into a dataset zip", _prepare),
    "sdxl-train": Command("LoRA fine-tuning of the SDXL UNet with the latent Tweedie loss", _train),
    "sdxl-generate": Command("samples of a (fine-tuned) SDXL model", _generate),
    "sdxl-attack-noise": Command("noise attack: latents to t_attack, one-step x0 and full denoising", _attack_noise),
    "sdxl-attack-inpaint": Command("inpainting attack with a centred box mask", _attack_inpaint),
    "sdxl-score": Command("similarity to references, histogram, shares above 0.90/0.95/0.99", _score),
}


def register(sub, names=None) -> None:
    """Add the sdxl-* commands to the `ambient` parser's sub-commands."""
    _register(sub, COMMANDS, names)

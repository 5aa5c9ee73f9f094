"""`ambient sample`: draw samples from a checkpoint into a zip of PNGs. The sampler's defaults are
those of ambient.sampling.generate."""

from __future__ import annotations

import argparse
import os

from ..settings import PRECISIONS
from .common import Command, add_device, add_quiet, declare_paths, parameter_defaults, setup_device
from .common import register as _register


def _stop_sigma(a, cfg):
    """Where the sampler stops: --sampler against what the checkpoint was trained for."""
    stop_sigma = cfg.sampling_stop_sigma
    if a.sampler == "full":
        if stop_sigma and cfg.consistency_weight <= 0:
            raise ValueError(
                f"{a.checkpoint}: --sampler full runs below sigma_n={stop_sigma}, which only the "
                "consistency loss trains; this model has consistency_weight 0 (use --sampler early)"
            )
        return None
    if a.sampler == "early" and not stop_sigma:
        raise ValueError(f"{a.checkpoint}: --sampler early is for models trained on noisy data with the Tweedie loss")
    return stop_sigma


def _check_memory(num: int, values_per_image: int) -> None:
    """The samples are held in memory (uint8) until the zip is written: refuse a --num they would not fit in."""
    need = num * values_per_image
    try:
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform: then trust the user
        return
    if need > available:
        raise ValueError(
            f"--num {num}: the samples need {need / 2**30:.3g} GiB of memory until the zip is written, and "
            f"this machine has {available / 2**30:.3g} GiB; sample in several runs with different --seed"
        )


def cmd_sample(a) -> None:
    from ..checkpoints import load_model
    from ..data import write_image_zip
    from ..sampling import generate
    from ..utils import sha256_file

    dev = setup_device(a.device, a.threads)
    model, cfg, info = load_model(a.checkpoint, device=dev)
    stop_sigma = _stop_sigma(a, cfg)
    _check_memory(a.num, info["channels"] * info["resolution"] ** 2)
    images = generate(
        model,
        cfg.corruption_spec,
        a.num,
        info["resolution"],
        seed=a.seed,
        batch_size=a.batch_size,
        num_steps=a.steps,
        device=dev,
        stop_sigma=stop_sigma,
        precision=a.precision,
        progress=not a.quiet,
    )
    write_image_zip(
        a.out,
        images,
        [f"sample:{i}" for i in range(len(images))],
        {
            "checkpoint": str(a.checkpoint),
            "checkpoint_sha256": sha256_file(a.checkpoint),
            "corruption": cfg.corruption_spec.name,
            "loss": cfg.effective_loss,
            "stop_sigma": stop_sigma,
            "sampler": a.sampler,
            "precision": a.precision,
            "seed": a.seed,
            "num_steps": a.steps,
            "train_steps": cfg.steps,
        },
    )
    print(f"wrote {a.out}: {len(images)} samples")


def _sample(p: argparse.ArgumentParser) -> None:
    from ..sampling import generate

    d = parameter_defaults(generate)
    p.add_argument("--checkpoint", required=True, help="model checkpoint of `ambient train`")
    p.add_argument("--num", type=int, default=256, help="number of samples")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the sampler's noise")
    p.add_argument("--steps", type=int, default=d["num_steps"], help="Heun steps of the EDM sampler")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="samples per batch")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d["precision"],
        help="bf16 runs the network under bfloat16 autocast (the ODE state stays float64)",
    )
    p.add_argument(
        "--sampler",
        choices=["auto", "early", "full"],
        default="auto",
        help="Tweedie models: early = stop at sigma_n with one x0 step (auto's choice); full = down to "
        "sigma_min (needs the consistency loss)",
    )
    p.add_argument("--out", required=True, help="zip of PNG samples")
    add_quiet(p)
    add_device(p)
    declare_paths(p, inputs=["checkpoint"], outputs=["out"])
    p.set_defaults(func=cmd_sample)


COMMANDS = {"sample": Command("draw samples from a checkpoint into a zip of PNGs", _sample)}


def register(sub, names=None) -> None:
    """Add `sample` to the `ambient` parser's sub-commands."""
    _register(sub, COMMANDS, names)

"""Command line: `python -m ambient <command>`. Each command reads and writes files only."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .entry import run_command


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def cmd_prepare(a) -> None:
    from . import data

    # 0 means 0 (never "the default": the defaults are None); --num-images and --resolution >= 1
    # are checked for every command by entry.check_arguments
    if a.heldout_images < 0:
        raise ValueError(f"--heldout-images {a.heldout_images} must be >= 0")
    if (a.heldout_images > 0) != bool(a.heldout_out):
        raise ValueError("--heldout-images N > 0 and --heldout-out PATH go together")
    if a.source == "embedded":
        images, ids = data.embedded_faces(100, 24 if a.resolution is None else a.resolution)
        info = {"source": "embedded:skimage.lfw_subset", "recipe": f"center crop to {images.shape[-1]}"}
    else:
        if not a.folder:
            raise ValueError("--source folder needs --folder PATH")
        limit = None if a.num_images is None else a.num_images + a.heldout_images
        images, ids = data.image_folder(a.folder, 64 if a.resolution is None else a.resolution, a.channels, limit)
        info = {"source": f"folder:{Path(a.folder).name}",
                "recipe": f"center crop to square, Lanczos resize to {images.shape[-1]}, {'RGB' if a.channels == 3 else 'grayscale'}"}
    train_idx, held_idx = data.split_heldout(len(images), a.heldout_images, a.split_seed, a.num_images)
    split = {"split_seed": a.split_seed, "num_available": len(images),
             "heldout_rule": "heldout = sorted(numpy.random.default_rng(split_seed).choice(num_available, "
                             "num_heldout, replace=False)); train = the first num_images of the rest"}
    m = data.write_image_zip(a.out, images[train_idx], [ids[i] for i in train_idx],
                             {**info, **split, "split": "train", "num_heldout": len(held_idx)})
    print(f"wrote {a.out}: {m['num_images']} images, {m['channels']}x{m['resolution']}x{m['resolution']}")
    if a.heldout_out:
        h = data.write_image_zip(a.heldout_out, images[held_idx], [ids[i] for i in held_idx],
                                 {**info, **split, "split": "heldout", "num_train": len(train_idx)})
        print(f"wrote {a.heldout_out}: {h['num_images']} held-out images (never trained on)")


def cmd_train(a) -> None:
    from .corruption import Corruption
    from .networks import UNetConfig
    from .training import TrainConfig, train

    delta = a.delta if a.delta is not None else (0.1 if a.corruption.startswith("dust") else 0.0)
    corr = Corruption.from_name(a.corruption, delta=delta, seed=a.corruption_seed)
    net = UNetConfig(base_channels=a.base_channels, channel_mult=a.channel_mult, num_blocks=a.num_blocks,
                     attn_resolutions=a.attn_resolutions, dropout=a.dropout)
    cfg = TrainConfig(dataset=a.dataset, corruption=corr.to_dict(), network=net.to_dict(), formulation=a.formulation,
                      loss=a.loss, consistency_weight=a.consistency_weight,
                      steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup_steps=a.warmup_steps,
                      ema_decay=a.ema_decay, grad_clip=a.grad_clip, xflip=a.xflip, seed=a.seed,
                      checkpoint_every=a.checkpoint_every, log_every=a.log_every, precision=a.precision,
                      channels_last=a.channels_last)
    out = train(cfg, a.run_dir, a.out, device=a.device, threads=a.threads, progress=not a.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes
        print(f"wrote {out}")


def cmd_sample(a) -> None:
    import torch

    from .data import write_image_zip
    from .sampling import generate
    from .training import load_model
    from .utils import resolve_device, sha256_file

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    model, cfg, info = load_model(a.checkpoint, device=dev)
    stop_sigma = cfg.sampling_stop_sigma
    if a.sampler == "full":
        if stop_sigma and cfg.consistency_weight <= 0:
            raise ValueError(f"{a.checkpoint}: --sampler full runs below sigma_n={stop_sigma}, which only the "
                             "consistency loss trains; this model has consistency_weight 0 (use --sampler early)")
        stop_sigma = None
    elif a.sampler == "early" and not stop_sigma:
        raise ValueError(f"{a.checkpoint}: --sampler early is for models trained on noisy data with the Tweedie loss")
    images = generate(model, cfg.corruption_spec, a.num, info["resolution"], seed=a.seed, batch_size=a.batch_size,
                      num_steps=a.steps, device=dev, stop_sigma=stop_sigma, precision=a.precision,
                      progress=not a.quiet)
    write_image_zip(a.out, images, [f"sample:{i}" for i in range(len(images))],
                    {"checkpoint": str(a.checkpoint), "checkpoint_sha256": sha256_file(a.checkpoint),
                     "corruption": cfg.corruption_spec.name, "loss": cfg.effective_loss,
                     "stop_sigma": stop_sigma, "sampler": a.sampler, "precision": a.precision, "seed": a.seed, "num_steps": a.steps,
                     "train_steps": cfg.steps})
    print(f"wrote {a.out}: {len(images)} samples")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ambient", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="make a prepared dataset zip from the embedded faces or an image folder")
    p.add_argument("--source", choices=["embedded", "folder"], default="embedded")
    p.add_argument("--folder", help="image folder (with --source folder)")
    p.add_argument("--resolution", type=int, default=None, help="output size (embedded: crop, default 24; folder: default 64)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=3, help="folder source: 1 grayscale or 3 RGB")
    p.add_argument("--num-images", type=int, default=None, help="training images (default: all not held out)")
    p.add_argument("--heldout-images", type=int, default=0,
                   help="images held out of training, written to --heldout-out (quality is scored against them)")
    p.add_argument("--heldout-out", default=None, help="zip of the held-out images")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out choice")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a clean or ambient diffusion model")
    p.add_argument("--dataset", required=True, help="prepared dataset zip")
    p.add_argument("--corruption", default="clean", help="clean, dust-p0.50, box-p0.25, noise-s0.20")
    p.add_argument("--delta", type=float, default=None,
                   help="further corruption probability of dust (default 0.1); box takes none (a second box)")
    p.add_argument("--corruption-seed", type=int, default=0, help="seed of the per-image masks / noise")
    p.add_argument("--formulation", choices=["split", "official"], default="split")
    p.add_argument("--loss", choices=["auto", "edm", "ambient", "tweedie"], default="auto",
                   help="auto picks by corruption; edm on noise-sX data is the naive baseline")
    p.add_argument("--consistency-weight", type=float, default=0.0,
                   help="tweedie: weight of the optional consistency loss below sigma_n (official shipped config: 0)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--xflip", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2, 2])
    p.add_argument("--num-blocks", type=int, default=1)
    p.add_argument("--attn-resolutions", type=int, nargs="*", default=[6])
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--run-dir", required=True, help="checkpoints and train_log.jsonl; resumes from here")
    p.add_argument("--out", default=None, help="final checkpoint (default RUN_DIR/model.pt)")
    p.add_argument("--quiet", action="store_true")
    _add_device(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a checkpoint into a zip of PNGs")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 runs the network under bfloat16 autocast (2.5x faster on AVX-512 bf16 CPUs)")
    p.add_argument("--sampler", choices=["auto", "early", "full"], default="auto",
                   help="Tweedie models: early = stop at sigma_n with one x0 step (auto's choice); full = down to "
                        "sigma_min (needs the consistency loss)")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    _add_device(p)
    p.set_defaults(func=cmd_sample)

    from .claims import add_claims_command
    from .cli_data import add_data_commands
    from .cli_eval import add_eval_commands
    from .latent.cli import add_sdxl_commands
    from .metrics_hf import add_hf_command
    from .pull import add_pull_command
    from .summary import add_summary_command

    add_data_commands(sub)
    add_eval_commands(sub)
    add_hf_command(sub)
    add_summary_command(sub)
    add_claims_command(sub)
    add_pull_command(sub)
    add_sdxl_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args, args.command)

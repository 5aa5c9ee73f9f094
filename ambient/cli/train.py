"""`ambient train`: train a clean or ambient diffusion model. Every default is TrainConfig's,
UNetConfig's or Corruption's (ambient.training, ambient.networks, ambient.corruption)."""

from __future__ import annotations

import argparse
import os

from .common import Command, add_device, add_field, add_quiet, fields_of
from .common import register as _register


def cmd_train(a) -> None:
    from ..corruption import Corruption
    from ..networks import UNetConfig
    from ..training import TrainConfig, train

    # dust's further corruption belongs to the ambient loss: none for its naive baseline (--loss edm)
    delta = a.delta if a.delta is not None else (0.1 if a.corruption.startswith("dust") and a.loss != "edm" else 0.0)
    corr = Corruption.from_name(a.corruption, delta=delta, seed=a.corruption_seed)
    net = UNetConfig(
        base_channels=a.base_channels,
        channel_mult=a.channel_mult,
        num_blocks=a.num_blocks,
        attn_resolutions=a.attn_resolutions,
        dropout=a.dropout,
    )
    cfg = TrainConfig(
        dataset=a.dataset,
        corruption=corr.to_dict(),
        network=net.to_dict(),
        formulation=a.formulation,
        loss=a.loss,
        consistency_weight=a.consistency_weight,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        warmup_steps=a.warmup_steps,
        ema_decay=a.ema_decay,
        grad_clip=a.grad_clip,
        xflip=a.xflip,
        seed=a.seed,
        checkpoint_every=a.checkpoint_every,
        log_every=a.log_every,
        precision=a.precision,
        channels_last=a.channels_last,
        further_draw=a.further_draw,
    )
    out = train(cfg, a.run_dir, a.out, device=a.device, threads=a.threads, progress=not a.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes
        print(f"wrote {out}")


def _data_arguments(p: argparse.ArgumentParser) -> None:
    from ..corruption import Corruption

    p.add_argument("--dataset", required=True, help="prepared dataset zip")
    p.add_argument(
        "--corruption",
        default=Corruption().name,
        help="clean, dust-p0.50, box-p0.25, noise-s0.20, or gauss (the Gaussian baseline: mean and covariance "
        "of the clean images, fitted at once)",
    )
    p.add_argument(
        "--delta",
        type=float,
        default=None,
        help="further corruption probability of dust under the ambient loss (None: 0.1; 0 with --loss edm); "
        "box takes none (a second box)",
    )
    add_field(p, "--corruption-seed", fields_of(Corruption), "seed of the per-image masks / noise", key="seed")


def _optimizer_arguments(p: argparse.ArgumentParser) -> None:
    from ..networks import FORMULATIONS
    from ..training import FURTHER_DRAWS, LOSSES, TrainConfig

    f = fields_of(TrainConfig)
    add_field(
        p,
        "--formulation",
        f,
        "masked models: split feeds the mask unscaled, official as the official code (scaled by c_in)",
        choices=FORMULATIONS,
    )
    add_field(
        p,
        "--loss",
        f,
        "auto picks by corruption; edm on dust, box or noise data is its naive baseline (run name + -naive)",
        choices=LOSSES,
    )
    add_field(
        p,
        "--consistency-weight",
        f,
        "tweedie: weight of the optional consistency loss below sigma_n (official shipped config: 0)",
    )
    add_field(p, "--steps", f, "optimizer steps")
    add_field(p, "--batch-size", f, "images per step")
    add_field(p, "--lr", f, "Adam learning rate")
    add_field(p, "--warmup-steps", f, "steps of linear learning-rate warm-up")
    add_field(p, "--ema-decay", f, "decay of the exponential moving average of the weights")
    add_field(p, "--grad-clip", f, "gradient norm clip")
    add_field(p, "--xflip", f, "random horizontal flips")
    add_field(p, "--seed", f, "seed of initialisation, batches and diffusion noise")
    add_field(p, "--precision", f, "bf16: bfloat16 autocast", choices=["fp32", "bf16"])
    add_field(p, "--channels-last", f, "channels-last memory format")
    add_field(
        p,
        "--further-draw",
        f,
        "masked models: draw the further corruption B anew every step (the papers' objective) or once per "
        "image (the official code)",
        choices=FURTHER_DRAWS,
    )
    add_field(p, "--checkpoint-every", f, "steps between checkpoints")
    add_field(p, "--log-every", f, "steps between train_log.jsonl lines")


def _network_arguments(p: argparse.ArgumentParser) -> None:
    from ..networks import UNetConfig

    f = fields_of(UNetConfig)
    add_field(p, "--base-channels", f, "channels of the UNet's first level")
    add_field(p, "--channel-mult", f, "channel multiplier per level (one level each)")
    add_field(p, "--num-blocks", f, "residual blocks per level")
    add_field(p, "--attn-resolutions", f, "feature-map sizes with self-attention", nargs="*")
    add_field(p, "--dropout", f, "dropout probability")


def _train(p: argparse.ArgumentParser) -> None:
    _data_arguments(p)
    _optimizer_arguments(p)
    _network_arguments(p)
    p.add_argument("--run-dir", required=True, help="checkpoints and train_log.jsonl; resumes from here")
    p.add_argument("--out", default=None, help="final checkpoint (None: RUN_DIR/model.pt)")
    add_quiet(p)
    add_device(p)
    p.set_defaults(func=cmd_train)


COMMANDS = {"train": Command("train a clean or ambient diffusion model (or fit the Gaussian baseline)", _train)}


def register(sub, names=None) -> None:
    """Add `train` to the `ambient` parser's sub-commands."""
    _register(sub, COMMANDS, names)

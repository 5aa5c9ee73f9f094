"""`ambient train`: train a clean or ambient diffusion model. Every default is TrainConfig's,
UNetConfig's or Corruption's (ambient.training, ambient.networks, ambient.corruption)."""

from __future__ import annotations

import argparse
import json
import os

from .common import Command, add_device, add_quiet, add_settings, declare_paths, default_of, finite_float
from .common import register as _register

# The sections `--settings` takes: the workflow config's `training` and `network`, whole.
_SECTIONS = ("training", "network")


def read_settings(text: str | None) -> dict[str, dict]:
    """--settings: JSON {"training": {...}, "network": {...}}; an unknown section or key is refused by name."""
    from ..checkpoints import TrainConfig
    from ..networks import UNetConfig
    from ..settings import settings_of

    out = {name: {} for name in _SECTIONS}
    if not text:
        return out
    try:
        given = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--settings is not valid JSON ({e})") from None
    known = {"training": {f.name for f in settings_of(TrainConfig)} | {"corruption_seed"}}
    known["network"] = {f.name for f in settings_of(UNetConfig)}
    for section, values in (given or {}).items():
        if section not in out or not isinstance(values, dict):
            raise ValueError(f"--settings: section {section!r} is unknown: use {' and '.join(_SECTIONS)}")
        bad = sorted(set(values) - known[section])
        if bad:
            raise ValueError(
                f"--settings: {section}.{bad[0]} is not a setting (known: {', '.join(sorted(known[section]))})"
            )
        out[section] = values
    return out


def cmd_train(a) -> None:
    from ..corruption import Corruption
    from ..layout import default_delta
    from ..networks import UNetConfig
    from ..training import TrainConfig, train
    from .common import given_settings

    # an option typed on the command line wins over --settings, which wins over the dataclass default
    given = read_settings(a.settings)
    training = {**given["training"], **given_settings(a, TrainConfig)}
    corruption_seed = training.pop("corruption_seed", default_of(Corruption, "seed"))
    if a.corruption_seed is not None:
        corruption_seed = a.corruption_seed
    net = UNetConfig(**{**given["network"], **given_settings(a, UNetConfig)})
    kind = Corruption.from_name(a.corruption).kind
    delta = a.delta if a.delta is not None else default_delta(kind, training.get("loss", "auto"))
    corr = Corruption.from_name(a.corruption, delta=delta, seed=corruption_seed)
    cfg = TrainConfig(dataset=a.dataset, corruption=corr.to_dict(), network=net.to_dict(), **training)
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
        type=finite_float,
        default=None,
        help="further corruption probability of dust under the ambient loss (None: ambient.layout.default_delta; "
        "0 with --loss edm); box takes none (a second box)",
    )
    p.add_argument(
        "--corruption-seed",
        type=int,
        default=None,
        help="seed of the per-image masks / noise (None: --settings' training.corruption_seed, else "
        f"{default_of(Corruption, 'seed')})",
    )
    p.add_argument(
        "--settings",
        default=None,
        help='JSON {"training": {...}, "network": {...}}: the workflow config\'s sections whole (training may '
        "also hold corruption_seed); an option given on the command line wins",
    )


def _default_out(a) -> dict:
    """--out's default, RUN_DIR/model.pt (ambient.training.train): a written file like --out."""
    return {} if a.out else {"--out (default)": os.path.join(a.run_dir, "model.pt")}


def _train(p: argparse.ArgumentParser) -> None:
    from ..checkpoints import TrainConfig
    from ..networks import UNetConfig

    _data_arguments(p)
    add_settings(p, TrainConfig, "training settings (ambient.checkpoints.TrainConfig)")
    add_settings(p, UNetConfig, "network settings (ambient.networks.UNetConfig)")
    p.add_argument("--run-dir", required=True, help="checkpoints and train_log.jsonl; resumes from here")
    p.add_argument("--out", default=None, help="final checkpoint (None: RUN_DIR/model.pt)")
    add_quiet(p)
    add_device(p)
    declare_paths(p, inputs=["dataset"], outputs=["out"], out_dirs=["run_dir"], derived=_default_out)
    p.set_defaults(func=cmd_train)


COMMANDS = {"train": Command("train a clean or ambient diffusion model (or fit the Gaussian baseline)", _train)}


def register(sub, names=None) -> None:
    """Add `train` to the `ambient` parser's sub-commands."""
    _register(sub, COMMANDS, names)

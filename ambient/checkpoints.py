"""Model files, below training and sampling: the training config they record (TrainConfig), and
writing, reading, listing and loading them.

A checkpoint is a torch.save'd dict (format CHECKPOINT_FORMAT: step, config, info, model, ema,
optimizer), written atomically (a temporary file beside it, renamed into place) and read with
weights_only=True: a file carrying code is refused. The Gaussian baseline's model file
(ambient.gaussian.GAUSSIAN_FORMAT) is read the same way. Sampling, evaluation and the summary
load models from here without importing the training loop.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .corruption import Corruption
from .gaussian import GAUSSIAN_FORMAT, GaussianDenoiser
from .layout import AUTO_LOSS, KIND_LOSSES
from .networks import FORMULATIONS, EDMPrecond, UNetConfig, build_model
from .settings import PRECISIONS, check_settings, setting
from .utils import atomic_path

CHECKPOINT_FORMAT = "ambient-checkpoint/1"
# gauss: no loss is minimised, the Gaussian baseline's mean and covariance are fitted in closed form
LOSSES = ("auto", "edm", "ambient", "tweedie", "gauss")
_CKPT_NAME = re.compile(r"^checkpoint-(\d{7})\.pt$")
FURTHER_DRAWS = ("step", "image")

# Checkpoints written before further_draw existed drew B once per image.
_LEGACY_CONFIG = {"further_draw": "image"}


@dataclass
class TrainConfig:
    """The settings of one training run. Each setting's default, bounds and help are defined here
    only: the CLI options, the workflow schema's `training` section and the checks derive from them."""

    dataset: str
    corruption: dict = field(default_factory=lambda: Corruption().to_dict())
    network: dict = field(default_factory=lambda: UNetConfig().to_dict())
    formulation: str = setting(
        "split",
        choices=FORMULATIONS,
        help="masked models' preconditioning and loss weighting: split feeds the mask unscaled (this "
        "repository's default), official scales it by c_in as the official code",
    )
    loss: str = setting(
        "auto",
        choices=LOSSES,
        help="auto picks by corruption; edm on dust, box or noise data is its naive baseline (run name + -naive)",
    )
    consistency_weight: float = setting(
        0.0,
        minimum=0,
        help="noise runs (Tweedie loss): weight of the optional consistency loss below sigma_n (0: the "
        "Tweedie term only, the official shipped setting)",
    )
    steps: int = setting(3000, minimum=1, help="optimizer steps")
    batch_size: int = setting(32, minimum=1, help="images per step")
    lr: float = setting(1e-3, exclusive_minimum=0, help="Adam learning rate")
    warmup_steps: int = setting(200, minimum=0, help="steps of linear learning-rate warm-up")
    ema_decay: float = setting(
        0.999, minimum=0, exclusive_maximum=1, help="decay of the exponential moving average of the weights"
    )
    grad_clip: float = setting(1.0, minimum=0, help="gradient norm clip (0: none)")
    xflip: bool = setting(False, help="random horizontal flips")
    seed: int = setting(0, minimum=0, help="seed of initialisation, batches and diffusion noise")
    checkpoint_every: int = setting(500, minimum=1, help="steps between checkpoints")
    keep_checkpoints: int = setting(2, minimum=1, help="checkpoints kept in the run directory")
    log_every: int = setting(50, minimum=1, help="steps between train_log.jsonl lines")
    precision: str = setting("fp32", choices=PRECISIONS, help="fp32, or bf16: bfloat16 autocast")
    channels_last: bool = setting(False, help="channels-last memory format")
    further_draw: str = setting(
        "step",
        choices=FURTHER_DRAWS,
        help="masked models: draw the further corruption B of A~ = A * B anew every step (step: the "
        "papers' objective, an expectation over B) or once per image (image: the official code)",
    )

    def __post_init__(self):
        """The one place training settings are checked: the CLI and the Snakemake rules both build this."""
        check_settings(self)
        UNetConfig(**self.network)  # validates
        corr = Corruption(**self.corruption)  # validates
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is unknown: use one of {', '.join(LOSSES)}")
        if self.loss != "auto" and self.loss not in KIND_LOSSES[corr.kind]:
            raise ValueError(
                f"loss {self.loss!r} does not fit corruption {corr.kind!r}: use one of "
                f"{', '.join(KIND_LOSSES[corr.kind])} (or auto)"
            )
        if corr.delta > 0 and self.effective_loss != "ambient":
            raise ValueError(
                f"corruption delta={corr.delta} is the further corruption of the ambient loss; this run uses the "
                f"{self.effective_loss} loss, which never draws one (the naive baseline): set delta to 0"
            )
        if self.consistency_weight > 0 and self.effective_loss != "tweedie":
            raise ValueError(
                f"consistency_weight={self.consistency_weight} belongs to the Tweedie loss (noise "
                f"corruptions); this run uses the {self.effective_loss} loss: set it to 0"
            )

    @property
    def corruption_spec(self) -> Corruption:
        return Corruption(**self.corruption)

    @property
    def effective_loss(self) -> str:
        if self.loss != "auto":
            return self.loss
        return AUTO_LOSS[self.corruption["kind"]]

    @property
    def masked_network(self) -> bool:
        """Whether the network takes the mask A~ as input: only under the ambient loss (the naive
        baseline on masked data is the plain, unmasked network of the clean model)."""
        return self.effective_loss == "ambient"

    @property
    def sampling_stop_sigma(self) -> float | None:
        """Tweedie models are sampled down to sigma_n and end with one x0 step (early stopping)."""
        return self.corruption["sigma_n"] if self.effective_loss == "tweedie" else None

    def to_dict(self) -> dict:
        return asdict(self)


def save_checkpoint(
    path: str | Path, model: EDMPrecond, ema: EDMPrecond, optimizer, step: int, cfg: TrainConfig, info: dict
) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "config": cfg.to_dict(),
        "info": info,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
    }
    # torch.save names the archive's root folder after a file *path* it is given (here a random
    # temporary name); given an open file it uses a fixed one, so equal states give equal bytes
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


_STATE_KEYS = ("step", "config", "info", "model", "ema")
# The model file of the Gaussian baseline (fit_gaussian_model): its statistics instead of weights.
_GAUSSIAN_KEYS = ("step", "config", "info", "mean", "eigenvalues", "eigenvectors")
_FORMAT_KEYS = {CHECKPOINT_FORMAT: _STATE_KEYS, GAUSSIAN_FORMAT: _GAUSSIAN_KEYS}


def load_checkpoint(path: str | Path, map_location="cpu", hint: str = "") -> dict:
    """Load a checkpoint with weights_only=True: a pickle carrying code is refused.

    Also reads the Gaussian baseline's model file (format GAUSSIAN_FORMAT): the same step, config
    and info, with mean, eigenvalues and eigenvectors in place of the weights.

    `hint` ends the message of an unreadable file (what the calling command's user can do)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, a pickle carrying code, another format, ...
        why = (
            "refused: it holds Python objects other than weights (code could run on loading)"
            if "weights_only" in str(e) or "Unsupported global" in str(e)
            else "truncated or not a PyTorch file"
        )
        raise ValueError(f"{path}: not a loadable checkpoint ({why})" + (f"; {hint}" if hint else "")) from None
    if not isinstance(state, dict) or state.get("format") not in _FORMAT_KEYS:
        raise ValueError(
            f"{path}: not an ambient checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__})"
        )
    missing = [k for k in _FORMAT_KEYS[state["format"]] if k not in state]
    if missing:
        raise ValueError(
            f"{path}: an incomplete ambient checkpoint (no {', '.join(missing)}); write it again with `ambient train`"
        )
    return state


def recorded_config(state: dict) -> dict:
    """A checkpoint's training config, keys added since it was written filled with what it did then."""
    return {**_LEGACY_CONFIG, **state["config"]}


def model_from_checkpoint(
    state: dict, use_ema: bool = True, device="cpu", source: str = "checkpoint"
) -> tuple[EDMPrecond | GaussianDenoiser, TrainConfig, dict]:
    """The network of a loaded checkpoint (the Gaussian baseline's file: its GaussianDenoiser);
    `source` (its path) names it in every error."""
    try:
        cfg = TrainConfig(**recorded_config(state))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: its recorded training config is not valid ({e})") from None
    info = state["info"]
    if state.get("format") == GAUSSIAN_FORMAT:
        return _gaussian_from_state(state, cfg, device, source), cfg, info
    try:
        model = build_model(
            info["channels"],
            info["resolution"],
            masked=cfg.masked_network,
            formulation=cfg.formulation,
            config=UNetConfig(**cfg.network),
        )
    except KeyError as e:
        raise ValueError(f"{source}: its info lacks {e}; write it again with `ambient train`") from None
    try:
        model.load_state_dict(state["ema" if use_ema else "model"])
    except RuntimeError as e:
        n = str(e).count("size mismatch") + str(e).count("Missing key") + str(e).count("Unexpected key")
        raise ValueError(
            f"{source}: its weights do not fit the network its recorded config describes "
            f"({n} mismatched or missing tensors); the file was edited or mixed up"
        ) from None
    return model.to(device).eval(), cfg, info


def _gaussian_from_state(state: dict, cfg: TrainConfig, device, source: str) -> GaussianDenoiser:
    if cfg.effective_loss != "gauss":
        raise ValueError(f"{source}: a Gaussian model file whose config says loss {cfg.effective_loss}")
    info = state["info"]
    try:
        model = GaussianDenoiser(
            state["mean"], state["eigenvalues"], state["eigenvectors"], info["channels"], info["resolution"]
        )
    except KeyError as e:
        raise ValueError(f"{source}: its info lacks {e}; write it again with `ambient train`") from None
    except ValueError as e:
        raise ValueError(f"{source}: {e}; the file was edited or mixed up") from None
    return model.to(device).eval()


def load_model(
    path: str | Path, device="cpu", use_ema: bool = True
) -> tuple[EDMPrecond | GaussianDenoiser, TrainConfig, dict]:
    """A trained model from its file, for sampling and evaluation (the Gaussian baseline's too)."""
    state = load_checkpoint(path, map_location="cpu", hint="train it again (`ambient train`, or its Snakemake rule)")
    return model_from_checkpoint(state, use_ema, device, source=str(path))


def checkpoint_step(path: Path) -> int:
    return int(_CKPT_NAME.match(path.name).group(1))


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if _CKPT_NAME.match(p.name))

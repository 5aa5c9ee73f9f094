"""Training loop: Adam with LR warm-up, EMA, gradient clipping, atomic checkpoints, resume.
The run's config (TrainConfig) and the checkpoint files (writing, reading, loading) are in ambient.checkpoints.

A step is a pure function of (state, step index, seed): the batch indices and every random
draw of the loss come from generators seeded by (seed, step, sample position). Resuming from a checkpoint
therefore continues bit for bit as if the run had never stopped (on the same device and
thread count).
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoints import (
    TrainConfig,
    checkpoint_step,
    list_checkpoints,
    load_checkpoint,
    recorded_config,
    save_checkpoint,
)
from .data import read_image_zip
from .gaussian import DEFAULT_EPS, GAUSSIAN_FORMAT, fit_gaussian
from .losses import AmbientLoss, EDMLoss, TweedieLoss
from .networks import EDMPrecond, UNetConfig, build_model
from .paths import check_writable
from .utils import (
    BatchSampler,
    SampleRNG,
    atomic_path,
    generator,
    resolve_device,
    run_dir_lock,
    sha256_file,
    uint8_to_signed,
)

_STREAM_LOSS = 12  # 11: the batches (utils.BatchSampler)
_STREAM_FURTHER = _STREAM_LOSS + 2  # per-step further corruption B (_STREAM_LOSS + 1: x-flips)


# The settings a resumed run must share with the checkpoint it resumes.
# Every key that shapes the weights; the rest (steps, the dataset *path*: its bytes are compared,
# checkpoint_every, keep_checkpoints, log_every) may change between a run and its resumption.
_RESUME_KEYS = (
    "corruption",
    "network",
    "formulation",
    "loss",
    "consistency_weight",
    "batch_size",
    "lr",
    "warmup_steps",
    "ema_decay",
    "grad_clip",
    "xflip",
    "seed",
    "precision",
    "channels_last",
    "further_draw",
)


def schema_sections() -> dict[str, tuple[type, tuple[str, ...]]]:
    """The workflow config's sections generated from settings dataclasses (`python -m ambient schema`):
    section -> (dataclass, settings left out: `loss` comes with each run's corruption entry)."""
    return {"training": (TrainConfig, ("loss",)), "network": (UNetConfig, ())}


def make_loss(cfg: TrainConfig) -> EDMLoss:
    kind = cfg.effective_loss
    if kind == "ambient":
        return AmbientLoss(cfg.formulation)
    if kind == "tweedie":
        return TweedieLoss(cfg.corruption["sigma_n"], cfg.consistency_weight)
    if kind == "gauss":
        raise ValueError("the Gaussian model is fitted in closed form (fit_gaussian_model), not trained by a loss")
    return EDMLoss()


# ---------------------------------------------------------------- training


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    beta = min(decay, (1 + step) / (10 + step))  # short warm-up so early EMA is not stuck at init
    with torch.no_grad():  # one fused call instead of one small kernel per parameter
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - beta)


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    out: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a model; writes checkpoints into `run_dir` and the final one to `out`.

    Under torchrun (WORLD_SIZE > 1) each process takes an equal slice of every global batch,
    gradients are averaged by DistributedDataParallel (NCCL on GPUs, gloo on CPUs), and rank 0
    alone writes logs and checkpoints; the result matches a single process on the same batch.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "model.pt"
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads} must be >= 1 (or unset: PyTorch's default)")
    check_writable(out)  # before the work, not after it
    if cfg.effective_loss == "gauss":  # a closed-form fit on the CPU: no device, threads or steps
        return fit_gaussian_model(cfg, out) if int(os.environ.get("RANK", "0")) == 0 else out
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    world, rank, dev = _init_distributed(dev, cfg.batch_size)
    try:
        if rank:  # only rank 0 writes into the run directory
            return _train(cfg, run_dir, out, dev, world, rank, False)
        with run_dir_lock(run_dir):
            return _train(cfg, run_dir, out, dev, world, rank, progress)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _init_distributed(dev: torch.device, batch_size: int) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 1, 0, dev
    import torch.distributed as dist

    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes ({world})")
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return world, dist.get_rank(), dev


def _train(
    cfg: TrainConfig, run_dir: Path, out: Path, dev: torch.device, world: int, rank: int, progress: bool
) -> Path:
    # Initialize: the network's weights come from torch's global RNG.
    torch.manual_seed(cfg.seed)

    # Load dataset: the trainer only ever holds the observations.
    observations, info = _observations(cfg)

    # Construct network, EMA and optimizer; resume them from this run's latest checkpoint.
    model, ema, optimizer = build_training(cfg, info["channels"], info["resolution"], dev)
    start = _resume(cfg, run_dir, info, (model, ema, optimizer), dev, rank, progress)

    # Train.
    observations = tuple(t.to(dev) for t in observations)
    net = _distributed(model, dev, world)
    setup = step_setup(cfg, info["num_images"], dev, rank, world)
    log = _TrainLog(cfg, run_dir / "train_log.jsonl", dev, world, rank)
    kill_at = int(os.environ.get("AMBIENT_KILL_AT_STEP", "-1"))  # tests: a real SIGKILL mid-run
    model.train()
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc=f"train {info['corruption_name']}",
        unit="step",
        disable=None if progress else True,  # None: tqdm draws only on a terminal
    )
    for step in bar:
        batch = batch_at(cfg, setup.sampler, step, setup.positions, observations)
        loss = train_step(cfg, net, model, ema, optimizer, setup.loss_fn, batch, step, setup.positions, setup.autocast)

        # Stop at a non-finite loss; log; save a snapshot of finite weights only.
        done = step + 1
        value = loss.item()
        if not math.isfinite(value):
            raise Diverged(run_dir, done, f"the loss is {value}")
        log.add(value, done, optimizer, bar)
        if rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _check_finite_weights(run_dir, done, model, ema)
            _save_snapshot(run_dir, model, ema, optimizer, done, cfg, info)
        if done == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()

    # Done.
    if rank == 0:
        _check_finite_weights(run_dir, cfg.steps, model, ema)
        save_checkpoint(out, model, ema, None, cfg.steps, cfg, info)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return out


def fit_gaussian_model(cfg: TrainConfig, out: str | Path, eps: float = DEFAULT_EPS) -> Path:
    """The Gaussian baseline (ambient.gaussian): mean and covariance of the clean training images in
    [-1, 1] (x-flipped copies added with cfg.xflip, the distribution the trainer augments to), written
    atomically to `out` with format GAUSSIAN_FORMAT, step 0 (no optimizer step) and cfg as its config."""
    if cfg.corruption["kind"] != "gauss":
        raise ValueError(f"the Gaussian baseline is fitted to the clean images (kind gauss), not {cfg.corruption}")
    out = Path(out)
    data = read_image_zip(cfg.dataset)
    x = uint8_to_signed(data.images, torch.float64)
    n, c, h, _ = x.shape
    if cfg.xflip:
        x = torch.cat([x, x.flip(-1)])
    mean, eigenvalues, eigenvectors = fit_gaussian(x, eps)
    info = {
        "channels": c,
        "resolution": h,
        "num_images": n,
        "dataset_sha256": sha256_file(cfg.dataset),
        "corruption_name": cfg.corruption_spec.name,
        "fit": "mean and 1/N covariance of the training images in [-1, 1], eigenvalues clipped at 0 + eps",
        "eps": eps,
        "fitted_images": len(x),
    }
    state = {
        "format": GAUSSIAN_FORMAT,
        "step": 0,
        "config": cfg.to_dict(),
        "info": info,
        "mean": mean,
        "eigenvalues": eigenvalues,
        "eigenvectors": eigenvectors.contiguous(),
    }
    with atomic_path(out) as tmp, open(tmp, "wb") as f:  # an open file: equal states give equal bytes
        torch.save(state, f)
    return out


def _observations(cfg: TrainConfig) -> tuple[tuple[torch.Tensor, ...], dict]:
    """The corrupted dataset (x, A, A~): A x (erased pixels zeroed), x + sigma_n eps, or x; and the run's info.

    The naive baseline on masked data (loss edm) takes x = A x as it is, the erased pixels at 0."""
    data = read_image_zip(cfg.dataset)
    corr = cfg.corruption_spec
    images, a, a_tilde = corr.apply(data.as_float())
    n, c, h, _ = images.shape
    info = {
        "channels": c,
        "resolution": h,
        "num_images": n,
        "dataset_sha256": sha256_file(cfg.dataset),
        "corruption_name": corr.name,
    }
    return (images, a, a_tilde), info


def _resume(
    cfg: TrainConfig, run_dir: Path, info: dict, state: tuple, dev: torch.device, rank: int, progress: bool
) -> int:
    """Load (model, ema, optimizer) from the run's latest checkpoint at or before `steps`; its step (0 if none).

    Also removes the temporary files of a kill mid-write, and (rank 0) the log lines past that step.
    """
    model, ema, optimizer = state
    start = 0
    if rank == 0:
        for stale in run_dir.glob(".checkpoint-*.tmp"):  # left by a kill mid-write
            stale.unlink()
    # A step's state does not depend on the total step count (constant LR after warm-up, EMA by
    # step), so the latest checkpoint at or before `steps` is exactly this run's state there; a
    # later one (a longer run in the same directory) is never returned under this run's label.
    ckpts = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) <= cfg.steps]
    if ckpts:
        ckpt = load_checkpoint(ckpts[-1], map_location=dev, hint="delete it to resume from the checkpoint before it")
        _check_resumable(ckpts[-1], ckpt, cfg, info)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start = ckpt["step"]
        if rank == 0:  # always, also under --quiet: a log should say where a retried job picked up
            (tqdm.write if progress else _log_line)(f"resuming from {ckpts[-1]} at step {start}")
    if rank == 0:
        _truncate_log(run_dir / "train_log.jsonl", start)
    return start


def _distributed(model: EDMPrecond, dev: torch.device, world: int) -> torch.nn.Module:
    """The model the loss calls: `model` itself, or (under torchrun) its DistributedDataParallel wrapper."""
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # buffers are constants (the embedding's frequencies): nothing to broadcast per forward
    return DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None, broadcast_buffers=False)


class Diverged(ValueError):
    """Training produced a non-finite loss or weights: it stops there and saves nothing more, so the
    run directory's checkpoints are all from before (a rerun resumes from the last of them)."""

    def __init__(self, run_dir: Path, step: int, what: str):
        ckpts = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) < step]
        last = f"the last good checkpoint is {ckpts[-1]}" if ckpts else f"no checkpoint was saved in {run_dir}"
        super().__init__(
            f"training diverged at step {step}: {what}; nothing was saved from it ({last}). Lower "
            "training.lr or raise warmup_steps, or check the data, then delete the run directory to retrain"
        )


def _check_finite_weights(run_dir: Path, step: int, model: EDMPrecond, ema: EDMPrecond) -> None:
    """Raise Diverged if any weight of the model or its EMA is NaN or infinite (before saving them)."""
    for prefix, net in (("model", model), ("ema", ema)):
        for name, param in net.named_parameters():
            if not torch.isfinite(param).all():
                raise Diverged(run_dir, step, f"{prefix} weight {name} is not finite")


def _log_line(text: str) -> None:
    print(text, flush=True)


class _TrainLog:
    """Every `log_every` steps (and the last): the mean loss since the last line (over all ranks),
    the learning rate and img/s, appended to train_log.jsonl by rank 0."""

    def __init__(self, cfg: TrainConfig, path: Path, dev: torch.device, world: int, rank: int):
        self.cfg, self.path, self.dev, self.world, self.rank = cfg, path, dev, world, rank
        self.running, self.t0, self.seen = 0.0, time.perf_counter(), 0

    def add(self, loss: float, done: int, optimizer, bar) -> None:
        self.running += loss
        self.seen += 1
        if not (done % self.cfg.log_every == 0 or done == self.cfg.steps):
            return
        if self.world > 1:
            self.running = _mean_over_ranks(self.running, self.dev)
        if self.rank == 0:
            elapsed = time.perf_counter() - self.t0
            rec = {
                "step": done,
                "loss": self.running / self.seen,
                "lr": optimizer.param_groups[0]["lr"],
                "img_per_s": self.seen * self.cfg.batch_size / max(elapsed, 1e-9),
            }
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['img_per_s']:.0f}")
            if bar.disable:  # no bar (--quiet, or not a terminal): the same as a plain line for the job's log
                _log_line(
                    f"step {done}/{self.cfg.steps} loss {rec['loss']:.4f} lr {rec['lr']:.3g} "
                    f"{rec['img_per_s']:.0f} img/s"
                )
        self.running, self.seen, self.t0 = 0.0, 0, time.perf_counter()


def _save_snapshot(
    run_dir: Path, model: EDMPrecond, ema: EDMPrecond, optimizer, done: int, cfg: TrainConfig, info: dict
) -> None:
    """checkpoint-<done>.pt, keeping this run's `keep_checkpoints` latest (a longer run's later ones stay)."""
    save_checkpoint(run_dir / f"checkpoint-{done:07d}.pt", model, ema, optimizer, done, cfg, info)
    mine = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) <= done]
    for old in mine[: -cfg.keep_checkpoints]:
        old.unlink()


def build_training(
    cfg: TrainConfig, channels: int, resolution: int, dev: torch.device
) -> tuple[EDMPrecond, EDMPrecond, torch.optim.Optimizer]:
    """The network (initialised from torch's global RNG), its EMA copy and the optimizer."""
    model = build_model(
        channels,
        resolution,
        masked=cfg.masked_network,
        formulation=cfg.formulation,
        config=UNetConfig(**cfg.network),
    )
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # fused Adam: one kernel for all parameters (on CPU the default is a per-parameter loop)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    return model, ema, optimizer


@dataclass
class StepSetup:
    """What a training step needs besides the weights: the batch sampler, this process's positions in
    every global batch, the loss and the autocast context. The trainer and the benchmark build it here."""

    sampler: BatchSampler
    positions: range
    loss_fn: EDMLoss
    autocast: torch.autocast


def step_setup(cfg: TrainConfig, num_images: int, dev: torch.device, rank: int = 0, world: int = 1) -> StepSetup:
    local = cfg.batch_size // world
    positions = range(rank * local, (rank + 1) * local)  # this process's slice of every global batch
    return StepSetup(
        BatchSampler(num_images, cfg.batch_size, cfg.seed),
        positions,
        make_loss(cfg),
        torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"),
    )


def loss_rng(seed: int, step: int, positions: range, device: str | torch.device = "cpu") -> SampleRNG:
    """The loss's random draws of step `step`: one stream per sample position of the global batch."""
    return SampleRNG(seed, step, _STREAM_LOSS, positions, device)


def batch_at(
    cfg: TrainConfig, sampler: BatchSampler, step: int, positions: range, observations: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """This process's slice of step `step`'s batch of (x, A, A~): seeded order, optional x-flip, and
    for further_draw="step" A~ = A * B with B drawn for (seed, step, batch position), so a step's
    masks do not depend on how the batch is split across processes."""
    idx = sampler.indices(step)[positions.start : positions.stop]
    x, m, mt = (t[idx] for t in observations)
    if cfg.xflip:  # flip the observation with its masks, so no hidden pixel is revealed
        flip = torch.rand(cfg.batch_size, generator=generator(cfg.seed, step, _STREAM_LOSS + 1)) < 0.5
        flip = flip[positions.start : positions.stop].to(x.device)[:, None, None, None]
        x, m, mt = (torch.where(flip, t.flip(-1), t) for t in (x, m, mt))
    corruption = cfg.corruption_spec
    # a new B for every (step, batch position); the naive baseline's plain EDM loss never looks at it
    if cfg.further_draw == "step" and corruption.masked and cfg.masked_network:
        mt = corruption.redraw_further(m, [generator(cfg.seed, step, _STREAM_FURTHER, pos) for pos in positions])
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, m, mt


def train_step(
    cfg: TrainConfig,
    net: torch.nn.Module,
    model: EDMPrecond,
    ema: EDMPrecond,
    optimizer,
    loss_fn,
    batch: tuple[torch.Tensor, ...],
    step: int,
    positions: range,
    autocast,
) -> torch.Tensor:
    """One optimizer step: loss (under `autocast`), backward, clipping, warm-up LR, Adam, EMA.

    `net` is the model the loss calls (`model` itself, or its DDP wrapper); the loss's draws come
    from (seed, step, sample position), so a step does not depend on how the batch is split.
    Returns the batch's mean loss (detached).
    """
    x, m, mt = batch
    g = loss_rng(cfg.seed, step, positions, x.device)
    with autocast:
        loss = loss_fn(net, x, g, mask=m, further_mask=mt).sum() / len(x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    optimizer.step()
    _ema_update(ema, model, step, cfg.ema_decay)
    return loss.detach()


def _mean_over_ranks(value: float, dev: torch.device) -> float:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def _check_resumable(path: Path, state: dict, cfg: TrainConfig, info: dict) -> None:
    old = recorded_config(state)
    differ = [k for k in _RESUME_KEYS if old.get(k) != getattr(cfg, k)]
    if differ:
        what = ", ".join(f"{k}={old.get(k)!r} there, {getattr(cfg, k)!r} here" for k in differ)
        raise ValueError(
            f"{path}: this run directory holds a run with other settings ({what}); only `steps` "
            f"may change on resume. Use another --run-dir, or delete {path.parent} to start afresh"
        )
    if state["info"].get("dataset_sha256") != info["dataset_sha256"]:
        raise ValueError(
            f"{path}: was trained on another dataset file than {cfg.dataset}; "
            f"use another run directory or delete {path.parent}"
        )


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (they belong to work the kill threw away)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a torn last line: the kill came mid-append
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON; fix or delete that line to resume") from None
        if rec.get("step", 0) <= step:
            keep.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))

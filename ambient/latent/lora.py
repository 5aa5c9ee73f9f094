"""LoRA fine-tuning of the SDXL UNet on noisy latents with the latent Tweedie loss, resumable.

Reproduces ambient-tweedie `train_text_to_image_lora_sdxl.py` run with `configs/train_low_level.yaml`
(LoRA on the UNet's attention projections, lr 1e-4, batch 2, resolution 1024, 3000 FFHQ images,
`timestep_nature` t_n = 100, `x0_pred`, consistency coefficient 0):

- every training image is encoded once by the frozen VAE (posterior mean times scaling_factor) and
  noised once to t_n with noise fixed per image (seeded by (noise_seed, image index)):
  x_n = sqrt(abar_n) z0 + sqrt(1 - abar_n) eps. The trainer holds x_n only, never z0.
- each step draws a batch (epoch permutations seeded by (seed, epoch), ambient.utils.BatchSampler),
  t uniform in [t_n, T) and eta from a generator seeded by (seed, step), and minimises
  ambient.latent.tweedie.LatentTweedieLoss: the UNet's epsilon turned into x0, mapped to the
  prediction of x_n, plain MSE.
- peft `LoraConfig(r, lora_alpha=r, init_lora_weights="gaussian", target_modules=[to_k, to_q, to_v,
  to_out.0])` added with `unet.add_adapter`, as diffusers' SDXL LoRA script; LoRA parameters in fp32.
- a fixed prompt (config) and SDXL's add_time_ids for (resolution, resolution, 0, 0, resolution, resolution).

Checkpoints (run_dir/checkpoint-XXXXXXX.pt) hold the adapter weights only, the optimizer state, the
step and the seeds (every random draw of a step comes from generators seeded by (seed, step), so the
step is the whole RNG state); written atomically, loaded with torch.load(weights_only=True). A run
killed at any point resumes from its last checkpoint and ends bit for bit where an uninterrupted one
ends. Differences from the official script: the VAE posterior mean instead of a sample per step, the
no EMA, no gradient accumulation. The optional consistency term (`consistency_weight`, the official
`consistency_coeff`, 0 in the shipped config) is ambient.latent.tweedie's, from the Tweedie term's
(x_t, t) (`consistency_everywhere`, the official `run_consistency_everywhere`) or from (x_n, t_n); it
costs a no-grad UNet pass and two passes with gradients per image.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..utils import BatchSampler, atomic_path, generator, run_dir_lock, sha256_file
from .tweedie import LatentTweedieLoss

FORMAT = "ambient-sdxl-lora-v1"
TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
_STREAM_NOISE, _STREAM_STEP, _STREAM_INIT = 11, 12, 13


@dataclass
class LoraTrainConfig:
    dataset: str
    t_n: int = 100
    steps: int = 1000
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-2
    rank: int = 4
    grad_clip: float = 1.0
    seed: int = 0
    noise_seed: int = 0
    prompt: str = "a photo of a face"
    precision: str = "fp32"
    checkpoint_every: int = 100
    log_every: int = 10
    keep_checkpoints: int = 2
    consistency_weight: float = 0.0
    consistency_everywhere: bool = True  # official run_consistency_everywhere (shipped: True)
    max_steps_diff: int = 100  # official max_steps_diff
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.consistency_weight < 0:
            raise ValueError(
                f"consistency_weight={self.consistency_weight} must be >= 0 (0: the Tweedie term only, "
                "as the official shipped config)"
            )
        for key in ("steps", "batch_size", "rank", "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        for key, value in asdict(self).items():  # NaN passes every comparison above: refuse it by name
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{key}={value} must be a finite number")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError(f"grad_clip={self.grad_clip} and weight_decay={self.weight_decay} must be >= 0")


def add_lora(unet, rank: int, seed: int) -> list[torch.nn.Parameter]:
    """Add the LoRA adapter (seeded init); only its parameters train, in fp32."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    torch.manual_seed(generator(seed, _STREAM_INIT).initial_seed())
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def lora_state(unet) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_state(unet, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    res = set_peft_model_state_dict(unet, state)
    unexpected = getattr(res, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"adapter weights do not fit this UNet ({len(unexpected)} unexpected tensors)")


def _load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable SDXL LoRA file ({e.__class__.__name__}); train it again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not an ambient SDXL LoRA file (format {state.get('format') if isinstance(state, dict) else '?'})"
        )
    return state


def load_adapter(path: str | os.PathLike) -> dict:
    """The final adapter file of `sdxl-train` (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LoRA adapter not found (run `ambient sdxl-train`)")
    return _load(path)


def _save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("checkpoint-[0-9]*.pt"))


def fixed_noise(shape: tuple, n: int, noise_seed: int) -> torch.Tensor:
    """eps_i for image i, from a generator seeded by (noise_seed, i): fixed per image."""
    return torch.stack([torch.randn(shape, generator=generator(noise_seed, _STREAM_NOISE, i)) for i in range(n)])


def train_lora(
    cfg: LoraTrainConfig,
    model_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Path:
    run_dir, out = Path(run_dir), Path(out)
    with run_dir_lock(run_dir):
        for stale in run_dir.glob(".checkpoint-*.tmp"):
            stale.unlink()
        # Load the model and the dataset: the trainer holds the noisy latents x_n only.
        m, loss_fn, x_n, res = _noisy_latents(cfg, model_dir, device)
        cond = m.condition(cfg.prompt, res)

        # Construct the adapter and its optimizer; resume them from this run's latest checkpoint.
        params = add_lora(m.unet, cfg.rank, cfg.seed)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        info = {
            "model": str(model_dir),
            "dataset_sha256": sha256_file(cfg.dataset),
            "num_images": len(x_n),
            "resolution": res,
            "latent_shape": list(x_n.shape[1:]),
        }
        start = _resume(cfg, run_dir, info, m.unet, opt)

        # Train.
        log_path = run_dir / "train_log.jsonl"
        sampler = BatchSampler(len(x_n), cfg.batch_size, cfg.seed)
        kill_at = int(os.environ.get("AMBIENT_KILL_AT_STEP", "-1"))  # tests: a real SIGKILL mid-run
        autocast = torch.autocast(m.device.type, dtype=m.dtype, enabled=m.dtype != torch.float32)
        eps_model = m.eps_model(cond)
        m.unet.train()
        t0 = time.perf_counter()
        for step in range(start, cfg.steps):
            x = x_n[sampler.indices(step)].to(m.device)
            loss = lora_step(cfg, eps_model, loss_fn, x, step, params, opt, autocast)

            # Stop at a non-finite loss (nothing more is saved); log; save a snapshot.
            done = step + 1
            value = loss.item()
            if not math.isfinite(value):
                raise ValueError(
                    f"sdxl-train diverged at step {done}: the loss is {value}; nothing was saved from it "
                    f"(the checkpoints in {run_dir} are from before). Lower --lr, then delete {run_dir} to retrain"
                )
            if done % cfg.log_every == 0 or done == cfg.steps:
                _log_step(cfg, log_path, done, loss, t0, progress)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                _save_snapshot(run_dir, done, cfg, info, m.unet, opt)
            if done == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        # Done.
        _save_adapter(out, cfg, info, m.unet)
    return out


def _log_step(cfg: LoraTrainConfig, log_path: Path, done: int, loss: torch.Tensor, t0: float, progress: bool) -> None:
    """Append step `done`'s loss (and the seconds since t0) to the train log; print it if `progress`."""
    with open(log_path, "a") as f:
        f.write(json.dumps({"step": done, "loss": loss.item(), "s": time.perf_counter() - t0}) + "\n")
    if progress:
        print(f"step {done}/{cfg.steps} loss {loss.item():.4f}", flush=True)


def _save_adapter(out: Path, cfg: LoraTrainConfig, info: dict, unet) -> None:
    """The finished adapter (no optimizer state) at `out`."""
    _save(
        out,
        {
            "format": FORMAT,
            "step": cfg.steps,
            "config": asdict(cfg),
            "info": info,
            "lora": lora_state(unet),
            "rank": cfg.rank,
            "target_modules": TARGET_MODULES,
        },
    )


def _noisy_latents(cfg: LoraTrainConfig, model_dir, device) -> tuple:
    """(SDXL, loss, x_n, resolution): every image encoded once and noised once to t_n (z0 is dropped)."""
    from ..data import read_image_zip
    from .models import SDXL, check_timestep

    m = SDXL(model_dir, device, cfg.precision)
    check_timestep("t_n", cfg.t_n, m.T - 1)
    data = read_image_zip(cfg.dataset)
    if data.channels != 3:
        raise ValueError(f"{cfg.dataset}: SDXL trains on RGB images, this zip is {data.channels}-channel")
    z0 = m.encode(data.images).cpu()
    loss_fn = LatentTweedieLoss(
        m.alphas_cumprod, cfg.t_n, cfg.consistency_weight, cfg.consistency_everywhere, cfg.max_steps_diff
    )
    x_n = loss_fn.noisy_latents(z0.double(), fixed_noise(tuple(z0.shape[1:]), len(z0), cfg.noise_seed).double()).float()
    return m, loss_fn, x_n, data.resolution


def _resume(cfg: LoraTrainConfig, run_dir: Path, info: dict, unet, opt) -> int:
    """Load the adapter and optimizer of the run's latest checkpoint at or before `steps`; its step (0 if none).
    Log lines past that step are dropped."""
    start = 0
    ckpts = [p for p in _checkpoints(run_dir) if int(p.stem.split("-")[1]) <= cfg.steps]
    if ckpts:
        st = _load(ckpts[-1])
        if st["config"] != asdict(cfg) or st["info"]["dataset_sha256"] != info["dataset_sha256"]:
            raise ValueError(f"{ckpts[-1]}: written by another configuration or dataset; use another run dir")
        load_lora_state(unet, st["lora"])
        opt.load_state_dict(st["optimizer"])
        start = int(st["step"])
    log_path = run_dir / "train_log.jsonl"
    if log_path.exists():
        keep = [
            ln
            for ln in log_path.read_text().splitlines()
            if ln.strip().endswith("}") and json.loads(ln)["step"] <= start
        ]
        log_path.write_text("".join(ln + "\n" for ln in keep))
    return start


def lora_step(
    cfg: LoraTrainConfig,
    eps_model,
    loss_fn: LatentTweedieLoss,
    x: torch.Tensor,
    step: int,
    params: list[torch.nn.Parameter],
    opt: torch.optim.Optimizer,
    autocast,
) -> torch.Tensor:
    """One AdamW step of the adapter on the batch x of noisy latents; the draws come from (seed, step)."""
    g = generator(cfg.seed, _STREAM_STEP, step)
    with autocast:
        loss = loss_fn(eps_model, x, generator=g).float().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    return loss


def _save_snapshot(run_dir: Path, done: int, cfg: LoraTrainConfig, info: dict, unet, opt) -> None:
    """checkpoint-<done>.pt, keeping this run's `keep_checkpoints` latest."""
    _save(
        run_dir / f"checkpoint-{done:07d}.pt",
        {
            "format": FORMAT,
            "step": done,
            "config": asdict(cfg),
            "info": info,
            "lora": lora_state(unet),
            "optimizer": opt.state_dict(),
            "rng": {"seed": cfg.seed, "noise_seed": cfg.noise_seed, "stream": "generator(seed, step)"},
        },
    )
    for old in [p for p in _checkpoints(run_dir) if int(p.stem.split("-")[1]) <= done][: -cfg.keep_checkpoints]:
        old.unlink()


def load_finetuned(model_dir, adapter_path, device="cpu", precision="fp32"):
    """The base model with a trained adapter added (for generation); returns (SDXL, adapter state)."""
    from .models import SDXL

    st = load_adapter(adapter_path)
    m = SDXL(model_dir, device, precision)
    add_lora(m.unet, st["rank"], 0)
    load_lora_state(m.unet, st["lora"])
    m.unet.eval()
    return m, st

"""Benchmark: training img/s and time for 256 samples on the embedded default.

    python -m ambient.bench [--steps 60] [--threads 2] [--variants plain,fp32,bf16,...]

Variants: plain (bare loop), fp32 (our step), bf16 (autocast), -cl (channels_last),
-compile (torch.compile).
Each training variant runs the real `ambient.training` step code path (loss, clipping, EMA)
for a few warm-up steps and then `--steps` timed steps; `plain` is a bare PyTorch loop of
the same network and loss (no EMA, clipping or seeded draws), the reference the issue
asks to compare with. Numbers go to stdout as a table and, with --json, to a file.

The roofline, measured in the same run: a large fp32 and a large bf16 GEMM give the machine's
practical peak; the training step's and the sampler's FLOPs (counted by
torch.utils.flop_counter) over their measured time give the achieved GFLOP/s, reported as a
fraction of the peak of their precision.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from .corruption import Corruption
from .data import embedded_faces
from .losses import AmbientLoss
from .networks import UNetConfig, build_model
from .readme_tables import cpu_model
from .sampling import generate
from .training import _BatchSampler, _ema_update
from .utils import SampleRNG


def _setup(variant: str):
    images, _ = embedded_faces()
    x = torch.from_numpy(images).float().div(127.5).sub(1)
    corr = Corruption("dust", p=0.5, delta=0.1)
    _, a, at = corr.apply(x)
    torch.manual_seed(0)
    model = build_model(1, 24, masked=True, config=UNetConfig())
    if "cl" in variant:
        model = model.to(memory_format=torch.channels_last)
    return x, a, at, model


def bench_train(variant: str, steps: int, warmup: int = 10, batch: int = 32) -> float:
    x, a, at, model = _setup(variant)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=variant != "plain")
    loss_fn = AmbientLoss("split")
    sampler = _BatchSampler(len(x), batch, 0)
    bf16 = "bf16" in variant
    step_model = torch.compile(model) if "compile" in variant else model

    def step(i):
        idx = sampler.indices(i)
        xb = x[idx]
        if "cl" in variant:
            xb = xb.contiguous(memory_format=torch.channels_last)
        if variant == "plain":
            sigma = (torch.randn(batch, 1, 1, 1) * 1.2 - 1.2).exp()
            n = torch.randn_like(xb) * sigma
            w = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
            d = model(at[idx] * (xb * a[idx] + n), sigma, at[idx])
            loss = (w * (a[idx] * (d - xb)) ** 2).sum() / batch
            opt.zero_grad()
            loss.backward()
            opt.step()
            return
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(step_model, xb, SampleRNG(0, i, 12, range(batch)), mask=a[idx], further_mask=at[idx]).sum() / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _ema_update(ema, model, i, 0.999)
        loss.item()

    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    return steps * batch / (time.perf_counter() - t0)


def bench_loss(name: str, steps: int, warmup: int = 5, batch: int = 32, precision: str = "bf16") -> float:
    """img/s of a full training step (bf16 autocast, clipping, Adam, EMA) of an unmasked network with
    the loss `name`: edm (the clean model's), tweedie (noisy data, sigma_n = 0.4, the Tweedie term on
    the whole batch) or tweedie+consistency (weight 0.1: two extra gradient passes and one no-grad pass
    per sample)."""
    from .losses import EDMLoss
    from .noisy import TweedieLoss

    images, _ = embedded_faces()
    x = torch.from_numpy(images).float().div(127.5).sub(1)
    torch.manual_seed(0)
    model = build_model(1, 24, masked=False, config=UNetConfig())
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = {"edm": EDMLoss(), "tweedie": TweedieLoss(0.4, 0.0),
               "tweedie+consistency": TweedieLoss(0.4, 0.1)}[name]
    sampler = _BatchSampler(len(x), batch, 0)

    def step(i):
        xb = x[sampler.indices(i)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(model, xb, SampleRNG(0, i, 12, range(batch))).sum() / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _ema_update(ema, model, i, 0.999)
        loss.item()

    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    return steps * batch / (time.perf_counter() - t0)


def gemm_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of a large square matrix product in `dtype`: the machine's practical peak."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def train_step_flops(batch: int = 32) -> float:
    """FLOPs of one training step of the embedded default's masked network (forward and backward),
    counted by torch.utils.flop_counter (convolutions, matrix products, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, a, at, model = _setup("fp32")
    loss_fn = AmbientLoss("split")
    with FlopCounterMode(display=False) as counter:
        loss = loss_fn(model, x[:batch], SampleRNG(0, 0, 12, range(batch)), mask=a[:batch], further_mask=at[:batch]).sum()
        loss.backward()
    return float(counter.get_total_flops())


def sample_flops(num: int = 256, num_steps: int = 18) -> float:
    """FLOPs of drawing `num` samples: 2 * num_steps - 1 network evaluations per sample (Heun)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, a, at, model = _setup("fp32")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1], torch.ones(1), at[:1])
    return float(counter.get_total_flops()) * num * (2 * num_steps - 1)


def bench_sample(num: int = 256, precision: str = "fp32") -> float:
    """Seconds for `num` samples (18 Heun steps, 35 network evaluations, one batch).
    fp32 is the plain-loop reference: the sampler adds nothing to the network calls."""
    x, a, at, model = _setup("fp32")
    corr = Corruption("dust", p=0.5, delta=0.1)
    t0 = time.perf_counter()
    generate(model, corr, num, 24, seed=0, batch_size=num, precision=precision, progress=False)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default="plain,fp32,bf16,fp32-cl,bf16-cl")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--sample-variants", default="fp32,bf16")
    p.add_argument("--losses", default="edm,tweedie,tweedie+consistency",
                   help="training step cost per loss (bf16), side by side; empty to skip")
    p.add_argument("--json", default=None)
    p.add_argument("--gemm-n", type=int, default=2048, help="size of the square GEMMs that measure the peak")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = {"cpu": cpu_model()}
    print(f"cpu: {rows['cpu']}, {a.threads} threads", flush=True)
    # the roofline: what this machine's matrix units do at best, measured in the same run
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rows[f"gemm[{name}] GFLOP/s"] = gemm_peak(dtype, a.gemm_n)
        print(f"gemm[{name}] {a.gemm_n}^3: {rows[f'gemm[{name}] GFLOP/s']:.0f} GFLOP/s", flush=True)
    rows["train step GFLOP"] = train_step_flops() / 1e9
    rows[f"sample {a.samples} GFLOP"] = sample_flops(a.samples) / 1e9
    print(f"one training step (batch 32): {rows['train step GFLOP']:.1f} GFLOP; {a.samples} samples: "
          f"{rows[f'sample {a.samples} GFLOP']:.0f} GFLOP", flush=True)

    def roofline(key: str, gflops: float, precision: str) -> None:
        peak = rows[f"gemm[{precision}] GFLOP/s"]
        rows[f"{key} GFLOP/s"] = gflops
        rows[f"{key} of {precision} peak"] = gflops / peak
        print(f"  {key}: {gflops:.0f} GFLOP/s = {gflops / peak:.0%} of the {precision} GEMM peak", flush=True)
    for v in a.variants.split(","):
        rows[f"train[{v}] img/s"] = bench_train(v, a.steps)
        print(f"train[{v}]: {rows[f'train[{v}] img/s']:.0f} img/s", flush=True)
        roofline(f"train[{v}]", rows[f"train[{v}] img/s"] / 32 * rows["train step GFLOP"],
                 "bf16" if "bf16" in v else "fp32")
    losses = [v for v in a.losses.split(",") if v]
    for v in losses:
        rows[f"loss[{v}] img/s"] = bench_loss(v, a.steps)
        ratio = rows[f"loss[{v}] img/s"] / rows[f"loss[{losses[0]}] img/s"]
        print(f"loss[{v}]: {rows[f'loss[{v}] img/s']:.0f} img/s ({1 / ratio:.2f}x the cost of a {losses[0]} step)",
              flush=True)
    for v in a.sample_variants.split(","):
        rows[f"sample[{v}] {a.samples} s"] = bench_sample(a.samples, v)
        print(f"sample[{v}] {a.samples}: {rows[f'sample[{v}] {a.samples} s']:.1f} s", flush=True)
        roofline(f"sample[{v}]", rows[f"sample {a.samples} GFLOP"] / rows[f"sample[{v}] {a.samples} s"], v)
    if a.json:
        from .utils import write_json

        write_json(a.json, {"threads": a.threads, "date": time.strftime("%Y-%m-%d"), **rows})


if __name__ == "__main__":
    main()

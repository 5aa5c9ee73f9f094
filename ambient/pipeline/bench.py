"""Benchmark: training img/s and time for 256 samples on the embedded default.

    python -m ambient.pipeline.bench [--steps 60] [--threads 2] [--variants plain,fp32,bf16,...]

Variants: plain (bare loop), fp32 (our step), bf16 (autocast), -cl (channels_last),
-compile (torch.compile).
Packing (`--packing`): Snakemake runs `threads_per_job` threads per job; two 1-thread jobs side
by side against one 2-thread job, for the training step, the plain loop and sampling (the two
phases that dominate the run), measured as the total throughput of two concurrent 1-thread processes.
Each training variant calls `ambient.training.train_step` on batches from `batch_at`, with the
sampler, loss and autocast of `step_setup`: the code that trains the models (loss, clipping,
warm-up, fused Adam, EMA), for a few warm-up steps
and then `--steps` timed steps; `plain` is a bare PyTorch loop of the same network and loss (no
EMA, clipping or seeded draws), the reference the issue asks to compare with. Resolution, network
and batch size are the embedded default's (config/config.yaml). Numbers go to stdout as a table
and, with --json, to a file.

The roofline, measured in the same run: a large fp32 and a large bf16 GEMM give the machine's
practical peak; the training step's and the sampler's FLOPs (counted by
torch.utils.flop_counter) over their measured time give the achieved GFLOP/s, reported as a
fraction of the peak of their precision.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..corruption import Corruption
from ..data import embedded_faces
from ..networks import UNetConfig, build_model
from ..sampling import generate
from ..training import TrainConfig, batch_at, build_training, loss_rng, make_loss, step_setup, train_step
from ..utils import uint8_to_signed
from .readme_tables import cpu_model

MASKED = Corruption("dust", p=0.5, delta=0.1)  # the masked model every training and sampling variant runs


def default_setup(config: str | None = "config/config.yaml") -> dict:
    """Resolution, network and batch size of the embedded default (config/config.yaml when present)."""
    setup = {"resolution": 16, "network": UNetConfig().to_dict(), "batch_size": 32}
    if config and Path(config).is_file():
        import yaml

        cfg = yaml.safe_load(Path(config).read_text())
        setup = {
            "resolution": cfg["dataset"]["resolution"],
            "batch_size": cfg["training"]["batch_size"],
            "network": {**setup["network"], **cfg["network"]},
        }
    return setup


def _observations(setup: dict, corruption: Corruption) -> tuple[torch.Tensor, ...]:
    images, _ = embedded_faces(100, setup["resolution"])
    return corruption.apply(uint8_to_signed(images))


def _train_config(
    setup: dict, corruption: Corruption, precision: str, channels_last: bool = False, consistency_weight: float = 0.0
) -> TrainConfig:
    return TrainConfig(
        dataset="(bench)",
        corruption=corruption.to_dict(),
        network=setup["network"],
        batch_size=setup["batch_size"],
        precision=precision,
        channels_last=channels_last,
        consistency_weight=consistency_weight,
    )


def _timed(step, steps: int, warmup: int) -> float:
    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    return time.perf_counter() - t0


def _bench_our_step(
    cfg: TrainConfig, observations: tuple[torch.Tensor, ...], steps: int, warmup: int, compile_model: bool = False
) -> float:
    """img/s of `ambient.training.train_step`, the step that trains the models, on batches from `batch_at`."""
    torch.manual_seed(0)
    dev = torch.device("cpu")
    res = observations[0].shape[-1]
    model, ema, optimizer = build_training(cfg, observations[0].shape[1], res, dev)
    net = torch.compile(model) if compile_model else model
    s = step_setup(cfg, len(observations[0]), dev)

    def step(i):
        batch = batch_at(cfg, s.sampler, i, s.positions, observations)
        train_step(cfg, net, model, ema, optimizer, s.loss_fn, batch, i, s.positions, s.autocast).item()

    return steps * cfg.batch_size / _timed(step, steps, warmup)


def bench_train(variant: str, steps: int, warmup: int = 10, setup: dict | None = None) -> float:
    """img/s of the masked (dust p=0.5) model's training step; `plain` is a bare fp32 loop."""
    setup = setup or default_setup()
    observations = _observations(setup, MASKED)
    if variant == "plain":
        return _bench_plain(setup, observations, steps, warmup)
    cfg = _train_config(setup, MASKED, "bf16" if "bf16" in variant else "fp32", channels_last="cl" in variant)
    return _bench_our_step(cfg, observations, steps, warmup, compile_model="compile" in variant)


def _bench_plain(setup: dict, observations: tuple[torch.Tensor, ...], steps: int, warmup: int) -> float:
    """The reference: the same network and ambient loss as a bare PyTorch loop (fp32, no EMA,
    clipping or seeded draws, per-parameter Adam), as a user would first write it."""
    x, a, at = observations
    batch = setup["batch_size"]
    torch.manual_seed(0)
    model = build_model(x.shape[1], x.shape[-1], masked=True, config=UNetConfig(**setup["network"]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(len(x))

    def step(i):
        idx = perm.roll(-i * batch)[:batch]
        xb = x[idx]
        sigma = (torch.randn(batch, 1, 1, 1) * 1.2 - 1.2).exp()
        n = torch.randn_like(xb) * sigma
        w = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
        d = model(at[idx] * (xb * a[idx] + n), sigma, at[idx])
        loss = (w * (a[idx] * (d - xb)) ** 2).sum() / batch
        opt.zero_grad()
        loss.backward()
        opt.step()

    return steps * batch / _timed(step, steps, warmup)


def bench_loss(name: str, steps: int, warmup: int = 5, precision: str = "bf16", setup: dict | None = None) -> float:
    """img/s of our training step of an unmasked network with the loss `name`: edm (the clean
    model's), tweedie (noisy data, sigma_n = 0.4, the Tweedie term on the whole batch) or
    tweedie+consistency (weight 0.1: two extra gradient passes and one no-grad pass per sample)."""
    setup = setup or default_setup()
    corr = Corruption() if name == "edm" else Corruption("noise", sigma_n=0.4)
    cfg = _train_config(setup, corr, precision, consistency_weight=0.1 if "consistency" in name else 0.0)
    return _bench_our_step(cfg, _observations(setup, corr), steps, warmup)


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


def _masked_model(setup: dict):
    x, a, at = _observations(setup, MASKED)
    torch.manual_seed(0)
    return x, a, at, build_model(x.shape[1], x.shape[-1], masked=True, config=UNetConfig(**setup["network"]))


def train_step_flops(setup: dict | None = None) -> float:
    """FLOPs of one training step of the embedded default's masked network (forward and backward),
    counted by torch.utils.flop_counter (convolutions, matrix products, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    setup = setup or default_setup()
    batch = setup["batch_size"]
    x, a, at, model = _masked_model(setup)
    cfg = _train_config(setup, MASKED, "fp32")
    loss_fn = make_loss(cfg)
    with FlopCounterMode(display=False) as counter:
        g = loss_rng(cfg.seed, 0, range(batch))
        loss = loss_fn(model, x[:batch], g, mask=a[:batch], further_mask=at[:batch]).sum()
        loss.backward()
    return float(counter.get_total_flops())


def sample_flops(num: int = 256, num_steps: int = 18, setup: dict | None = None) -> float:
    """FLOPs of drawing `num` samples: 2 * num_steps - 1 network evaluations per sample (Heun)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, a, at, model = _masked_model(setup or default_setup())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1], torch.ones(1), at[:1])
    return float(counter.get_total_flops()) * num * (2 * num_steps - 1)


def bench_sample(num: int = 256, precision: str = "fp32", setup: dict | None = None) -> float:
    """Seconds for `num` samples (18 Heun steps, 35 network evaluations, one batch).
    fp32 is the plain-loop reference: the sampler adds nothing to the network calls."""
    x, a, at, model = _masked_model(setup or default_setup())
    t0 = time.perf_counter()
    generate(model, MASKED, num, x.shape[-1], seed=0, batch_size=num, precision=precision, progress=False)
    return time.perf_counter() - t0


def _one(kind: str, steps: int, samples: int, setup: dict) -> float:
    """One throughput in this process: training img/s (our bf16 step, or the plain fp32 loop) or
    samples/s (bf16 sampler)."""
    if kind in ("train", "plain"):
        return bench_train("bf16" if kind == "train" else "plain", steps, setup=setup)
    return samples / bench_sample(samples, "bf16", setup=setup)


def bench_packing(kind: str, steps: int, samples: int, config: str | None, jobs: int = 2) -> float:
    """Total throughput of `jobs` concurrent 1-thread processes (the same work each)."""
    cmd = [
        sys.executable,
        "-m",
        "ambient.pipeline.bench",
        "--single",
        kind,
        "--threads",
        "1",
        "--steps",
        str(steps),
        "--samples",
        str(samples),
        "--config",
        config or "",
    ]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a packing worker failed: {' '.join(cmd)}")
    return sum(json.loads(o.strip().splitlines()[-1])["throughput"] for o in outs)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default="plain,fp32,bf16,fp32-cl,bf16-cl")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--sample-variants", default="fp32,bf16")
    p.add_argument(
        "--losses",
        default="edm,tweedie,tweedie+consistency",
        help="training step cost per loss (bf16), side by side; empty to skip",
    )
    p.add_argument(
        "--packing",
        action="store_true",
        help="also measure two concurrent 1-thread jobs against one job with --threads threads",
    )
    p.add_argument(
        "--single", choices=["train", "plain", "sample"], default=None, help=argparse.SUPPRESS
    )  # a packing worker
    p.add_argument("--json", default=None)
    p.add_argument("--gemm-n", type=int, default=2048, help="size of the square GEMMs that measure the peak")
    p.add_argument(
        "--config",
        default="config/config.yaml",
        help="resolution, network and batch size come from this config (if the file exists)",
    )
    return p


def _roofline(rows: dict, key: str, gflops: float, precision: str) -> None:
    peak = rows[f"gemm[{precision}] GFLOP/s"]
    rows[f"{key} GFLOP/s"] = gflops
    rows[f"{key} of {precision} peak"] = gflops / peak
    print(f"  {key}: {gflops:.0f} GFLOP/s = {gflops / peak:.0%} of the {precision} GEMM peak", flush=True)


def _peaks(a: argparse.Namespace, setup: dict) -> dict:
    """The machine and the roofline: what its matrix units do at best, and the FLOPs of a step and of sampling."""
    batch = setup["batch_size"]
    rows = {"cpu": cpu_model(), "resolution": setup["resolution"], "batch_size": batch}
    print(
        f"cpu: {rows['cpu']}, {a.threads} threads; {setup['resolution']}x{setup['resolution']}, batch {batch}",
        flush=True,
    )
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rows[f"gemm[{name}] GFLOP/s"] = gemm_peak(dtype, a.gemm_n)
        print(f"gemm[{name}] {a.gemm_n}^3: {rows[f'gemm[{name}] GFLOP/s']:.0f} GFLOP/s", flush=True)
    rows["train step GFLOP"] = train_step_flops(setup) / 1e9
    rows[f"sample {a.samples} GFLOP"] = sample_flops(a.samples, setup=setup) / 1e9
    print(
        f"one training step (batch {batch}): {rows['train step GFLOP']:.1f} GFLOP; {a.samples} samples: "
        f"{rows[f'sample {a.samples} GFLOP']:.0f} GFLOP",
        flush=True,
    )
    return rows


def _throughputs(a: argparse.Namespace, setup: dict, rows: dict) -> None:
    """Training img/s per variant and per loss, and seconds per sample variant, into `rows`."""
    for v in a.variants.split(","):
        rows[f"train[{v}] img/s"] = bench_train(v, a.steps, setup=setup)
        print(f"train[{v}]: {rows[f'train[{v}] img/s']:.0f} img/s", flush=True)
        _roofline(
            rows,
            f"train[{v}]",
            rows[f"train[{v}] img/s"] / setup["batch_size"] * rows["train step GFLOP"],
            "bf16" if "bf16" in v else "fp32",
        )
    losses = [v for v in a.losses.split(",") if v]
    for v in losses:
        rows[f"loss[{v}] img/s"] = bench_loss(v, a.steps, setup=setup)
        ratio = rows[f"loss[{v}] img/s"] / rows[f"loss[{losses[0]}] img/s"]
        print(
            f"loss[{v}]: {rows[f'loss[{v}] img/s']:.0f} img/s ({1 / ratio:.2f}x the cost of a {losses[0]} step)",
            flush=True,
        )
    for v in a.sample_variants.split(","):
        rows[f"sample[{v}] {a.samples} s"] = bench_sample(a.samples, v, setup=setup)
        print(f"sample[{v}] {a.samples}: {rows[f'sample[{v}] {a.samples} s']:.1f} s", flush=True)
        _roofline(rows, f"sample[{v}]", rows[f"sample {a.samples} GFLOP"] / rows[f"sample[{v}] {a.samples} s"], v)


def _packing(a: argparse.Namespace, setup: dict, rows: dict) -> None:
    # plain packed too: the DAG's training throughput (two 1-thread bf16 jobs) against the plain
    # loop both as a user first runs it (one process, all threads) and packed the same way
    for kind, unit in (("train", "img/s"), ("plain", "img/s"), ("sample", "samples/s")):
        one = _one(kind, a.steps, a.samples, setup)
        two = bench_packing(kind, a.steps, a.samples, a.config)
        rows[f"packing[{kind}] 1 job x {a.threads} threads {unit}"] = one
        rows[f"packing[{kind}] 2 jobs x 1 thread {unit}"] = two
        print(
            f"packing[{kind}]: 1 job x {a.threads} threads {one:.0f} {unit}, 2 jobs x 1 thread {two:.0f} {unit} "
            f"({two / one:.2f}x)",
            flush=True,
        )


def main(argv=None) -> None:
    a = _parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    setup = default_setup(a.config or None)
    if a.single:
        print(json.dumps({"throughput": _one(a.single, a.steps, a.samples, setup)}))
        return
    rows = _peaks(a, setup)
    _throughputs(a, setup, rows)
    if a.packing:
        _packing(a, setup, rows)
    if a.json:
        from ..utils import write_json

        write_json(a.json, {"threads": a.threads, "date": time.strftime("%Y-%m-%d"), **rows})


if __name__ == "__main__":
    main()

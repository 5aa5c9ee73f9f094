"""Memorization attacks on any checkpoint, clean or ambient: inpainting, noise and mask key.

Both start from a training image x0 (in [-1, 1]), corrupt it, let the model restore it, and
compare the restoration with x0 and with the most similar *other* training image, by the
per-image centred pixel cosine (`neighbors.pixel_features`): on the whole image, and on the
region the attack destroyed (the erased pixels; all pixels for the noise attack).
An image counts as *extracted* when its region similarity to x0 exceeds `threshold` (0.95)
AND exceeds its region similarity to every other training image.

Inpainting (`kind="inpaint"`): a known-pixel mask K (1 = kept) erases either a centred (or
seeded random) square covering `fraction` of the image (`erase="box"`) or each pixel with
probability `fraction` (`erase="pixels"`, shared across channels). The completion integrates
the EDM probability-flow ODE (Heun, `num_steps`, sigma_max -> 0) from x_T = K x0 + sigma_max eps
with the denoiser replaced on known pixels by the original:
    D'(x, sigma) = K x0 + (1 - K) D(x, sigma),
so along the ODE the known pixels stay x0 + sigma * noise: the replacement method of Song et
al. (2021) / RePaint in its ODE form. With resampling U > 1 every step is redone U times, going
back from t_next to t_cur with fresh noise sqrt(t_cur^2 - t_next^2) xi in between (RePaint's
resampling with jump length 1), which lets the unknown region agree with the known one.
`resample` lists the U to run (default 1 and 5): each is its own method, inpaint_u<U>, and the
largest is the primary one.
Every model gets the same attack: the same known pixels K, the same starting noise, the same
sampler and budget. D is each model's own unconditional denoiser, exactly as its sampler uses it:
  - clean and noise models: D(x, sigma) = model(x, sigma);
  - ambient models: D(x, sigma) = clip(model(x, sigma, A~), -1, 1) with A~ drawn fresh from the
    model's own training distribution of A * B (one fixed mask per image, from the sampling
    streams: never the image's training mask). The model sees the iterate through A~, known and
    completed pixels alike, as during training and sampling; K reaches it only through the
    replacement, as for the clean model. (Giving it A~ = K instead would feed it a mask density
    far outside its training distribution: K keeps 1 - `fraction` of the pixels, A~ keeps
    (1 - p)(1 - delta) of them; the README's results give the runs' values.)
At sigma = 0 the known pixels are x0 and the erased ones come from the model.

Noise (`kind="noise"`): x_sigma = x0 + sigma eps (default sigma = 2.0 on [-1, 1] images), then
  - "onestep": x0_hat = D(x_sigma, sigma) (Tweedie's estimate),
  - "sample": Heun from sigma down to 0 (edm_sigmas with sigma_max = sigma).
  Ambient models were trained with masks A~ ~ A * B and never with a full mask, so their
  principal result uses A~ drawn from their corruption's sampling distribution (one fixed mask
  per image, from a seed derived from the attack seed, never the image's training mask); the
  same two methods with A~ = ones are reported as "onestep_ones" / "sample_ones" (in-domain
  pixels, out-of-distribution mask). Outputs of ambient models are clipped to [-1, 1].

Mask key (`kind="key"`): sample from pure noise, the starting noise of image i, as the sampler
does (Heun from sigma_max), and score the sample against training image i. An ambient model gets
  - "key_train": A~ = image i's own training mask A * B (what an attacker holding the corrupted
    training set knows: the mask is visible in the released data),
  - "key_fresh": a fresh A~ of the same law (the control; the sampler's masks).
Unmasked models have no key, so their one method "key_none" is the chance level of sample i
landing on image i. This is not an attack of the papers: it measures whether a model trained on
masked data recognizes a training image from its mask alone and returns it (docs/design.md, The mask is
a key); the papers' sampler draws fresh masks and so measures "key_fresh" only.

Models trained on noisy data (kind "noise") stop at their sigma_n and take one x0 step there
(as `sampling.generate`). Every random draw comes from `utils.generator(seed, image index,
stream)`: results do not depend on the batch size or on which images are attacked together.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..corruption import Corruption
from ..layout import ATTACK_KINDS
from ..sampling import edm_sigmas, heun_sample, model_denoiser, to_uint8
from ..settings import PRECISIONS
from ..utils import derive_seed, generator, uint8_to_signed
from .neighbors import THRESHOLDS, pixel_features

ERASE = ("box", "pixels")
_STREAM_ERASE, _STREAM_NOISE, _STREAM_MASK, _STREAM_RESAMPLE = 101, 102, 103, 104


@dataclass
class AttackConfig:
    kind: str = "inpaint"
    erase: str = "pixels"  # inpaint: box | pixels
    fraction: float = 0.8  # inpaint: share of pixels erased
    position: str = "center"  # inpaint box: center | random
    sigma: float = 2.0  # noise: noise level on [-1, 1] images
    num_steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 80.0  # inpaint: start of the ODE
    rho: float = 7.0
    resample: tuple = (1, 5)  # inpaint: RePaint resampling per step, one method each (1 = none)
    threshold: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"attack kind {self.kind!r} is unknown: use one of {', '.join(ATTACK_KINDS)}")
        if self.erase not in ERASE:
            raise ValueError(f"erase {self.erase!r} is unknown: use box or pixels")
        if self.position not in ("center", "random"):
            raise ValueError(f"position {self.position!r} is unknown: use center or random")
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"fraction={self.fraction} must lie in (0, 1)")
        if self.sigma <= self.sigma_min:
            raise ValueError(f"sigma={self.sigma} must exceed sigma_min={self.sigma_min}")
        self.resample = tuple(int(u) for u in ((self.resample,) if isinstance(self.resample, int) else self.resample))
        if not self.resample or min(self.resample) < 1 or len(set(self.resample)) != len(self.resample):
            raise ValueError(f"resample={self.resample}: give distinct integers >= 1 (1 = no resampling)")
        self.resample = tuple(sorted(self.resample))
        if self.num_steps < 1:
            raise ValueError(f"num_steps={self.num_steps} must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- corruptions


def erase_mask(
    index: int, resolution: int, erase: str = "pixels", fraction: float = 0.8, seed: int = 0, position: str = "center"
) -> torch.Tensor:
    """Known-pixel mask K (1, H, W) of training image `index`: 1 = kept, 0 = erased."""
    if erase == "pixels":
        g = generator(seed, index, _STREAM_ERASE)
        return (torch.rand(1, resolution, resolution, generator=g) >= fraction).float()
    side = min(resolution, max(1, round(math.sqrt(fraction) * resolution)))
    if position == "center":
        top = left = (resolution - side) // 2
    else:
        g = generator(seed, index, _STREAM_ERASE)
        top, left = (int(v) for v in torch.randint(0, resolution - side + 1, (2,), generator=g))
    mask = torch.ones(1, resolution, resolution)
    mask[:, top : top + side, left : left + side] = 0
    return mask


def _noise(seed: int, indices, shape) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=generator(seed, int(i), _STREAM_NOISE)) for i in indices])


def _schedule(corruption: Corruption | None, sigma_max: float, cfg: AttackConfig) -> tuple[torch.Tensor, bool]:
    """EDM steps from sigma_max; for noise-trained models they end at sigma_n (then one x0 step)."""
    if corruption is not None and corruption.kind == "noise":
        lo = max(cfg.sigma_min, corruption.sigma_n)
        if sigma_max <= lo:
            raise ValueError(f"attack sigma {sigma_max} must exceed the model's training noise sigma_n={lo}")
        return edm_sigmas(cfg.num_steps, lo, sigma_max, cfg.rho)[:-1], True
    return edm_sigmas(cfg.num_steps, cfg.sigma_min, sigma_max, cfg.rho), False


def _denoiser(model, mask: torch.Tensor | None):
    masked = bool(getattr(model, "masked", False))
    return model_denoiser(model, mask if masked else None, clip=masked)


# ---------------------------------------------------------------- restorations


@torch.no_grad()
def inpaint(
    model,
    x0: torch.Tensor,
    known: torch.Tensor,
    indices,
    cfg: AttackConfig,
    corruption: Corruption | None = None,
    resample: int = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Complete the erased pixels of x0 (N, C, H, W in [-1, 1]); known (N, 1, H, W), 1 = kept.
    `mask`: the ambient model's own A~ (N, 1, H, W), required for ambient models."""
    dev = x0.device
    sigmas, tweedie = _schedule(corruption, cfg.sigma_max, cfg)
    sigmas = sigmas.to(dev)
    if getattr(model, "masked", False) and mask is None:
        raise ValueError("an ambient model needs its own mask A~ for the inpainting attack")
    base = _denoiser(model, mask)
    x0d = x0.to(torch.float64)

    def denoise(x, s):
        return known * x0d + (1 - known) * base(x, s).to(torch.float64)

    eps = _noise(cfg.seed, indices, x0.shape[1:]).to(dev, torch.float64)
    x = known * x0d + sigmas[0] * eps
    if resample <= 1:
        x = heun_sample(denoise, x, sigmas)
    else:
        gens = [generator(cfg.seed, int(i), _STREAM_RESAMPLE) for i in indices]
        for t_cur, t_next in zip(sigmas[:-1], sigmas[1:]):
            for u in range(resample):
                x_next = heun_sample(denoise, x, torch.stack([t_cur, t_next]))
                if u == resample - 1 or t_next == 0:
                    break
                xi = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(dev, torch.float64)
                x = x_next + (t_cur**2 - t_next**2).sqrt() * xi  # back to t_cur (RePaint's jump of one step)
            x = x_next
    if tweedie:
        x = denoise(x, sigmas[-1])
    return (known * x0d + (1 - known) * x).float()


@torch.no_grad()
def denoise_from(
    model,
    x0: torch.Tensor,
    indices,
    cfg: AttackConfig,
    corruption: Corruption | None = None,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Noise x0 at cfg.sigma, restore it one-step and by sampling: {'onestep': ..., 'sample': ...}."""
    dev = x0.device
    eps = _noise(cfg.seed, indices, x0.shape[1:]).to(dev, torch.float64)
    x_sigma = x0.to(torch.float64) + cfg.sigma * eps
    d = _denoiser(model, mask)
    onestep = d(x_sigma, torch.tensor(cfg.sigma, dtype=torch.float64)).float()
    sigmas, tweedie = _schedule(corruption, cfg.sigma, cfg)
    x = heun_sample(d, x_sigma, sigmas.to(dev))
    if tweedie:
        x = d(x, sigmas[-1])
    return {"onestep": onestep, "sample": x.float(), "noisy": x_sigma.float()}


@torch.no_grad()
def sample_from(
    model,
    indices,
    shape,
    cfg: AttackConfig,
    corruption: Corruption | None = None,
    mask: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Sample from image i's starting noise (sigma_max eps_i) with the model's sampler and mask A~ (mask key)."""
    sigmas, tweedie = _schedule(corruption, cfg.sigma_max, cfg)
    sigmas = sigmas.to(device)
    d = _denoiser(model, mask)
    x = heun_sample(d, _noise(cfg.seed, indices, shape).to(device, torch.float64) * sigmas[0], sigmas)
    if tweedie:
        x = d(x, sigmas[-1])
    return x.float()


# ---------------------------------------------------------------- scoring


def region_similarity(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Centred cosine of each pair (a[i], b[i]) of uint8 images over region[i] (N, 1, H, W bool; None = all)."""
    if region is None:
        return (pixel_features(a) * pixel_features(b)).sum(1).numpy().astype(np.float64)
    out = np.empty(len(a))
    for i in range(len(a)):
        r = np.broadcast_to(region[i], a[i].shape)
        out[i] = _cos(a[i][r][None], b[i][r][None])[0, 0]
    return out


def _cos(q: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Centred cosine between rows of q (M, D) and rows of refs (R, D), in float64."""
    return (pixel_features(q, torch.float64) @ pixel_features(refs, torch.float64).T).numpy()


def nearest_other(
    recon: np.ndarray, train: np.ndarray, indices: np.ndarray, region: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, index) of each reconstruction's most similar training image other than its own source."""
    if region is None:
        sims = (pixel_features(recon).double() @ pixel_features(train).double().T).numpy()
        sims[np.arange(len(recon)), indices] = -np.inf
        j = sims.argmax(1)
        return sims[np.arange(len(recon)), j], j
    vals, idxs = np.empty(len(recon)), np.empty(len(recon), np.int64)
    flat_train = train.reshape(len(train), -1)
    for i in range(len(recon)):
        r = np.broadcast_to(region[i], recon[i].shape).reshape(-1)
        s = _cos(recon[i].reshape(-1)[r][None], flat_train[:, r])[0]
        s[indices[i]] = -np.inf
        idxs[i] = int(s.argmax())
        vals[i] = s[idxs[i]]
    return vals, idxs


def score(
    recon: np.ndarray,
    original: np.ndarray,
    train: np.ndarray,
    indices: np.ndarray,
    region: np.ndarray | None,
    threshold: float,
) -> dict[str, np.ndarray]:
    """Per-image similarity to the original (region and full), to the nearest other training image, MSE, extracted."""
    sim = region_similarity(recon, original, region)
    sim_full = region_similarity(recon, original, None)
    other_sim, other_idx = nearest_other(recon, train, indices, region)
    diff = (recon.astype(np.float64) - original.astype(np.float64)) / 127.5
    if region is None:
        mse = (diff**2).reshape(len(diff), -1).mean(1)
    else:
        r = np.broadcast_to(region, diff.shape)
        mse = (diff**2 * r).reshape(len(diff), -1).sum(1) / np.maximum(r.reshape(len(diff), -1).sum(1), 1)
    extracted = (sim > threshold) & (sim > other_sim)
    return {
        "sim": sim,
        "sim_full": sim_full,
        "mse": mse,
        "other_sim": other_sim,
        "other_index": other_idx,
        "extracted": extracted,
    }


def summarize(s: dict[str, np.ndarray]) -> dict:
    out = {
        "n": int(len(s["sim"])),
        "sim_mean": float(np.mean(s["sim"])),
        "sim_median": float(np.median(s["sim"])),
        "sim_full_mean": float(np.mean(s["sim_full"])),
        "other_sim_mean": float(np.mean(s["other_sim"])),
        "mse_mean": float(np.mean(s["mse"])),
        "share_extracted": float(np.mean(s["extracted"])),
        "n_extracted": int(np.sum(s["extracted"])),
    }
    for t in THRESHOLDS:
        out[f"share_sim_gt_{t:.2f}"] = float(np.mean(s["sim"] > t))
    return out


# ---------------------------------------------------------------- the attack


def methods_for(kind: str, masked: bool, resample=(1, 5)) -> list[str]:
    if kind == "inpaint":
        return [f"inpaint_u{u}" for u in sorted(resample)]
    if kind == "key":
        return ["key_fresh", "key_train"] if masked else ["key_none"]
    return ["onestep", "sample"] + (["onestep_ones", "sample_ones"] if masked else [])


@dataclass
class _Restorations:
    """What the restore step collects, batch by batch: reconstructions per method, the corrupted
    inputs (for the gallery), the erased regions (inpainting), the keys (mask key), seconds per method."""

    recons: dict[str, list]
    timing: dict[str, float]
    corrupted: list = field(default_factory=list)
    regions: list = field(default_factory=list)
    key_masks: list = field(default_factory=list)


def _restore_inpaint(model, cfg: AttackConfig, corruption, autocast, idx, x0, own, out: _Restorations) -> None:
    res = x0.shape[2]
    known = torch.stack([erase_mask(int(i), res, cfg.erase, cfg.fraction, cfg.seed, cfg.position) for i in idx]).to(
        x0.device
    )
    for u, m in zip(cfg.resample, out.recons):
        t0 = time.perf_counter()
        with autocast:
            restored = inpaint(model, x0, known, idx, cfg, corruption, resample=u, mask=own)
        out.recons[m].append(to_uint8(restored))
        out.timing[m] += time.perf_counter() - t0
    out.corrupted.append(to_uint8(x0 * known))
    out.regions.append((known < 0.5).cpu().numpy())


def _restore_key(model, cfg: AttackConfig, corruption, autocast, idx, x0, own, out: _Restorations) -> None:
    methods = list(out.recons)
    keys = {"key_none": None, "key_fresh": own}
    if own is not None:  # an ambient model: its own training masks are the key
        keys["key_train"] = corruption.training_masks(idx, x0.shape[2]).to(x0.device)
    for m in methods:
        t0 = time.perf_counter()
        with autocast:
            restored = sample_from(model, idx, x0.shape[1:], cfg, corruption, keys[m], x0.device)
        out.recons[m].append(to_uint8(restored))
        out.timing[m] += time.perf_counter() - t0
    # the gallery's "corrupted" image: what the key reveals of image i (its observed pixels)
    key = keys[methods[-1]]
    out.corrupted.append(to_uint8(x0 * key if key is not None else torch.zeros_like(x0)))
    if key is not None:
        out.key_masks.append(key.cpu().numpy())


def _restore_noise(model, cfg: AttackConfig, corruption, autocast, idx, x0, own, out: _Restorations) -> None:
    variants = [("", None)]
    if own is not None:  # an ambient model: its own A~, and the all-ones mask
        res = x0.shape[2]
        variants = [("", own), ("_ones", torch.ones(len(idx), 1, res, res, device=x0.device))]
    for suffix, mask in variants:
        t0 = time.perf_counter()
        with autocast:
            restored = denoise_from(model, x0, idx, cfg, corruption, mask)
        out.timing[f"restore{suffix}"] += time.perf_counter() - t0  # onestep and sample together
        out.recons[f"onestep{suffix}"].append(to_uint8(restored["onestep"]))
        out.recons[f"sample{suffix}"].append(to_uint8(restored["sample"]))
    out.corrupted.append(to_uint8(restored["noisy"].clamp(-1, 1)))


_RESTORE = {"inpaint": _restore_inpaint, "key": _restore_key, "noise": _restore_noise}


def _restore(
    model,
    train: np.ndarray,
    indices: np.ndarray,
    cfg: AttackConfig,
    corruption,
    methods: list[str],
    batch_size: int,
    device: torch.device,
    autocast,
    progress: bool,
) -> _Restorations:
    """The restore step: each batch of attacked images corrupted and restored by every method."""
    masked = bool(getattr(model, "masked", False))
    res = train.shape[2]
    timing = (
        {m: 0.0 for m in methods}
        if cfg.kind != "noise"
        else {"restore": 0.0, **({"restore_ones": 0.0} if masked else {})}
    )
    out = _Restorations({m: [] for m in methods}, timing)
    mask_seed = derive_seed(cfg.seed, _STREAM_MASK)
    for start in tqdm(
        range(0, len(indices), batch_size), desc=f"attack ({cfg.kind})", unit="batch", disable=not progress
    ):
        idx = indices[start : start + batch_size]
        x0 = uint8_to_signed(train[idx]).to(device)
        # an ambient model's own A~ per attacked image: its training distribution, fresh streams
        own = corruption.sampling_masks([int(i) for i in idx], res, mask_seed).to(device) if masked else None
        _RESTORE[cfg.kind](model, cfg, corruption, autocast, idx, x0, own, out)
    return out


def _rows(scores: dict, methods: list[str], indices: np.ndarray) -> list[dict]:
    rows = []
    for m in methods:
        s = scores[m]
        for j, i in enumerate(indices):
            rows.append(
                {
                    "index": int(i),
                    "method": m,
                    "sim": float(s["sim"][j]),
                    "sim_full": float(s["sim_full"][j]),
                    "mse": float(s["mse"][j]),
                    "other_sim": float(s["other_sim"][j]),
                    "other_index": int(s["other_index"][j]),
                    "extracted": bool(s["extracted"][j]),
                }
            )
    return rows


def _summary(
    cfg: AttackConfig,
    masked: bool,
    n: int,
    n_train: int,
    methods: list[str],
    scores: dict,
    precision: str,
    timing: dict,
) -> dict:
    model_mask = None
    if masked:
        model_mask = (
            "key_train: the image's own training A~; key_fresh: fresh A~ of its law"
            if cfg.kind == "key"
            else "own training distribution of A~, fresh per image"
        )
    return {
        "kind": cfg.kind,
        "masked": masked,
        "n": int(n),
        "n_train": int(n_train),
        "similarity": "pixel_centred_cosine",
        "region": "erased pixels" if cfg.kind == "inpaint" else "whole image",
        "threshold": cfg.threshold,
        "seed": cfg.seed,
        "params": cfg.to_dict(),
        "primary_method": "sample" if cfg.kind == "noise" else methods[-1],
        "precision": precision,
        "model_mask": model_mask,
        "methods": {m: summarize(scores[m]) for m in methods},
        "timing": timing,
    }


def _gallery(
    out: _Restorations,
    scores: dict,
    originals: np.ndarray,
    region: np.ndarray | None,
    indices: np.ndarray,
    cfg: AttackConfig,
    methods: list[str],
    gallery_size: int,
) -> dict:
    """The first `gallery_size` attacked images: original, corrupted, shown mask, each method's restoration."""
    g = np.arange(min(gallery_size, len(indices)))
    if region is not None:
        shown = (1 - region[g]).astype(np.uint8)
    elif out.key_masks:
        shown = np.concatenate(out.key_masks)[g].round().astype(np.uint8)
    else:
        res = originals.shape[2]
        shown = np.ones((len(g), 1, res, res), np.uint8)
    gallery = {
        "indices": indices[g],
        "original": originals[g],
        "corrupted": np.concatenate(out.corrupted)[g],
        "mask": shown,
        "methods": np.asarray(methods),
        "kind": np.asarray(cfg.kind),
    }
    for m in methods:
        gallery[f"recon_{m}"] = np.concatenate(out.recons[m])[g]
        gallery[f"sim_{m}"] = scores[m]["sim"][g].astype(np.float32)
        gallery[f"extracted_{m}"] = scores[m]["extracted"][g]
    return gallery


@torch.no_grad()
def run_attack(
    model,
    train_uint8: np.ndarray,
    cfg: AttackConfig,
    corruption: Corruption | None = None,
    indices=None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    gallery_size: int = 16,
    progress: bool = False,
    precision: str = "fp32",
) -> tuple[dict, list[dict], dict]:
    """Attack training images `indices` (default all) of `train_uint8`; returns (summary, rows, gallery).

    `model` is an EDMPrecond (or any object with `masked`, `img_channels` and the same call
    signature: model(x, sigma) for clean models, model(x, sigma, mask) for ambient ones).
    Three steps: restore (`_restore`), score (`score` per method) and gallery (`_gallery`).
    """
    t_start = time.perf_counter()
    train = np.asarray(train_uint8)
    n_train, _, _, _ = train.shape  # (N, C, H, W)
    indices = np.arange(n_train) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(indices) == 0 or indices.min() < 0 or indices.max() >= n_train:
        raise ValueError(f"attack indices must lie in 0..{n_train - 1}")
    if n_train < 2:
        raise ValueError("the attack compares with the nearest *other* training image: need >= 2 training images")
    masked = bool(getattr(model, "masked", False))
    if hasattr(model, "eval"):
        model.eval()
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
    # bf16 autocast runs the network in bfloat16; the ODE state stays float64 (as in sampling.generate)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    methods = methods_for(cfg.kind, masked, cfg.resample)
    if masked and (corruption is None or not corruption.masked):
        raise ValueError("an ambient model needs its corruption (for its own masks A~)")
    out = _restore(model, train, indices, cfg, corruption, methods, batch_size, device, autocast, progress)

    originals = train[indices]
    region = np.concatenate(out.regions) if out.regions else None
    t0 = time.perf_counter()
    scores = {
        m: score(np.concatenate(out.recons[m]), originals, train, indices, region, cfg.threshold) for m in methods
    }
    t_score = time.perf_counter() - t0

    summary = _summary(
        cfg, masked, len(indices), n_train, methods, scores, precision, {**out.timing, "scoring": t_score}
    )
    summary["seconds"] = time.perf_counter() - t_start
    gallery = _gallery(out, scores, originals, region, indices, cfg, methods, gallery_size)
    return summary, _rows(scores, methods, indices), gallery

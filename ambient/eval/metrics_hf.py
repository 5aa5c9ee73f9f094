"""High-frequency energy: does a model trained on noisy data output noisy images?

For images x in [-1, 1] (H x W, per channel) with 2-D DFT X(k) and power P(k) = |X(k)|^2 / (H W)
(so that sum_k P(k) = sum_pixels x^2, Parseval), the high-frequency energy of an image is

    hf(x) = (1 / (C H W)) * sum_channels sum_{|f(k)| > cutoff} P(k)

with f(k) = (fy, fx) the frequency in cycles per pixel (numpy.fft.fftfreq) and cutoff = half the
Nyquist frequency (0.25 cycles/pixel): the mean squared pixel value of the image's high-pass
part. White Gaussian noise of std s adds s^2 * hf_fraction in expectation, where hf_fraction is
the share of DFT bins above the cutoff (about 0.80 for a radial cutoff at half Nyquist).

`hf_report` compares a model's samples with its clean training images and, for noise runs,
with the noisy training data it actually saw (the fixed per-image noise of
ambient.corruption, clipped to [-1, 1] and rounded to uint8 exactly as the sampler writes
samples). hf_noise_index = (hf_samples - hf_train_clean) / (hf_train_noisy - hf_train_clean):
0 when the samples are as smooth as the clean data, 1 when they are as noisy as the training data
(the naive baseline), in between for partly noisy samples.

Command line: `python -m ambient hf-energy --samples S.zip --train T.zip --corruption noise-s0.20
--corruption-seed 0 --out hf_energy.json` (the workflow's hf_energy rule; its arguments:
ambient.cli.evaluate).
"""

from __future__ import annotations

import json

import numpy as np

DEFAULT_CUTOFF = 0.5  # as a fraction of the Nyquist frequency (0.5 cycles/pixel)
SPECTRUM_BINS = 12


def _as_float(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 127.5 - 1.0
    return x.astype(np.float64)


def _radius(h: int, w: int) -> np.ndarray:
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return np.sqrt(fy**2 + fx**2)


def hf_mask(h: int, w: int, cutoff: float = DEFAULT_CUTOFF) -> np.ndarray:
    """DFT bins above `cutoff` x Nyquist (radially), shape (h, w), bool."""
    if not 0 < cutoff < 1:
        raise ValueError(f"cutoff={cutoff} must lie in (0, 1) (a fraction of the Nyquist frequency)")
    return _radius(h, w) > cutoff * 0.5


def power_spectrum(images) -> np.ndarray:
    """P(k) = |DFT|^2 / (H W) per image, averaged over channels: (N, H, W)."""
    x = _as_float(images)
    h, w = x.shape[-2:]
    return (np.abs(np.fft.fft2(x, axes=(-2, -1))) ** 2 / (h * w)).mean(axis=1)


def hf_energy(images, cutoff: float = DEFAULT_CUTOFF, batch_size: int = 512) -> np.ndarray:
    """Per-image high-frequency energy (see the module docstring), float64 (N,)."""
    x = np.asarray(images)
    h, w = x.shape[-2:]
    mask = hf_mask(h, w, cutoff)
    out = [power_spectrum(x[i : i + batch_size])[:, mask].sum(axis=1) / (h * w) for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


def radial_spectrum(images, bins: int = SPECTRUM_BINS, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres in cycles/pixel, mean P(k) per radial bin), averaged over the images.

    The DC bin (k = 0, the mean brightness) is left out; bins holding no DFT frequency (small
    images) are NaN."""
    x = np.asarray(images)
    h, w = x.shape[-2:]
    r = _radius(h, w)
    edges = np.linspace(0, r.max() + 1e-9, bins + 1)
    which = np.clip(np.digitize(r, edges) - 1, 0, bins - 1).ravel()
    keep = r.ravel() > 0
    total = np.zeros(bins)
    for i in range(0, len(x), batch_size):
        p = power_spectrum(x[i : i + batch_size]).sum(axis=0).ravel()
        total += np.bincount(which[keep], weights=p[keep], minlength=bins)
    counts = np.bincount(which[keep], minlength=bins) * max(len(x), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
    return (edges[:-1] + edges[1:]) / 2, mean


def _finite_list(values) -> list:
    """JSON-safe: NaN (an empty spectrum bin) becomes None."""
    return [float(v) if np.isfinite(v) else None for v in values]


def _stats(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}


def noisy_training_data(train_uint8: np.ndarray, corruption) -> np.ndarray:
    """The noisy observations a noise model was trained on, as uint8 (clipped, rounded like samples)."""

    from ..sampling import to_uint8
    from ..utils import uint8_to_signed

    x = uint8_to_signed(train_uint8)
    observed = corruption.apply(x)[0]
    return to_uint8(observed.clamp(-1, 1))


def hf_report(
    samples_uint8: np.ndarray,
    train_uint8: np.ndarray,
    run: str,
    corruption_seed: int = 0,
    cutoff: float = DEFAULT_CUTOFF,
) -> dict:
    """High-frequency energy of samples vs clean training data vs (noise runs) noisy training data."""
    from ..corruption import Corruption

    samples, train = np.asarray(samples_uint8), np.asarray(train_uint8)
    if samples.shape[1:] != train.shape[1:]:
        raise ValueError(f"samples are {samples.shape[1:]} but training images are {train.shape[1:]}")
    corr, loss = Corruption.of_run(run, seed=corruption_seed)
    h, w = train.shape[-2:]
    fraction = float(hf_mask(h, w, cutoff).mean())
    s, c = hf_energy(samples, cutoff), hf_energy(train, cutoff)
    radius, spec_s = radial_spectrum(samples)
    _, spec_c = radial_spectrum(train)
    report = {
        "metric": "hf_energy",
        "definition": "mean over images and channels of sum_{|f| > cutoff} |DFT|^2 / (H W)^2, images in [-1, 1]",
        "run": run,
        "corruption": corr.name,
        "loss": loss,
        "corruption_seed": int(corruption_seed),
        "cutoff_nyquist": cutoff,
        "cutoff_cycles_per_pixel": cutoff * 0.5,
        "hf_fraction": fraction,
        "samples": _stats(s),
        "train_clean": _stats(c),
        "train_noisy": None,
        "hf_samples": float(s.mean()),
        "hf_train_clean": float(c.mean()),
        "hf_train_noisy": None,
        "hf_noise_expected": None,
        "hf_noise_index": None,
        "spectrum": {
            "radius": radius.tolist(),
            "samples": _finite_list(spec_s),
            "train_clean": _finite_list(spec_c),
            "train_noisy": None,
        },
    }
    if corr.kind == "noise":
        noisy = noisy_training_data(train, corr)
        n = hf_energy(noisy, cutoff)
        report.update(
            train_noisy=_stats(n), hf_train_noisy=float(n.mean()), hf_noise_expected=corr.sigma_n**2 * fraction
        )
        report["spectrum"]["train_noisy"] = _finite_list(radial_spectrum(noisy)[1])
        gap = report["hf_train_noisy"] - report["hf_train_clean"]
        if gap > 0:
            report["hf_noise_index"] = (report["hf_samples"] - report["hf_train_clean"]) / gap
    return report


# ---------------------------------------------------------------- command line


def cmd_hf_energy(a) -> None:
    from ..data import read_image_zip
    from ..utils import write_json

    report = hf_report(
        read_image_zip(a.samples).images, read_image_zip(a.train).images, a.corruption, a.corruption_seed, a.cutoff
    )
    report.update(samples_zip=str(a.samples), train_zip=str(a.train))
    write_json(a.out, report)
    keys = ("run", "hf_samples", "hf_train_clean", "hf_train_noisy", "hf_noise_index")
    print(json.dumps({k: report[k] for k in keys}))

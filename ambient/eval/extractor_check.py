"""Is a feature space a quality ruler? The disturbance test of the FID paper, for every extractor.

Heusel et al. (2017, "GANs Trained by a Two Time-Scale Update Rule...", Fig. 1 and App.) validate
FID by disturbing real images more and more: the distance to the real distribution must rise with
the disturbance level. We apply four of their disturbances to the training faces and score them
against the held-out reference, exactly as the samples are scored:

    noise        additive Gaussian noise, std = level on [-1, 1] images
    blur         Gaussian blur, std = level pixels at 16x16 (scaled with the resolution)
    saltpepper   a share `level` of the pixels set to black or white
    rectangles   a black square of side level x H at a seeded position per image
    contrast     lost contrast: each image's deviation from its own mean scaled by 1 - level

FD and KD pass a disturbance when they do not fall from one level to the next (level 0 = the
undisturbed images). Small levels sit near the metrics' own noise (KD over a few dozen reference
images), so a single small dip is weak evidence; the useful reading is how strongly each feature
space responds to each kind of damage. On the embedded faces the filter bank's FD and KD barely
respond to noise up to std 0.1 and strongly to blur and lost contrast, while raw pixels respond to
noise and hardly to mild blur: the two rank speckled and blurred samples in opposite orders.

The classifier two-sample test (ambient.eval.c2st) is the quality ruler the claims read, and it
must pass this test to back them: for every disturbance its accuracy may not fall from one level
to the next by more than the two levels' spread (std over its repeats), and at the largest level
it must exceed the undisturbed accuracy by more than their spread (`c2st_rises`,
`c2st_consistent`). The DAG runs this on the training images against the held-out reference
(rule ruler_check); a failing ruler turns the quality claims to n/a (ambient.eval.claims).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import generator, signed_to_uint8, uint8_to_signed
from .c2st import c2st_key, rises, two_sample_test
from .features import Extractor, metric_keys
from .fid import feature_stats, frechet, kernel

DISTURBANCES: dict[str, tuple[float, ...]] = {
    "noise": (0.05, 0.1, 0.2, 0.4),
    "blur": (0.5, 1.0, 1.5, 2.0),
    "saltpepper": (0.02, 0.05, 0.1, 0.2),
    "rectangles": (0.15, 0.3, 0.45, 0.6),
    "contrast": (0.1, 0.25, 0.5, 0.75),
}
_STREAM = 201  # the disturbances' own random stream per image


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    half = max(1, math.ceil(3 * sigma))
    k = torch.arange(-half, half + 1, dtype=x.dtype)
    g = torch.exp(-(k**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, half, half), mode="replicate"), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def disturb(images: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """uint8 (N, C, H, W) images disturbed by `kind` at `level` (0 = unchanged); seeded per image."""
    if kind not in DISTURBANCES:
        raise ValueError(f"disturbance {kind!r} is unknown: use one of {', '.join(DISTURBANCES)}")
    if level <= 0:
        return images.copy()
    x = uint8_to_signed(images, torch.float64)
    n, c, h, w = x.shape
    gens = [generator(seed, i, _STREAM) for i in range(n)]
    if kind == "noise":
        x = x + level * torch.stack([torch.randn(c, h, w, generator=g, dtype=torch.float64) for g in gens])
    elif kind == "blur":
        x = _gaussian_blur(x, level * h / 16)
    elif kind == "saltpepper":
        u = torch.stack([torch.rand(1, h, w, generator=g, dtype=torch.float64) for g in gens]).expand_as(x)
        x = torch.where(u < level / 2, -1.0, torch.where(u < level, 1.0, x))
    elif kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (1 - level) * (x - mean)
    else:
        side = max(1, round(level * h))
        x = x.clone()
        for i, g in enumerate(gens):
            top, left = (int(v) for v in torch.randint(0, h - side + 1, (2,), generator=g))
            x[i, :, top : top + side, left : left + side] = -1.0
    return signed_to_uint8(x).numpy()


def check(
    extractor: Extractor,
    images: np.ndarray,
    ref_features: np.ndarray,
    ref_name: str = "heldout",
    seed: int = 0,
    kid_subsets: int = 100,
) -> dict:
    """FD and KD of the disturbed `images` against `ref_features`, per disturbance and level, and
    whether each rises (does not fall) with the level."""
    mu_r, sigma_r = feature_stats(ref_features)
    base = extractor(images)
    out: dict = {
        "extractor": extractor.name,
        "n": int(len(images)),
        "ref_n": int(len(ref_features)),
        "method": "Heusel et al. 2017 disturbance test: FD/KD must not fall as the disturbance grows",
        "disturbances": {},
    }
    fd_key, kd_key = metric_keys(extractor)
    out["fd_key"], out["kd_key"] = (f"{fd_key}_{ref_name}", f"{kd_key}_{ref_name}") if ref_name else (fd_key, kd_key)

    out["c2st_key"] = c2st_key(extractor.name, ref_name)

    def score(feats: np.ndarray) -> tuple[float, float, float, float]:
        mu, sigma = feature_stats(feats)
        c2st = two_sample_test(ref_features, feats, seed=seed)
        return (
            frechet(mu, sigma, mu_r, sigma_r),
            kernel(feats, ref_features, seed=seed, num_subsets=kid_subsets),
            c2st["accuracy"],
            c2st["accuracy_std"],
        )

    base_scores = score(base)
    for kind, levels in DISTURBANCES.items():
        rows = [base_scores] + [score(extractor(disturb(images, kind, level, seed))) for level in levels]
        fds, kds, accs, stds = (list(col) for col in zip(*rows))
        out["disturbances"][kind] = {
            "levels": [0.0, *levels],
            "fd": fds,
            "kd": kds,
            "c2st": accs,
            "c2st_std": stds,
            "fd_rises": all(b >= a for a, b in zip(fds, fds[1:])),
            "kd_rises": all(b >= a for a, b in zip(kds, kds[1:])),
            "c2st_rises": rises(accs, stds),
        }
    for metric in ("fd", "kd", "c2st"):
        fails = [k for k, v in out["disturbances"].items() if not v[f"{metric}_rises"]]
        out[f"{metric}_consistent"] = not fails
        out[f"{metric}_fails"] = fails
    return out

"""Similarity scoring of SDXL outputs, as ambient-tweedie `eval_scripts/filter_results_noise.py` /
`filter_results_masking.py` (Figs. 1, 4, 8): cosine similarity of features, histograms, and the
shares above 0.90 / 0.95 / 0.99.

Features come from the registry of ambient.eval.features: the requested extractor (the paper: DINOv2,
`dinov2_vitg14`) when its local weights exist, else the configured fallback; every output names
the extractor actually used (`extractor`) beside the one requested, and `is_dinov2`, so a number is
never called a DINOv2 similarity unless DINOv2 computed it. Two modes:
- pairs: image i against reference i (an attack's output against the image attacked);
- nearest: each image against its most similar reference (generations against the training set, Fig. 8).
"""

from __future__ import annotations

import numpy as np

from ..layout import SIMILARITY_THRESHOLDS as THRESHOLDS


def share_key(threshold: float) -> str:
    """The key of the share above `threshold` in a summary's shares_above: 0.95 -> "0.95"."""
    return f"{threshold:.2f}"


# the keys of shares_above, in the order of the thresholds (the SDXL figures read them)
SHARE_KEYS = tuple(share_key(t) for t in THRESHOLDS)


def _features(extractor, images: np.ndarray) -> np.ndarray:
    f = np.asarray(extractor(images), dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def similarities(extractor, images: np.ndarray, reference: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, index of the reference it is compared with) per image."""
    a, b = _features(extractor, images), _features(extractor, reference)
    if mode == "pairs":
        if len(a) != len(b):
            raise ValueError(f"pairs mode: {len(a)} images against {len(b)} references")
        return (a * b).sum(1), np.arange(len(a))
    if mode == "nearest":
        s = a @ b.T
        j = s.argmax(1)
        return s[np.arange(len(a)), j], j
    raise ValueError(f"mode={mode!r}: use pairs or nearest")


def summarise(sims: np.ndarray, bins: int = 50) -> dict:
    counts, edges = np.histogram(np.clip(sims, -1, 1), bins=bins, range=(min(0.0, float(sims.min())), 1.0))
    return {
        "n": int(len(sims)),
        "mean": float(sims.mean()),
        "median": float(np.median(sims)),
        "shares_above": {share_key(t): float((sims > t).mean()) for t in THRESHOLDS},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }

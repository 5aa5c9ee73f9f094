"""Nearest training neighbours of generated samples: similarity, histogram, gallery, Carlini criterion.

Similarity is the cosine of L2-normalised features of the named extractor (`pixel`: the
per-image centred pixel cosine of `pixel_features`, a Pearson correlation: invariant to brightness
offsets and contrast, 1 for an exact copy). Per model it reports the histogram of each sample's
top-1 similarity, its mean/median, the share above 0.90/0.95/0.99 and a gallery of the most
similar (sample, training image) pairs. For scale, the summary also gives how close a training
image comes to its nearest *other* training image (`train_nn_sim_mean`, `train_nn_sim_max`;
the README's "Results on the embedded default" quotes them): far below 0.95, so a sample above
0.95 is a copy of a training image.

Second signal, in pixel space whatever the extractor: the criterion of Carlini et al. (2023,
"Extracting training data from diffusion models") in the simplified form
    d(x, nn1) / d(x, nn2) < 1/3,
with d the Euclidean distance of the [0, 1] pixel vectors and nn1, nn2 the nearest and
second-nearest training images: a sample far closer to one training image than to any other
is flagged. (Their full form divides by alpha times the mean distance to the n = 50 nearest.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from ..layout import SIMILARITY_THRESHOLDS as THRESHOLDS
from ..layout import share_column

CARLINI_THRESHOLD = 1.0 / 3.0


def pixel_features(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, C, H, W) or (N, D) images -> (N, D) unit vectors of per-image centred pixels (computed in
    float64): the one centred cosine of the project, also of the attacks' masked regions."""
    x = torch.from_numpy(np.asarray(images)).flatten(1).double()
    x = x - x.mean(dim=1, keepdim=True)
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


def top_k_similarity(
    queries: torch.Tensor, references: torch.Tensor, k: int = 1, exclude_self: bool = False, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of each query's k most similar references: (values, indices), each (Q, k).

    Features must be L2-normalised. exclude_self drops the diagonal (queries == references).
    """
    vals, idxs = [], []
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ references.T
        if exclude_self:
            rows = torch.arange(len(sims))
            sims[rows, rows + start] = -float("inf")
        v, i = sims.topk(min(k, references.shape[0]), dim=1)
        vals.append(v)
        idxs.append(i)
    return torch.cat(vals), torch.cat(idxs)


def similarity_summary(top1: np.ndarray | torch.Tensor) -> dict:
    top1 = np.asarray(top1, dtype=np.float64)
    out = {
        "n": int(len(top1)),
        "sim_mean": float(top1.mean()),
        "sim_median": float(np.median(top1)),
        "sim_max": float(top1.max()),
    }
    for t in THRESHOLDS:
        out[share_column(t)] = float((top1 > t).mean())
    return out


def normalize(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    return torch.nn.functional.normalize(f, dim=1)


def nearest(sample_features, train_features, k: int = 5, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and index of each sample's k most similar training images: (Q, k) each."""
    q, r = normalize(sample_features), normalize(train_features)
    if q.shape[1] != r.shape[1]:
        raise ValueError(
            f"feature dimensions differ ({q.shape[1]} vs {r.shape[1]}): "
            "samples and training images differ in size or channels"
        )
    vals, idx = top_k_similarity(q, r, k=k, exclude_self=exclude_self)
    return vals.numpy(), idx.numpy()


def carlini(
    samples_uint8: np.ndarray, train_uint8: np.ndarray, threshold: float = CARLINI_THRESHOLD, chunk: int = 512
) -> dict[str, np.ndarray]:
    """Pixel-space L2 distances to the nearest and second-nearest training image, their ratio and the flag."""
    s = torch.from_numpy(np.asarray(samples_uint8)).flatten(1).double() / 255.0
    t = torch.from_numpy(np.asarray(train_uint8)).flatten(1).double() / 255.0
    if s.shape[1] != t.shape[1]:
        raise ValueError("samples and training images differ in size or channels")
    tn = (t * t).sum(1)
    d1, d2, i1 = [], [], []
    k = min(2, len(t))
    for start in range(0, len(s), chunk):
        q = s[start : start + chunk]
        d = ((q * q).sum(1, keepdim=True) + tn[None] - 2 * q @ t.T).clamp_min(0).sqrt()
        v, i = d.topk(k, dim=1, largest=False)
        d1.append(v[:, 0])
        d2.append(v[:, 1] if k == 2 else torch.full_like(v[:, 0], float("nan")))
        i1.append(i[:, 0])
    d1, d2, i1 = torch.cat(d1).numpy(), torch.cat(d2).numpy(), torch.cat(i1).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d2 > 0, d1 / d2, np.where(d1 == 0, 0.0, np.inf))
    return {"d1": d1, "d2": d2, "index": i1, "ratio": ratio, "flagged": ratio < threshold}


def histogram(values: np.ndarray, bins: int = 200, lo: float = -1.0, hi: float = 1.0) -> dict:
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}


def _sample_rows(n: int, k: int, sims: np.ndarray, idx: np.ndarray, c: dict) -> list[dict]:
    """One row per sample: its top-k similarities and indices, then its Carlini criterion."""
    rows = []
    for i in range(n):
        row = {"sample": i, "top1_sim": float(sims[i, 0]), "top1_index": int(idx[i, 0])}
        for j in range(k):
            row[f"sim_{j + 1}"] = float(sims[i, j])
            row[f"index_{j + 1}"] = int(idx[i, j])
        row.update(
            {
                "carlini_d1": float(c["d1"][i]),
                "carlini_d2": float(c["d2"][i]),
                "carlini_index": int(c["index"][i]),
                "carlini_ratio": float(c["ratio"][i]),
                "carlini_flag": bool(c["flagged"][i]),
            }
        )
        rows.append(row)
    return rows


def analyze(
    samples: np.ndarray,
    train: np.ndarray,
    sample_features: np.ndarray,
    train_features: np.ndarray,
    k: int = 5,
    gallery_size: int = 16,
    bins: int = 200,
) -> tuple[dict, list[dict], dict]:
    """(summary, per-sample rows, gallery arrays) for one sample set.

    `samples`/`train` are the uint8 images (for the pixel-space Carlini criterion and the gallery);
    the features are those of the chosen extractor (any scale: they are L2-normalised here).
    """
    t0 = time.perf_counter()
    k = max(1, min(k, len(train)))
    sims, idx = nearest(sample_features, train_features, k=k)
    t1 = time.perf_counter()
    c = carlini(samples, train)
    t2 = time.perf_counter()
    top1 = sims[:, 0]
    order = np.argsort(-top1, kind="stable")[:gallery_size]
    # the scale of "a copy": how close a training image comes to its nearest *other* training image
    train_nn = nearest(train_features, train_features, k=1, exclude_self=True)[0][:, 0] if len(train) > 1 else None
    summary = {
        "n": int(len(samples)),
        "n_train": int(len(train)),
        "k": int(k),
        **similarity_summary(top1),
        "train_nn_sim_mean": None if train_nn is None else float(train_nn.mean()),
        "train_nn_sim_max": None if train_nn is None else float(train_nn.max()),
        "histogram": histogram(top1, bins),
        "gallery": [{"sample": int(i), "train": int(idx[i, 0]), "sim": round(float(top1[i]), 6)} for i in order],
        "carlini": {
            "threshold": CARLINI_THRESHOLD,
            "share_flagged": float(c["flagged"].mean()),
            "n_flagged": int(c["flagged"].sum()),
            "ratio_median": float(np.median(c["ratio"])),
        },
        "timing": {"similarity": t1 - t0, "carlini": t2 - t1},
    }
    rows = _sample_rows(len(samples), k, sims, idx, c)
    gallery = {
        "sample_index": order.astype(np.int64),
        "train_index": idx[order, 0].astype(np.int64),
        "sim": top1[order].astype(np.float32),
        "samples": samples[order],
        "train": train[idx[order, 0]],
    }
    return summary, rows, gallery


# ---------------------------------------------------------------- gallery


def pairs_grid(left: np.ndarray, right: np.ndarray, columns: int = 4, pad: int = 2, scale: int = 2) -> np.ndarray:
    """An (H, W[, 3]) uint8 image: `columns` pairs per row, each pair [left | right], grey padding."""
    n, c, h, w = left.shape
    if n == 0:
        return np.full((h, w), 128, np.uint8)
    rows = (n + columns - 1) // columns
    cell_w = 2 * w + pad
    canvas = np.full((c, rows * (h + pad) + pad, columns * (cell_w + pad) + pad), 128, np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (cell_w + pad)
        canvas[:, y : y + h, x : x + w] = left[i]
        canvas[:, y : y + h, x + w : x + 2 * w] = right[i]
    canvas = canvas.repeat(scale, axis=1).repeat(scale, axis=2)
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def run(
    samples_path: str | os.PathLike,
    train_path: str | os.PathLike,
    extractor,
    k: int = 5,
    gallery_size: int = 16,
    bins: int = 200,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[dict, list[dict], dict]:
    """Load both image sets, compute their features with `extractor`, and `analyze` them."""
    from ..data import load_images

    t0 = time.perf_counter()
    samples, train = load_images(samples_path), load_images(train_path)
    if samples.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"{samples_path}: images are {samples.shape[1:]} but the training images are {train.shape[1:]}"
        )
    tf = time.perf_counter()
    sf = extractor.from_path(samples_path, batch_size=batch_size, progress=progress)
    trf = extractor.from_path(train_path, batch_size=batch_size, progress=progress)
    t_feat = time.perf_counter() - tf
    summary, rows, gallery = analyze(samples, train, sf, trf, k=k, gallery_size=gallery_size, bins=bins)
    summary = {
        "extractor": extractor.name,
        "samples": str(samples_path),
        "train": str(train_path),
        **summary,
        "thresholds": list(THRESHOLDS),
    }
    summary["timing"] = {"features": t_feat, **summary["timing"]}
    summary["seconds"] = time.perf_counter() - t0
    gallery["extractor"] = np.asarray(extractor.name)
    return summary, rows, gallery


def default_paths(out: str | os.PathLike) -> dict[str, Path]:
    out = Path(out)
    stem = out.with_suffix("")
    return {"csv": Path(f"{stem}.csv"), "gallery": Path(f"{stem}_gallery.npz"), "png": Path(f"{stem}_gallery.png")}

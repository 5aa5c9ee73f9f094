"""Nearest-neighbour similarity of generated samples to the training set (pixel space).

Similarity is the cosine of the per-image centred pixel vectors (a Pearson correlation):
invariant to brightness offsets and contrast, 1 for an exact copy. On the embedded faces a
training image's nearest *other* training image scores 0.64 on average and never above
0.90, so a sample above 0.95 is a copy of a training face.
"""
from __future__ import annotations

import numpy as np
import torch

THRESHOLDS = (0.90, 0.95, 0.99)


def pixel_features(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, C, H, W) or (N, D) images -> (N, D) unit vectors of per-image centred pixels (computed in
    float64): the one centred cosine of the project, also of the attacks' masked regions."""
    x = torch.from_numpy(np.asarray(images)).flatten(1).double()
    x = x - x.mean(dim=1, keepdim=True)
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


def top_k_similarity(queries: torch.Tensor, references: torch.Tensor, k: int = 1,
                     exclude_self: bool = False, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
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
    out = {"n": int(len(top1)), "sim_mean": float(top1.mean()), "sim_median": float(np.median(top1)),
           "sim_max": float(top1.max())}
    for t in THRESHOLDS:
        out[f"share_gt_{t:.2f}"] = float((top1 > t).mean())
    return out

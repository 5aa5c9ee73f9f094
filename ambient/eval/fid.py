"""Frechet and kernel distances (FID/KID with clean-fid's Inception, fd_<x>/kd_<x> otherwise).

Features: `inception` goes through clean-fid itself (`get_files_features`, mode "clean",
num_workers=0, device given); other extractors compute their own features (clean-fid's 299x299
resize only makes sense for Inception). Distances: clean-fid's `frechet_distance` on (mu, sigma)
and its `kernel_distance` on the features, both computed here as clean-fid computes them (tests
hold them equal to clean-fid's; importing `cleanfid.fid` costs seconds per job), KID under a local
numpy seed (its subsets come from `np.random.choice`; the global RNG state is restored afterwards).

Reference statistics are our own `.npz` files (`save_ref_stats`): mu, sigma, the features (for
KID), the extractor name, n, the image size and the source's sha256. They are never clean-fid's
downloaded site-packages statistics.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

from ..utils import atomic_path
from .c2st import c2st_key, two_sample_test
from .features import Extractor, canonical_name, metric_keys

# The C2ST fits 25 classifiers; past this many images a class its accuracy is settled (paper scale: 10k+)
C2ST_MAX_PER_CLASS = 2000


@contextlib.contextmanager
def numpy_seed(seed: int):
    """Seed numpy's global RNG inside the block and restore its previous state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors for mean and covariance, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2): |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2)
    - 2 tr((sigma1 sigma2)^(1/2)), computed as clean-fid's `frechet_distance` does (scipy's sqrtm, a
    diagonal offset `eps` when the product's root is not finite, round-off's imaginary part dropped).
    Here rather than imported: `cleanfid.fid` pulls in torchvision, seconds in every job. A test holds
    the two equal."""
    from scipy import linalg

    mu1, mu2, sigma1, sigma2 = np.atleast_1d(mu1), np.atleast_1d(mu2), np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"feature dimensions differ ({mu1.shape} vs {mu2.shape}): the two sets were "
            "made with different extractors or image sizes/channels"
        )
    root = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(root).all():  # a (near-)singular product
        offset = eps * np.eye(len(sigma1))
        root = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(
                f"Frechet distance: the covariances' product has a square root with imaginary part up to "
                f"{np.abs(root.imag).max():.3g}; are both covariances positive semi-definite?"
            )
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


def kernel_subsets(
    features1: np.ndarray, features2: np.ndarray, seed: int = 0, num_subsets: int = 100, max_subset_size: int = 1000
) -> np.ndarray:
    """clean-fid's KID per random subset (unbiased polynomial-kernel MMD^2), seeded: the same subsets
    and formula as cleanfid.fid.kernel_distance, whose value is their mean; their spread is the
    KD's standard deviation over subsets."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.shape[1:] != f2.shape[1:]:
        raise ValueError(f"feature dimensions differ ({f1.shape[1:]} vs {f2.shape[1:]})")
    if min(len(f1), len(f2)) < 2:
        raise ValueError("KID needs at least 2 images in each set")
    d = f1.shape[1]
    m = min(len(f1), len(f2), max_subset_size)
    out = np.empty(num_subsets)
    with numpy_seed(seed):
        for k in range(num_subsets):
            x = f2[np.random.choice(len(f2), m, replace=False)]
            y = f1[np.random.choice(len(f1), m, replace=False)]
            a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
            b = (x @ y.T / d + 1) ** 3
            out[k] = ((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m
    return out


def kernel(
    features1: np.ndarray, features2: np.ndarray, seed: int = 0, num_subsets: int = 100, max_subset_size: int = 1000
) -> float:
    """clean-fid's KID (the mean over `kernel_subsets`), seeded."""
    return float(kernel_subsets(features1, features2, seed, num_subsets, max_subset_size).mean())


# ---------------------------------------------------------------- reference statistics


def set_features(
    source: str | os.PathLike, extractor: Extractor, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    return extractor.from_path(source, batch_size=batch_size, progress=progress).astype(np.float32)


def _source_info(source: str | os.PathLike) -> dict:
    from ..data import load_images
    from ..utils import sha256_file

    source = Path(source)
    images = load_images(source)
    info = {"source": str(source), "resolution": int(images.shape[-1]), "channels": int(images.shape[1])}
    if source.is_file():
        info["source_sha256"] = sha256_file(source)
    return info


def save_ref_stats(
    path: str | os.PathLike, features: np.ndarray, extractor: Extractor, info: dict | None = None
) -> dict:
    """Write mu, sigma, features and their provenance to an .npz (atomically)."""
    mu, sigma = feature_stats(features)
    meta = {"extractor": extractor.name, "n": int(len(features)), **extractor.describe(), **(info or {})}
    arrays = {"mu": mu, "sigma": sigma, "features": np.asarray(features, np.float32)}
    for k, v in meta.items():
        arrays[k] = np.asarray(v)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return meta


def load_ref_stats(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: reference statistics not found (run `ambient ref-stats`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable reference-statistics .npz ({e.__class__.__name__}: {e})") from None
    for k in ("mu", "sigma", "features", "extractor", "n"):
        if k not in out:
            raise ValueError(f"{path}: reference statistics lack {k!r}; recompute them with `ambient ref-stats`")
    for k, v in list(out.items()):
        if v.ndim == 0:
            out[k] = v.item()
    return out


def ref_stats(
    source: str | os.PathLike,
    out: str | os.PathLike,
    extractor: Extractor,
    batch_size: int = 64,
    progress: bool = False,
) -> dict:
    """Compute reference statistics of an image zip/folder with `extractor` and save them to `out`."""
    t0 = time.perf_counter()
    feats = set_features(source, extractor, batch_size, progress)
    meta = save_ref_stats(out, feats, extractor, {**_source_info(source), "seconds": time.perf_counter() - t0})
    return meta


# ---------------------------------------------------------------- the metric


def distances(
    features: np.ndarray,
    ref: dict,
    extractor: Extractor | str,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    ref_name: str = "",
) -> dict:
    """{fd_key: FD, kd_key: KD, kd_std_key: KD's std over subsets, c2st_key: the classifier two-sample
    test's accuracy (ambient.eval.c2st, the quality ruler), its std, the key names, 'c2st' (its
    settings), 'timing'} of `features` against a reference dict (with mu, sigma, features).
    `ref_name` (e.g. heldout) suffixes the keys, so every number names the set it was measured against."""
    fd_key, kd_key = (f"{k}_{ref_name}" if ref_name else k for k in metric_keys(extractor))
    t0 = time.perf_counter()
    mu, sigma = feature_stats(features)
    fd = frechet(mu, sigma, ref["mu"], ref["sigma"])
    t1 = time.perf_counter()
    kd_all = kernel_subsets(
        features, ref["features"], seed=seed, num_subsets=kid_subsets, max_subset_size=kid_subset_size
    )
    t2 = time.perf_counter()
    c2st = two_sample_test(ref["features"], features, seed=seed, max_per_class=C2ST_MAX_PER_CLASS)
    t3 = time.perf_counter()
    c2st_col = c2st_key(extractor.name if isinstance(extractor, Extractor) else canonical_name(extractor), ref_name)
    return {
        fd_key: fd,
        kd_key: float(kd_all.mean()),
        f"{kd_key}_std": float(kd_all.std(ddof=1)) if len(kd_all) > 1 else 0.0,
        "fd_key": fd_key,
        "kd_key": kd_key,
        "kd_std_key": f"{kd_key}_std",
        c2st_col: c2st["accuracy"],
        f"{c2st_col}_std": c2st["accuracy_std"],
        "c2st_key": c2st_col,
        "c2st_std_key": f"{c2st_col}_std",
        "c2st": {k: v for k, v in c2st.items() if k not in ("accuracy", "accuracy_std")},
        "kid_subset_size": int(min(len(features), len(ref["features"]), kid_subset_size)),
        "timing": {"fd": t1 - t0, "kd": t2 - t1, "c2st": t3 - t2},
    }


def _check_ref_extractor(ref: Path, ref_data: dict, extractor: Extractor) -> None:
    """Refuse reference statistics made with another extractor (or other Inception weights)."""
    if ref_data["extractor"] != extractor.name:
        raise ValueError(
            f"{ref}: reference statistics were computed with the {ref_data['extractor']!r} extractor, "
            f"but {extractor.name!r} is in use; recompute them with `ambient ref-stats` "
            f"(or fetch the weights they need)"
        )
    if extractor.is_inception and ref_data.get("weights_sha256") not in (None, getattr(extractor, "sha256", None)):
        raise ValueError(
            f"{ref}: reference statistics were computed with other Inception weights "
            f"({ref_data.get('weights_sha256')}); recompute them"
        )


def _load_reference(ref: Path, extractor: Extractor, batch_size: int, progress: bool) -> tuple[dict, dict, object]:
    """(reference data with mu/sigma/features, ref_* record fields, reference resolution or None) of
    `ref`: an .npz from `ref_stats`, or an image zip/folder whose features are computed here."""
    if ref.suffix == ".npz":
        ref_data = load_ref_stats(ref)
        _check_ref_extractor(ref, ref_data, extractor)
        ref_info = {
            "ref_n": int(ref_data["n"]),
            "ref_source": ref_data.get("source"),
            "ref_source_sha256": ref_data.get("source_sha256"),
        }
        return ref_data, ref_info, ref_data.get("resolution")
    feats = set_features(ref, extractor, batch_size, progress)
    mu, sigma = feature_stats(feats)
    ref_data = {"mu": mu, "sigma": sigma, "features": feats}
    info = _source_info(ref)
    ref_info = {"ref_n": int(len(feats)), "ref_source": str(ref), "ref_source_sha256": info.get("source_sha256")}
    return ref_data, ref_info, info["resolution"]


def evaluate(
    samples: str | os.PathLike,
    ref: str | os.PathLike,
    extractor: Extractor,
    requested: str | None = None,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 64,
    progress: bool = False,
    ref_name: str = "",
) -> dict:
    """FD/KD of the images at `samples` against `ref` (an .npz from `ref_stats`, or an image zip/folder).

    Returns the JSON record that `ambient fid` writes.
    """
    t_start = time.perf_counter()
    ref = Path(ref)
    t0 = time.perf_counter()
    ref_data, ref_info, ref_res = _load_reference(ref, extractor, batch_size, progress)
    t_ref = time.perf_counter() - t0

    t0 = time.perf_counter()
    feats = set_features(samples, extractor, batch_size, progress)
    t_feat = time.perf_counter() - t0
    sample_info = _source_info(samples)
    if not extractor.is_inception and ref_res is not None and int(ref_res) != sample_info["resolution"]:
        raise ValueError(
            f"{samples}: images are {sample_info['resolution']} px but the reference is {ref_res} px; "
            f"the {extractor.name} features depend on the size: compare sets of the same resolution"
        )
    d = distances(feats, ref_data, extractor, seed, kid_subsets, kid_subset_size, ref_name)
    timing = {"features_samples": t_feat, "features_ref": t_ref, **d.pop("timing")}
    return {
        "extractor": extractor.name,
        "requested_extractor": canonical_name(requested or extractor.name),
        "fallback_used": canonical_name(requested or extractor.name) != extractor.name,
        **{k: d[k] for k in (d["fd_key"], d["kd_key"], d["kd_std_key"], "fd_key", "kd_key", "kd_std_key")},
        **{k: d[k] for k in (d["c2st_key"], d["c2st_std_key"], "c2st_key", "c2st_std_key", "c2st")},
        "ref_name": ref_name or None,
        "n": int(len(feats)),
        **ref_info,
        "feature_dim": int(feats.shape[1]),
        "samples": str(samples),
        "samples_sha256": sample_info.get("source_sha256"),
        "ref": str(ref),
        "kid_subsets": int(kid_subsets),
        "kid_subset_size": d["kid_subset_size"],
        "seed": int(seed),
        **{k: v for k, v in extractor.describe().items() if k != "extractor"},
        "seconds": time.perf_counter() - t_start,
        "timing": timing,
    }

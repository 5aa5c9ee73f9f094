"""Evaluation commands, registered on the main parser: fetch-weights, ref-stats, fid, neighbors, attack.

Every output is written atomically. Metrics computed without the official Inception weights
are labelled fd_<extractor> / kd_<extractor>, never fid / kid.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .weights import DEFAULT_WEIGHTS_DIR


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def _extractor_args(p: argparse.ArgumentParser, default: str, fallback: str) -> None:
    p.add_argument("--extractor", default=default,
                   help=f"feature extractor: inception, dinov2[_vits14|_vitb14|...], pixel, filterbank (default {default})")
    p.add_argument("--fallback", default=fallback,
                   help=f"extractor used when the requested one's weights are missing, or 'none' to fail (default {fallback})")
    p.add_argument("--weights-dir", default=DEFAULT_WEIGHTS_DIR, help="where fetch-weights put the weights")
    p.add_argument("--batch-size", type=int, default=64)


def _setup(a):
    import torch

    from .utils import resolve_device

    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)
    return resolve_device(a.device)


def _extractor(a, dev):
    from .features import resolve_extractor

    return resolve_extractor(a.extractor, a.fallback, device=dev, weights_dir=a.weights_dir)


def _fallback_info(a, ex) -> dict:
    from .features import canonical_name

    return {"requested_extractor": canonical_name(a.extractor), "fallback_used": canonical_name(a.extractor) != ex.name}


def cmd_fetch_weights(a) -> None:
    from .weights import fetch_weights

    path = fetch_weights(a.name, a.dest, url=a.url, sha256=a.sha256, force=a.force, timeout=a.timeout,
                         progress=not a.quiet)
    print(f"{path}: ok")


def cmd_ref_stats(a) -> None:
    from .fid import ref_stats

    dev = _setup(a)
    ex = _extractor(a, dev)
    meta = ref_stats(a.images, a.out, ex, batch_size=a.batch_size, progress=not a.quiet)
    print(f"wrote {a.out}: {meta['n']} images, extractor {meta['extractor']}")


def cmd_fid(a) -> None:
    from .fid import evaluate
    from .utils import write_json

    dev = _setup(a)
    ex = _extractor(a, dev)
    res = evaluate(a.samples, a.ref, ex, requested=a.extractor, seed=a.seed, kid_subsets=a.kid_subsets,
                   kid_subset_size=a.kid_subset_size, batch_size=a.batch_size, progress=not a.quiet,
                   ref_name=a.ref_name)
    res.update(_fallback_info(a, ex))
    write_json(a.out, res)
    print(json.dumps({k: res[k] for k in ("extractor", res["fd_key"], res["kd_key"], "n", "ref_n", "seconds")}))


def cmd_extractor_check(a) -> None:
    from .extractor_check import check
    from .features import load_images
    from .fid import load_ref_stats
    from .utils import write_json

    dev = _setup(a)
    ex = _extractor(a, dev)
    ref = load_ref_stats(a.ref)
    if ref.get("extractor") and ref["extractor"] != ex.name:
        raise ValueError(f"{a.ref}: reference features are {ref['extractor']}, but the extractor is {ex.name}: "
                         f"make the reference with `ambient ref-stats --extractor {ex.name}`")
    if ref.get("features") is None:
        raise ValueError(f"{a.ref}: holds no per-image features (KD needs them): remake it with `ambient ref-stats`")
    res = check(ex, load_images(a.images), ref["features"], ref_name=a.ref_name, seed=a.seed,
                kid_subsets=a.kid_subsets)
    res.update({"images": str(a.images), "ref": str(a.ref), **_fallback_info(a, ex)})
    write_json(a.out, res)
    print(json.dumps({k: res[k] for k in ("extractor", "fd_consistent", "kd_consistent", "fd_fails", "kd_fails")}))


def cmd_neighbors(a) -> None:
    from . import neighbors as nb
    from .utils import write_json

    dev = _setup(a)
    ex = _extractor(a, dev)
    paths = nb.default_paths(a.out)
    csv_path, npz_path = Path(a.csv or paths["csv"]), Path(a.gallery or paths["gallery"])
    png_path = None if a.no_png else Path(a.png or paths["png"])
    summary, rows, gallery = nb.run(a.samples, a.train, ex, k=a.k, gallery_size=a.gallery_size, bins=a.bins,
                                    batch_size=a.batch_size, progress=not a.quiet)
    summary = {**summary, **_fallback_info(a, ex), "csv": str(csv_path), "gallery_npz": str(npz_path),
               "gallery_png": str(png_path) if png_path else None}
    nb.write_csv(csv_path, rows)
    nb.write_npz(npz_path, **gallery)
    if png_path:
        nb.write_png(png_path, nb.pairs_grid(gallery["samples"], gallery["train"]))
    write_json(a.out, summary)
    keys = ("extractor", "n", "sim_mean", "share_gt_0.90", "share_gt_0.95", "share_gt_0.99")
    print(json.dumps({**{k: summary[k] for k in keys}, "carlini_share": summary["carlini"]["share_flagged"]}))


def cmd_attack(a) -> None:
    from . import neighbors as nb
    from .attacks import AttackConfig, run_attack
    from .features import load_images
    from .training import load_model
    from .utils import sha256_file, write_json

    dev = _setup(a)
    cfg = AttackConfig(kind=a.kind, erase=a.erase, fraction=a.fraction, position=a.position, sigma=a.sigma,
                       num_steps=a.steps, sigma_max=a.sigma_max, resample=a.resample, threshold=a.threshold, seed=a.seed)
    model, tcfg, info = load_model(a.checkpoint, device=dev)
    train = load_images(a.train)
    if train.shape[1] != info["channels"] or train.shape[-1] != info["resolution"]:
        raise ValueError(f"{a.train}: images are {train.shape[1]}x{train.shape[-1]}px but the model was trained on "
                         f"{info['channels']}x{info['resolution']}px")
    indices = None
    if a.num_images is not None:
        if a.num_images < 1:
            raise ValueError(f"--num-images {a.num_images} must be >= 1")
        indices = list(range(min(a.num_images, len(train))))
    paths = nb.default_paths(a.out)
    csv_path, npz_path = Path(a.csv or paths["csv"]), Path(a.gallery or paths["gallery"])
    corruption = tcfg.corruption_spec
    if corruption.kind == "noise" and tcfg.sampling_stop_sigma is None:
        corruption = None  # the naive baseline (EDM loss on noisy data): sampled to sigma_min like `ambient sample`
    summary, rows, gallery = run_attack(model, train, cfg, corruption=corruption, indices=indices,
                                        batch_size=a.batch_size, device=dev, gallery_size=a.gallery_size,
                                        progress=not a.quiet, precision=a.precision)
    summary = {"checkpoint": str(a.checkpoint), "checkpoint_sha256": sha256_file(a.checkpoint),
               "corruption": tcfg.corruption_spec.name, "train_steps": tcfg.steps, "train": str(a.train),
               **summary, "csv": str(csv_path), "gallery_npz": str(npz_path)}
    nb.write_csv(csv_path, rows)
    nb.write_npz(npz_path, **gallery)
    write_json(a.out, summary)
    print(json.dumps({"kind": a.kind, "corruption": summary["corruption"],
                      **{m: {k: v[k] for k in ("sim_mean", "share_extracted")} for m, v in summary["methods"].items()}}))


def add_eval_commands(sub) -> None:
    """Add the evaluation sub-commands to the `ambient` parser."""
    p = sub.add_parser("fetch-weights", help="download metric weights (Inception) into resources/weights, checksummed")
    p.add_argument("--name", default="inception", help="which weights (default inception)")
    p.add_argument("--dest", default=DEFAULT_WEIGHTS_DIR, help=f"destination folder (default {DEFAULT_WEIGHTS_DIR})")
    p.add_argument("--url", default=None, help="download from this address instead of the official one (a mirror)")
    p.add_argument("--sha256", default=None, help="expected sha256 (default: the recorded one)")
    p.add_argument("--force", action="store_true", help="download even if a file with the right hash is present")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fetch_weights)

    p = sub.add_parser("ref-stats", help="reference feature statistics (mu, sigma, features) of an image set, as .npz")
    p.add_argument("--images", required=True, help="dataset zip or image folder")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--quiet", action="store_true")
    _extractor_args(p, "inception", "filterbank")
    _device_args(p)
    p.set_defaults(func=cmd_ref_stats)

    p = sub.add_parser("fid", help="FID/KID (or fd_<x>/kd_<x> without the Inception weights) of samples vs a reference")
    p.add_argument("--samples", required=True, help="sample zip or image folder")
    p.add_argument("--ref", required=True, help="reference .npz from ref-stats, or an image zip/folder")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--seed", type=int, default=0, help="seed of KID's random subsets")
    p.add_argument("--ref-name", default="", help="name of the reference set, suffixed to the keys (e.g. heldout: "
                   "fd_filterbank_heldout); a set the model trained on should be called train")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--quiet", action="store_true")
    _extractor_args(p, "inception", "filterbank")
    _device_args(p)
    p.set_defaults(func=cmd_fid)

    p = sub.add_parser("extractor-check", help="does FD/KD in this feature space rise as real images are disturbed "
                       "(noise, blur, salt and pepper, black rectangles; Heusel et al. 2017)?")
    p.add_argument("--images", required=True, help="real images to disturb (dataset zip or folder)")
    p.add_argument("--ref", required=True, help="reference .npz from ref-stats (the same extractor)")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--ref-name", default="heldout", help="name of the reference set, suffixed to the metric keys")
    p.add_argument("--seed", type=int, default=0, help="seed of the disturbances and of KD's subsets")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--quiet", action="store_true")
    _extractor_args(p, "inception", "filterbank")
    _device_args(p)
    p.set_defaults(func=cmd_extractor_check)

    p = sub.add_parser("neighbors", help="nearest training neighbours of samples: similarity histogram, gallery, Carlini criterion")
    p.add_argument("--samples", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--out", required=True, help="summary JSON")
    p.add_argument("--csv", default=None, help="per-sample CSV (default OUT stem + .csv)")
    p.add_argument("--gallery", default=None, help="gallery .npz of the most similar pairs (default OUT stem + _gallery.npz)")
    p.add_argument("--png", default=None, help="gallery PNG grid (default OUT stem + _gallery.png)")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG grid")
    p.add_argument("--k", type=int, default=5, help="neighbours per sample in the CSV")
    p.add_argument("--gallery-size", type=int, default=16)
    p.add_argument("--bins", type=int, default=200, help="histogram bins over [-1, 1]")
    p.add_argument("--quiet", action="store_true")
    _extractor_args(p, "pixel", "pixel")
    _device_args(p)
    p.set_defaults(func=cmd_neighbors)

    p = sub.add_parser("attack", help="inpainting, noise or mask-key attack on training images with a checkpoint as the prior")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--train", required=True, help="the training dataset zip")
    p.add_argument("--kind", choices=["inpaint", "noise", "key"], required=True,
                   help="inpaint | noise | key (sample from noise with the image's own training mask: README)")
    p.add_argument("--out", required=True, help="summary JSON")
    p.add_argument("--csv", default=None, help="per-image CSV (default OUT stem + .csv)")
    p.add_argument("--gallery", default=None, help="gallery .npz (default OUT stem + _gallery.npz)")
    p.add_argument("--erase", choices=["box", "pixels"], default="pixels", help="inpaint: what to erase")
    p.add_argument("--fraction", type=float, default=0.8, help="inpaint: share of pixels erased")
    p.add_argument("--position", choices=["center", "random"], default="center", help="inpaint box position")
    p.add_argument("--sigma", type=float, default=2.0, help="noise: noise std on [-1, 1] images")
    p.add_argument("--sigma-max", type=float, default=80.0, help="inpaint: start of the ODE")
    p.add_argument("--resample", type=int, nargs="+", default=[1, 5],
                   help="inpaint: RePaint resampling per step, one method inpaint_u<U> each (1 = none; default 1 5)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 runs the network under bfloat16 autocast (the ODE state stays float64)")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--threshold", type=float, default=0.95, help="similarity above which an image can count as extracted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=None, help="attack the first N training images (default all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--gallery-size", type=int, default=16)
    p.add_argument("--quiet", action="store_true")
    _device_args(p)
    p.set_defaults(func=cmd_attack)

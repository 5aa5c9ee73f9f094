"""Evaluation commands: fetch-weights, ref-stats, fid, extractor-check, neighbors, attack, hf-energy.

Every output is written atomically. Metrics computed without the official Inception weights
are labelled fd_<extractor> / kd_<extractor>, never fid / kid. A default is the default of the
function or dataclass the command calls (ambient.eval.*), read from there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..settings import PRECISIONS
from .common import (
    Command,
    add_device,
    add_field,
    add_quiet,
    declare_paths,
    fields_of,
    finite_float,
    parameter_defaults,
    setup_device,
)
from .common import register as _register


def _extractor_args(p: argparse.ArgumentParser, default: str, fallback: str) -> None:
    from ..eval.weights import DEFAULT_WEIGHTS_DIR

    p.add_argument(
        "--extractor",
        default=default,
        help="feature extractor: inception, dinov2[_vits14|_vitb14|...], pixel, filterbank",
    )
    p.add_argument(
        "--fallback",
        default=fallback,
        help="extractor used when the requested one's weights are missing, or 'none' to fail",
    )
    p.add_argument("--weights-dir", default=DEFAULT_WEIGHTS_DIR, help="where fetch-weights put the weights")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass of the extractor")
    add_quiet(p)
    add_device(p)


def _extractor(a):
    from ..eval.features import resolve_extractor

    return resolve_extractor(
        a.extractor, a.fallback, device=setup_device(a.device, a.threads), weights_dir=a.weights_dir
    )


def _fallback_info(a, ex) -> dict:
    from ..eval.features import canonical_name

    return {"requested_extractor": canonical_name(a.extractor), "fallback_used": canonical_name(a.extractor) != ex.name}


def _gallery_paths(a) -> tuple[Path, Path]:
    """--csv and --gallery, defaulting to OUT's stem + .csv / _gallery.npz."""
    from ..eval import neighbors as nb

    paths = nb.default_paths(a.out)
    return Path(a.csv or paths["csv"]), Path(a.gallery or paths["gallery"])


def _default_outputs(a) -> dict:
    """The gallery files not given: OUT's stem + .csv, _gallery.npz (and neighbors' _gallery.png)."""
    from ..eval import neighbors as nb

    paths = nb.default_paths(a.out)
    names = ["csv", "gallery", *([] if getattr(a, "no_png", True) else ["png"])]
    return {f"--{n} (default)": paths[n] for n in names if not getattr(a, n)}


# ---------------------------------------------------------------- fetch-weights


def cmd_fetch_weights(a) -> None:
    from ..eval.weights import fetch_weights

    path = fetch_weights(
        a.name, a.dest, url=a.url, sha256=a.sha256, force=a.force, timeout=a.timeout, progress=not a.quiet
    )
    print(f"{path}: ok")


def _fetch_weights(p: argparse.ArgumentParser) -> None:
    from ..eval.weights import fetch_weights

    d = parameter_defaults(fetch_weights)
    p.add_argument("--name", default=d["name"], help="which weights")
    p.add_argument("--dest", default=d["dest_dir"], help="destination folder")
    p.add_argument("--url", default=None, help="download from this address instead of the official one (a mirror)")
    p.add_argument("--sha256", default=None, help="expected sha256 (None: the recorded one)")
    p.add_argument("--force", action="store_true", help="download even if a file with the right hash is present")
    p.add_argument("--timeout", type=finite_float, default=d["timeout"], help="network timeout in seconds")
    add_quiet(p)
    declare_paths(p, out_dirs=["dest"])
    p.set_defaults(func=cmd_fetch_weights)


# ---------------------------------------------------------------- ref-stats, fid, extractor-check


def cmd_ref_stats(a) -> None:
    from ..eval.fid import ref_stats

    ex = _extractor(a)
    meta = ref_stats(a.images, a.out, ex, batch_size=a.batch_size, progress=not a.quiet)
    print(f"wrote {a.out}: {meta['n']} images, extractor {meta['extractor']}")


def _ref_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, help="dataset zip or image folder")
    p.add_argument("--out", required=True, help="output .npz")
    _extractor_args(p, "inception", "filterbank")
    declare_paths(p, inputs=["images", "weights_dir"], outputs=["out"])
    p.set_defaults(func=cmd_ref_stats)


def cmd_fid(a) -> None:
    from ..eval.fid import evaluate
    from ..utils import write_json

    ex = _extractor(a)
    res = evaluate(
        a.samples,
        a.ref,
        ex,
        requested=a.extractor,
        seed=a.seed,
        kid_subsets=a.kid_subsets,
        kid_subset_size=a.kid_subset_size,
        batch_size=a.batch_size,
        progress=not a.quiet,
        ref_name=a.ref_name,
    )
    res.update(_fallback_info(a, ex))
    write_json(a.out, res)
    print(json.dumps({k: res[k] for k in ("extractor", res["fd_key"], res["kd_key"], "n", "ref_n", "seconds")}))


def _fid(p: argparse.ArgumentParser) -> None:
    from ..eval.fid import evaluate

    d = parameter_defaults(evaluate)
    p.add_argument("--samples", required=True, help="sample zip or image folder")
    p.add_argument("--ref", required=True, help="reference .npz from ref-stats, or an image zip/folder")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of KID's random subsets")
    p.add_argument(
        "--ref-name",
        default=d["ref_name"],
        help="name of the reference set, suffixed to the keys (e.g. "
        "heldout: fd_filterbank_heldout); a set the model trained on should be called train",
    )
    p.add_argument("--kid-subsets", type=int, default=d["kid_subsets"], help="KID's random subsets")
    p.add_argument("--kid-subset-size", type=int, default=d["kid_subset_size"], help="images per KID subset")
    _extractor_args(p, "inception", "filterbank")
    declare_paths(p, inputs=["samples", "ref", "weights_dir"], outputs=["out"])
    p.set_defaults(func=cmd_fid)


def cmd_extractor_check(a) -> None:
    from ..data import load_images
    from ..eval.extractor_check import check
    from ..eval.fid import load_ref_stats
    from ..utils import write_json

    ex = _extractor(a)
    ref = load_ref_stats(a.ref)
    if ref.get("extractor") and ref["extractor"] != ex.name:
        raise ValueError(
            f"{a.ref}: reference features are {ref['extractor']}, but the extractor is {ex.name}: "
            f"make the reference with `ambient ref-stats --extractor {ex.name}`"
        )
    if ref.get("features") is None:
        raise ValueError(f"{a.ref}: holds no per-image features (KD needs them): remake it with `ambient ref-stats`")
    res = check(ex, load_images(a.images), ref["features"], ref_name=a.ref_name, seed=a.seed, kid_subsets=a.kid_subsets)
    res.update({"images": str(a.images), "ref": str(a.ref), **_fallback_info(a, ex)})
    write_json(a.out, res)
    print(
        json.dumps(
            {
                k: res[k]
                for k in ("extractor", *(f"{m}_{w}" for m in ("fd", "kd", "c2st") for w in ("consistent", "fails")))
            }
        )
    )


def _extractor_check(p: argparse.ArgumentParser) -> None:
    from ..eval.extractor_check import check

    d = parameter_defaults(check)
    p.add_argument("--images", required=True, help="real images to disturb (dataset zip or folder)")
    p.add_argument("--ref", required=True, help="reference .npz from ref-stats (the same extractor)")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--ref-name", default=d["ref_name"], help="name of the reference set, suffixed to the metric keys")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the disturbances and of KD's subsets")
    p.add_argument("--kid-subsets", type=int, default=d["kid_subsets"], help="KD's random subsets")
    _extractor_args(p, "inception", "filterbank")
    declare_paths(p, inputs=["images", "ref", "weights_dir"], outputs=["out"])
    p.set_defaults(func=cmd_extractor_check)


# ---------------------------------------------------------------- neighbors, attack


def cmd_neighbors(a) -> None:
    from ..eval import neighbors as nb
    from ..utils import write_csv, write_json, write_npz, write_png

    ex = _extractor(a)
    csv_path, npz_path = _gallery_paths(a)
    png_path = None if a.no_png else Path(a.png or nb.default_paths(a.out)["png"])
    summary, rows, gallery = nb.run(
        a.samples,
        a.train,
        ex,
        k=a.k,
        gallery_size=a.gallery_size,
        bins=a.bins,
        batch_size=a.batch_size,
        progress=not a.quiet,
    )
    summary = {
        **summary,
        **_fallback_info(a, ex),
        "csv": str(csv_path),
        "gallery_npz": str(npz_path),
        "gallery_png": str(png_path) if png_path else None,
    }
    write_csv(csv_path, rows)
    write_npz(npz_path, **gallery)
    if png_path:
        write_png(png_path, nb.pairs_grid(gallery["samples"], gallery["train"]))
    write_json(a.out, summary)
    from ..layout import SIMILARITY_THRESHOLDS, share_column

    keys = ("extractor", "n", "sim_mean", *(share_column(t) for t in SIMILARITY_THRESHOLDS))
    print(json.dumps({**{k: summary[k] for k in keys}, "carlini_share": summary["carlini"]["share_flagged"]}))


def _neighbors(p: argparse.ArgumentParser) -> None:
    from ..eval.neighbors import run

    d = parameter_defaults(run)
    p.add_argument("--samples", required=True, help="sample zip or image folder")
    p.add_argument("--train", required=True, help="the training dataset zip")
    p.add_argument("--out", required=True, help="summary JSON")
    p.add_argument("--csv", default=None, help="per-sample CSV (None: OUT stem + .csv)")
    p.add_argument(
        "--gallery", default=None, help="gallery .npz of the most similar pairs (None: OUT stem + _gallery.npz)"
    )
    p.add_argument("--png", default=None, help="gallery PNG grid (None: OUT stem + _gallery.png)")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG grid")
    p.add_argument("--k", type=int, default=d["k"], help="neighbours per sample in the CSV")
    p.add_argument("--gallery-size", type=int, default=d["gallery_size"], help="most similar pairs in the gallery")
    p.add_argument("--bins", type=int, default=d["bins"], help="histogram bins over [-1, 1]")
    _extractor_args(p, "pixel", "pixel")
    outputs = ["out", "csv", "gallery", "png"]
    declare_paths(p, inputs=["samples", "train", "weights_dir"], outputs=outputs, derived=_default_outputs)
    p.set_defaults(func=cmd_neighbors)


def _attack_config(a):
    from ..eval.attacks import AttackConfig

    return AttackConfig(
        kind=a.kind,
        erase=a.erase,
        fraction=a.fraction,
        position=a.position,
        sigma=a.sigma,
        num_steps=a.steps,
        sigma_max=a.sigma_max,
        resample=a.resample,
        threshold=a.threshold,
        seed=a.seed,
    )


def _attacked_indices(a, train, info):
    """Check the training images against the model; the indices --num-images picks (None: all)."""
    if train.shape[1] != info["channels"] or train.shape[-1] != info["resolution"]:
        raise ValueError(
            f"{a.train}: images are {train.shape[1]}x{train.shape[-1]}px but the model was trained on "
            f"{info['channels']}x{info['resolution']}px"
        )
    if a.num_images is None:
        return None
    if a.num_images < 1:
        raise ValueError(f"--num-images {a.num_images} must be >= 1")
    return list(range(min(a.num_images, len(train))))


def cmd_attack(a) -> None:
    from ..checkpoints import load_model
    from ..data import load_images
    from ..eval.attacks import run_attack
    from ..utils import sha256_file, write_csv, write_json, write_npz

    dev = setup_device(a.device, a.threads)
    cfg = _attack_config(a)
    model, tcfg, info = load_model(a.checkpoint, device=dev)
    train = load_images(a.train)
    indices = _attacked_indices(a, train, info)
    csv_path, npz_path = _gallery_paths(a)
    corruption = tcfg.corruption_spec
    if corruption.kind != "clean" and tcfg.effective_loss == "edm":
        corruption = None  # a naive baseline (EDM loss on corrupted data): unmasked, sampled to sigma_min like clean
    summary, rows, gallery = run_attack(
        model,
        train,
        cfg,
        corruption=corruption,
        indices=indices,
        batch_size=a.batch_size,
        device=dev,
        gallery_size=a.gallery_size,
        progress=not a.quiet,
        precision=a.precision,
    )
    summary = {
        "checkpoint": str(a.checkpoint),
        "checkpoint_sha256": sha256_file(a.checkpoint),
        "corruption": tcfg.corruption_spec.name,
        "train_steps": tcfg.steps,
        "train": str(a.train),
        **summary,
        "csv": str(csv_path),
        "gallery_npz": str(npz_path),
    }
    write_csv(csv_path, rows)
    write_npz(npz_path, **gallery)
    write_json(a.out, summary)
    print(
        json.dumps(
            {
                "kind": a.kind,
                "corruption": summary["corruption"],
                **{m: {k: v[k] for k in ("sim_mean", "share_extracted")} for m, v in summary["methods"].items()},
            }
        )
    )


def _attack_method_arguments(p: argparse.ArgumentParser) -> None:
    """The attack itself: AttackConfig's fields, with its defaults."""
    from ..eval.attacks import ERASE, AttackConfig
    from ..layout import ATTACK_KINDS

    f = fields_of(AttackConfig)
    p.add_argument(
        "--kind",
        choices=ATTACK_KINDS,
        required=True,
        help="the attack (key: sample from noise with the image's own training mask; docs/design.md)",
    )
    add_field(p, "--erase", f, "inpaint: what to erase", choices=ERASE)
    add_field(p, "--fraction", f, "inpaint: share of pixels erased")
    add_field(p, "--position", f, "inpaint box position", choices=["center", "random"])
    add_field(p, "--sigma", f, "noise: noise std on [-1, 1] images")
    add_field(p, "--sigma-max", f, "inpaint: start of the ODE")
    add_field(p, "--resample", f, "inpaint: RePaint resampling per step, one method inpaint_u<U> each (1 = none)")
    add_field(p, "--steps", f, "sampler steps", key="num_steps")
    add_field(p, "--threshold", f, "similarity above which an image can count as extracted")
    add_field(p, "--seed", f, "seed of the masks, noise and sampler")


def _attack(p: argparse.ArgumentParser) -> None:
    from ..eval.attacks import run_attack

    d = parameter_defaults(run_attack)
    p.add_argument("--checkpoint", required=True, help="model checkpoint of `ambient train` (the prior)")
    p.add_argument("--train", required=True, help="the training dataset zip")
    p.add_argument("--out", required=True, help="summary JSON")
    p.add_argument("--csv", default=None, help="per-image CSV (None: OUT stem + .csv)")
    p.add_argument("--gallery", default=None, help="gallery .npz (None: OUT stem + _gallery.npz)")
    _attack_method_arguments(p)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d["precision"],
        help="bf16 runs the network under bfloat16 autocast (the ODE state stays float64)",
    )
    p.add_argument("--num-images", type=int, default=None, help="attack the first N training images (None: all)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per batch")
    p.add_argument("--gallery-size", type=int, default=d["gallery_size"], help="image pairs in the gallery")
    add_quiet(p)
    add_device(p)
    declare_paths(p, inputs=["checkpoint", "train"], outputs=["out", "csv", "gallery"], derived=_default_outputs)
    p.set_defaults(func=cmd_attack)


# ---------------------------------------------------------------- hf-energy, summarize, claims


def _hf_energy(p: argparse.ArgumentParser) -> None:
    from ..eval.metrics_hf import DEFAULT_CUTOFF, cmd_hf_energy

    p.add_argument("--samples", required=True, help="sample zip (ambient sample)")
    p.add_argument("--train", required=True, help="prepared training dataset zip (clean images)")
    p.add_argument(
        "--corruption",
        default="clean",
        help="run name: clean, gauss, dust-p0.50, dust-p0.50-naive, noise-s0.20, noise-s0.20-naive",
    )
    p.add_argument(
        "--corruption-seed", type=int, default=0, help="seed of the per-image noise (training.corruption_seed)"
    )
    p.add_argument("--cutoff", type=finite_float, default=DEFAULT_CUTOFF, help="cutoff as a fraction of Nyquist")
    p.add_argument("--out", required=True, help="output JSON")
    declare_paths(p, inputs=["samples", "train"], outputs=["out"])
    p.set_defaults(func=cmd_hf_energy)


COMMANDS = {
    "fetch-weights": Command("download metric weights (Inception) into resources/weights, checksummed", _fetch_weights),
    "ref-stats": Command("reference feature statistics (mu, sigma, features) of an image set, as .npz", _ref_stats),
    "fid": Command("FID/KID (or fd_<x>/kd_<x> without the Inception weights) of samples vs a reference", _fid),
    "extractor-check": Command(
        "does FD/KD in this feature space rise as real images are disturbed (noise, blur, "
        "salt and pepper, black rectangles; Heusel et al. 2017)?",
        _extractor_check,
    ),
    "neighbors": Command(
        "nearest training neighbours of samples: similarity histogram, gallery, Carlini criterion", _neighbors
    ),
    "attack": Command(
        "inpainting, noise or mask-key attack on training images with a checkpoint as the prior", _attack
    ),
    "hf-energy": Command("high-frequency energy of samples vs clean / noisy training data", _hf_energy),
}


def register(sub, names=None) -> None:
    """Add the evaluation commands to the `ambient` parser's sub-commands."""
    _register(sub, COMMANDS, names)

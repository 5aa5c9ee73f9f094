"""Data commands: `ambient prepare` (the embedded faces or an image folder) and `ambient
download-dataset` (CelebA, FFHQ, CelebA-HQ at paper scale).

    python -m ambient download-dataset --source celeba --raw-dir data/raw \\
        --resolution 64 --num-images 3000 --seed 0 --out data/celeba64-3k.zip

download-dataset wraps `ambient.pipeline.download.prepare_paper_dataset` (see its module docstring for
the recipe: official archive, checksums, safe extraction into RAW_DIR/<source>/, a subset chosen by
numpy.random.default_rng(seed) over the sorted file list, center crop to a square, Lanczos resize).
The archive and its extraction stay in RAW_DIR and are reused by later calls. --url (or
$AMBIENT_<SOURCE>_URL) overrides the registry's url; FFHQ has none, so give one (file:// works) or
put thumbnails128x128.zip into RAW_DIR. The workflow's download_dataset rule runs it as
`python -m ambient download-dataset`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import Command, add_quiet, declare_paths
from .common import register as _register

# ---------------------------------------------------------------- prepare


def _prepared(a):
    """The images, ids and provenance of `ambient prepare`'s source."""
    from .. import data

    if a.source == "embedded":
        images, ids = data.embedded_faces(100, 24 if a.resolution is None else a.resolution)
        return images, ids, {"source": "embedded:skimage.lfw_subset", "recipe": f"center crop to {images.shape[-1]}"}
    if not a.folder:
        raise ValueError("--source folder needs --folder PATH")
    limit = None if a.num_images is None else a.num_images + a.heldout_images
    images, ids = data.image_folder(a.folder, 64 if a.resolution is None else a.resolution, a.channels, limit)
    return (
        images,
        ids,
        {
            "source": f"folder:{Path(a.folder).name}",
            "recipe": f"center crop to square, Lanczos resize to {images.shape[-1]}, "
            f"{'RGB' if a.channels == 3 else 'grayscale'}",
        },
    )


def cmd_prepare(a) -> None:
    from .. import data

    # 0 means 0 (never "the default": the defaults are None); --num-images and --resolution >= 1
    # are checked for every command by entry.check_arguments
    if a.heldout_images < 0:
        raise ValueError(f"--heldout-images {a.heldout_images} must be >= 0")
    if (a.heldout_images > 0) != bool(a.heldout_out):
        raise ValueError("--heldout-images N > 0 and --heldout-out PATH go together")
    images, ids, info = _prepared(a)
    train_idx, held_idx = data.split_heldout(len(images), a.heldout_images, a.split_seed, a.num_images)
    split = {
        "split_seed": a.split_seed,
        "num_available": len(images),
        "heldout_rule": "heldout = sorted(numpy.random.default_rng(split_seed).choice(num_available, "
        "num_heldout, replace=False)); train = the first num_images of the rest",
    }
    m = data.write_image_zip(
        a.out,
        images[train_idx],
        [ids[i] for i in train_idx],
        {**info, **split, "split": "train", "num_heldout": len(held_idx)},
    )
    print(f"wrote {a.out}: {m['num_images']} images, {m['channels']}x{m['resolution']}x{m['resolution']}")
    if a.heldout_out:
        h = data.write_image_zip(
            a.heldout_out,
            images[held_idx],
            [ids[i] for i in held_idx],
            {**info, **split, "split": "heldout", "num_train": len(train_idx)},
        )
        print(f"wrote {a.heldout_out}: {h['num_images']} held-out images (never trained on)")


def _prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        choices=["embedded", "folder"],
        default="embedded",
        help="embedded: the faces shipped with scikit-image; folder: an image folder",
    )
    p.add_argument("--folder", help="image folder (with --source folder)")
    p.add_argument(
        "--resolution", type=int, default=None, help="output size (None: embedded crops to 24, folder resizes to 64)"
    )
    p.add_argument("--channels", type=int, choices=[1, 3], default=3, help="folder source: 1 grayscale or 3 RGB")
    p.add_argument("--num-images", type=int, default=None, help="training images (None: all not held out)")
    p.add_argument(
        "--heldout-images",
        type=int,
        default=0,
        help="images held out of training, written to --heldout-out (quality is scored against them)",
    )
    p.add_argument("--heldout-out", default=None, help="zip of the held-out images")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out choice")
    p.add_argument("--out", required=True, help="prepared dataset zip")
    declare_paths(p, inputs=["folder"], outputs=["out", "heldout_out"])
    p.set_defaults(func=cmd_prepare)


# ---------------------------------------------------------------- download-dataset


def cmd_download_dataset(a) -> None:
    from ..pipeline.download import SOURCES, prepare_paper_dataset

    if a.list:
        for name, src in SOURCES.items():
            print(f"{name}: {src['description']} ({src.get('size_note', 'size unknown')}); {src['homepage']}")
            print(f"  terms: {src['license']}")
        return
    if not a.source or not a.out:
        raise ValueError("download-dataset needs --source and --out (or --list)")
    if a.source in SOURCES:  # before any byte is fetched: the terms the data comes under
        print(f"{a.source}: {SOURCES[a.source]['license']} ({SOURCES[a.source]['homepage']})", flush=True)
    kw = {}
    if a.no_verify:
        kw.update(sha256=None, md5=None)
    manifest = prepare_paper_dataset(
        a.source,
        a.raw_dir,
        a.out,
        resolution=a.resolution,
        num_images=a.num_images,
        seed=a.seed,
        url=a.url,
        progress=not a.quiet,
        heldout_out=a.heldout_out,
        heldout_images=a.heldout_images,
        **kw,
    )
    print(
        json.dumps(
            {
                "out": str(a.out),
                "source": manifest.get("source", a.source),
                "num_images": manifest.get("num_images"),
                "resolution": manifest.get("resolution"),
                "seed": a.seed,
                "archive_sha256": manifest.get("archive_sha256"),
            }
        )
    )


def _download_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source", choices=["celeba", "ffhq", "celeba_hq"], help="paper dataset (ambient.pipeline.download.SOURCES)"
    )
    p.add_argument("--raw-dir", default="data/raw", help="downloads and extractions (kept, reused)")
    p.add_argument("--resolution", type=int, default=64, help="output size in pixels")
    p.add_argument("--num-images", type=int, default=None, help="size of the seeded subset (None: all images)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset")
    p.add_argument(
        "--heldout-out",
        default=None,
        help="also write the images outside the training subset here (the quality reference)",
    )
    p.add_argument(
        "--heldout-images",
        type=int,
        default=None,
        help="with --heldout-out: how many of them (seeded choice; None: all)",
    )
    p.add_argument("--url", default=None, help="archive url overriding the registry (file:// works)")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check the registry's archive checksums (a repackaged mirror); still recorded",
    )
    p.add_argument("--out", help="prepared dataset zip")
    p.add_argument("--list", action="store_true", help="list the known sources and exit")
    add_quiet(p)
    declare_paths(p, outputs=["out", "heldout_out"], out_dirs=["raw_dir"])
    p.set_defaults(func=cmd_download_dataset)


COMMANDS = {
    "prepare": Command("make a prepared dataset zip from the embedded faces or an image folder", _prepare),
    "download-dataset": Command(
        "download and prepare CelebA / FFHQ / CelebA-HQ (paper scale)", _download_dataset, description=__doc__
    ),
}


def register(sub, names=None) -> None:
    """Add the data commands to the `ambient` parser's sub-commands."""
    _register(sub, COMMANDS, names)

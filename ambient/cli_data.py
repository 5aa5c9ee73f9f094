"""`ambient download-dataset`: download and prepare a paper-scale dataset (CelebA, FFHQ, CelebA-HQ).

    python -m ambient.cli_data download-dataset --source celeba --raw-dir data/raw \
        --resolution 64 --num-images 3000 --seed 0 --out data/celeba64-3k.zip

Wraps `ambient.download.prepare_paper_dataset` (see its module docstring for the recipe: official
archive, checksums, safe extraction into RAW_DIR/<source>/, a subset chosen by
numpy.random.default_rng(seed) over the sorted file list, center crop to a square, Lanczos resize).
The archive and its extraction stay in RAW_DIR and are reused by later calls. --url (or
$AMBIENT_<SOURCE>_URL) overrides the registry's url; FFHQ has none, so give one (file:// works) or
put thumbnails128x128.zip into RAW_DIR.

The workflow's download_dataset rule runs it as `python -m ambient.cli_data download-dataset`;
`add_data_commands` registers the same command on the main `ambient` parser.
"""
from __future__ import annotations

import argparse
import json
import sys


def cmd_download_dataset(a) -> None:
    from .download import SOURCES, prepare_paper_dataset

    if a.list:
        for name, src in SOURCES.items():
            print(f"{name}: {src['description']} ({src.get('size_note', 'size unknown')}); {src['homepage']}")
        return
    if not a.source or not a.out:
        raise ValueError("download-dataset needs --source and --out (or --list)")
    kw = {}
    if a.no_verify:
        kw.update(sha256=None, md5=None)
    manifest = prepare_paper_dataset(a.source, a.raw_dir, a.out, resolution=a.resolution, num_images=a.num_images,
                                     seed=a.seed, url=a.url, progress=not a.quiet, heldout_out=a.heldout_out,
                                     heldout_images=a.heldout_images, **kw)
    print(json.dumps({"out": str(a.out), "source": manifest.get("source", a.source),
                      "num_images": manifest.get("num_images"), "resolution": manifest.get("resolution"),
                      "seed": a.seed, "archive_sha256": manifest.get("archive_sha256")}))


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["celeba", "ffhq", "celeba_hq"], help="paper dataset (ambient.download.SOURCES)")
    p.add_argument("--raw-dir", default="data/raw", help="downloads and extractions (kept, reused); default data/raw")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--num-images", type=int, default=None, help="size of the seeded subset (default: all images)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset")
    p.add_argument("--heldout-out", default=None,
                   help="also write the images outside the training subset here (the quality reference)")
    p.add_argument("--heldout-images", type=int, default=None,
                   help="with --heldout-out: how many of them (seeded choice; default all)")
    p.add_argument("--url", default=None, help="archive url overriding the registry (file:// works)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not check the registry's archive checksums (a repackaged mirror); still recorded")
    p.add_argument("--out", help="prepared dataset zip")
    p.add_argument("--list", action="store_true", help="list the known sources and exit")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_download_dataset)


def add_data_commands(sub) -> None:
    """Register `ambient download-dataset` on the main parser's sub-commands."""
    p = sub.add_parser("download-dataset", help="download and prepare CelebA / FFHQ / CelebA-HQ (paper scale)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)


def main(argv: list[str] | None = None) -> int:
    from .entry import run_command

    parser = argparse.ArgumentParser(prog="python -m ambient.cli_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(argv)
    return run_command(a, a.command)


if __name__ == "__main__":
    sys.exit(main())

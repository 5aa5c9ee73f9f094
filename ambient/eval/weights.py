"""Pretrained weights the metrics need, fetched once into `resources/weights/` and checksummed.

`fetch_weights("inception")` downloads clean-fid's TorchScript Inception
(`inception-2015-12-05.pt`, the StyleGAN2-ADA translation of the TF 2015-12-05 graph) from its
official URL with `ambient.fetch.download` (streamed to a `.part` file beside the
destination, retried, resumed) and renames it into place only when its sha256 matches. A
mismatch leaves nothing behind.

The recorded sha256 (95,607,719 bytes) is the one k-diffusion pins for the same URL
(`crowsonkb/k-diffusion`, `InceptionV3FeatureExtractor`); the metric code refuses to call a
number "FID" unless the file it loaded has this hash.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from ..utils import sha256_file

DEFAULT_WEIGHTS_DIR = "resources/weights"

WEIGHTS: dict[str, dict] = {
    "inception": {
        "file": "inception-2015-12-05.pt",
        "url": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        "sha256": "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
        "size": 95_607_719,
    },
}


def _entry(name: str) -> dict:
    if name not in WEIGHTS:
        raise ValueError(f"unknown weights {name!r}: known are {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def weights_path(name: str, weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR) -> Path:
    """Where the weights `name` live (whether or not they are there)."""
    return Path(weights_dir) / _entry(name)["file"]


@functools.lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached per (path, size, mtime) within this process."""
    st = os.stat(path)
    return _cached_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def verify_weights(name: str, weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR) -> Path:
    """The path of the weights `name`, checked against their recorded sha256.

    Raises FileNotFoundError when missing and ValueError when the file is not the recorded one
    (truncated download, another network saved under the same name, ...), naming the file.
    """
    path = weights_path(name, weights_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {name} weights not found (run `ambient fetch-weights --name {name}`)")
    expected = _entry(name)["sha256"]
    got = file_sha256(path)
    if expected and got != expected:
        raise ValueError(
            f"{path}: sha256 {got} is not the recorded {expected} of the {name} weights; "
            f"the file is corrupt or a different network: delete it and run "
            f"`ambient fetch-weights --name {name}`"
        )
    return path


def fetch_weights(
    name: str = "inception",
    dest_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the weights `name` into `dest_dir` and check their sha256.

    `url` overrides the official address (a mirror); `sha256` overrides the recorded checksum
    (needed only for weights without one; the metrics themselves accept the Inception file only
    with its recorded hash). A file already present with the right hash is kept; `force`
    downloads it again, replacing it only once the new copy is verified.
    """
    entry = _entry(name)
    dest = Path(dest_dir) / entry["file"]
    expected = (sha256 or entry["sha256"] or "").lower() or None
    if expected is None:
        raise ValueError(f"no sha256 is recorded for {name}: pass --sha256")
    from ..fetch import download  # streamed to a .part file beside dest, retried, verified, renamed

    if not dest.exists():
        return download(url or entry["url"], dest, sha256=expected, timeout=timeout, progress=progress)
    if not force and sha256_file(dest) == expected:
        return dest
    if not force:
        print(f"{dest}: present but its sha256 does not match {expected}; downloading it again", file=sys.stderr)
    # replace an existing file only by a verified new one
    new = dest.with_name(f".{dest.name}.new")
    new.unlink(missing_ok=True)
    download(url or entry["url"], new, sha256=expected, timeout=timeout, progress=progress)
    os.replace(new, dest)
    return dest

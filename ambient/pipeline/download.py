"""Downloading and preparing the paper-scale datasets (CelebA, FFHQ thumbnails, CelebA-HQ).

Pipeline for one source ``name`` (see `SOURCES`):

1. **Download** the official archive to ``raw_dir/<filename>`` with `ambient.fetch.download`: streamed to
   ``<filename>.part`` beside it, resumed with an HTTP ``Range`` request after an interruption,
   retried with exponential backoff, verified against the known checksum(s), and only then
   renamed onto the final name. A finished archive is never fetched twice.
2. **Extract** it with `safe_extract` into ``raw_dir/<name>/`` (via a temporary folder beside it
   and one atomic rename). Members with absolute paths, ``..`` components, links or device
   entries are refused before anything is written. The archive's url and checksums are recorded
   in ``raw_dir/<name>/.source.json``, so the archive itself may be deleted afterwards.
3. **Choose the subset** reproducibly: the image files matching the source's layout glob are
   sorted by their path relative to ``raw_dir/<name>`` (POSIX separators), then
   ``numpy.random.default_rng(seed).choice(len(files), num_images, replace=False)`` picks the
   indices, which are sorted again (so the output order is the sorted file order).
4. **Crop and resize** every chosen image (`ambient.data.load_image_file`): decode, convert to
   RGB, center crop to the largest square (offsets ``(w - side) // 2``, ``(h - side) // 2``,
   i.e. rounding toward the top-left), then resize to ``resolution`` x ``resolution`` with PIL's
   Lanczos filter (``Image.Resampling.LANCZOS``) and round to uint8.

   * CelebA (``img_align_celeba``, 178x218 JPEGs): center crop to 178x178 (rows 20..197),
     Lanczos resize to 64x64.
   * FFHQ thumbnails (``thumbnails128x128``, 128x128 PNGs): already square, so only the
     Lanczos resize 128 -> 64.
   * CelebA-HQ (1024x1024): already square, Lanczos resize 1024 -> ``resolution``.
5. **Write** the prepared zip with `ambient.data.write_image_zip`. Its manifest records the
   source name, url, archive checksums, seed, the subset (indices into the sorted file list and
   the file names) and this recipe, so the exact subset can be rebuilt and audited.

The download primitives (HTTP with resume and retries, checksums, Google Drive's confirmation
page) are `ambient.fetch`'s; this module holds the dataset registry and the preparation.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from .. import data
from ..fetch import check_hashes, download, file_hashes, log
from ..utils import write_json

SOURCE_RECORD = ".source.json"

RECIPE = (
    "sorted image files (POSIX relative paths); subset = sorted(numpy.random.default_rng(seed)"
    ".choice(len(files), num_images, replace=False)); each image: decode with PIL, convert to RGB, "
    "center crop to the largest square (offset (w-side)//2, (h-side)//2), resize to "
    "resolution x resolution with PIL Image.Resampling.LANCZOS, uint8"
)


def _gdrive(file_id: str) -> list[str]:
    return [
        f"https://drive.google.com/uc?export=download&id={file_id}",
        f"https://drive.usercontent.google.com/download?id={file_id}&export=download",
    ]


# ---------------------------------------------------------------- dataset registry
#
# Checksums are those published by a maintainer we can name; a checksum left as None is not
# known to us (none was published for that file) and is then simply not checked. Whatever the
# download gives is recorded (sha256 and md5) in the prepared dataset's manifest either way.
SOURCES: dict[str, dict] = {
    "celeba": {
        "description": "CelebA, aligned & cropped JPEGs (178x218), 202,599 images",
        "homepage": "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        # The official Google Drive file (the id torchvision.datasets.CelebA uses).
        "gdrive_id": "0B7EVK8r0v71pZjFTYXZWM3FlRnM",
        "urls": _gdrive("0B7EVK8r0v71pZjFTYXZWM3FlRnM"),
        "filename": "img_align_celeba.zip",
        "md5": "00d2c5bc6d35e252742224ab0c1e8fcb",  # from torchvision's CelebA.file_list
        "sha256": None,  # not published anywhere we know of
        "size_note": "about 1.4 GB",
        "images": ["img_align_celeba/*.jpg"],  # img_align_celeba/000001.jpg ... 202599.jpg
        "num_images": 202599,
        "recipe": "center crop 178x218 -> 178x178, Lanczos resize to the resolution (64)",
        "license": "CelebA is available for non-commercial research purposes only, under the "
        "agreement on its homepage; the images are not owned by CUHK and must not be "
        "redistributed or used commercially.",
    },
    "ffhq": {
        "description": "FFHQ thumbnails, 128x128 PNGs, 70,000 images",
        "homepage": "https://github.com/NVlabs/ffhq-dataset",
        # The official distribution is a Google Drive *folder* (thumbnails128x128/00000/00000.png
        # ... 69000/69999.png, 1.95 GB) that cannot be fetched with one request; the `zips`
        # folder holds thumbnails128x128.zip, whose file id and checksum we do not know. So
        # there is no default url: download thumbnails128x128.zip (or run the official
        # download_ffhq.py --thumbs) yourself and either set AMBIENT_FFHQ_URL / pass url= to a
        # place that serves it (file:// works), put it at raw_dir/thumbnails128x128.zip, or put
        # the extracted thumbnails128x128/ folder under raw_dir/ffhq/.
        "pages": [
            "https://drive.google.com/open?id=1tg-Ur7d4vk1T8Bn0pPpUSQPxlPGBlGfv",  # thumbnails128x128/
            "https://drive.google.com/open?id=1WocxvZ4GEZ1DI8dOz30aSj2zT6pkATYS",  # zips/
        ],
        "urls": [],
        "filename": "thumbnails128x128.zip",
        # Unknown: NVIDIA publishes an md5 per PNG (in ffhq-dataset-v2.json), none for the zip.
        "md5": None,
        "sha256": None,
        "size_note": "about 1.95 GB",
        "images": ["thumbnails128x128/*/*.png", "*/*.png", "*.png"],
        "num_images": 70000,
        "recipe": "128x128 PNG, Lanczos resize 128 -> resolution (64); no crop (already square)",
        "license": "Dataset (metadata, layout) by NVIDIA under CC BY-NC-SA 4.0; each image under "
        "its Flickr license (CC BY 2.0, CC BY-NC 2.0, Public Domain Mark 1.0, CC0 1.0 "
        "or U.S. Government Works): non-commercial use, credit and indicate changes.",
    },
    "celeba_hq": {
        "description": "CelebA-HQ, 30,000 images at 1024x1024 (optional)",
        "homepage": "https://github.com/tkarras/progressive_growing_of_gans",
        # CelebA-HQ was released as a recipe (deltas applied to CelebA in-the-wild images), not as
        # an archive; third-party packagings exist (e.g. CelebAMask-HQ.zip with
        # CelebAMask-HQ/CelebA-HQ-img/0.jpg ... 29999.jpg), but we know no stable official url or
        # checksum: supply one with AMBIENT_CELEBA_HQ_URL or url=.
        "urls": [],
        "filename": "celeba_hq.zip",
        "md5": None,  # unknown
        "sha256": None,  # unknown
        "images": ["CelebAMask-HQ/CelebA-HQ-img/*.jpg", "**/*.jpg", "**/*.png"],
        "num_images": 30000,
        "recipe": "1024x1024, Lanczos resize to the resolution; no crop (already square)",
        "license": "Derived from CelebA: non-commercial research purposes only (CelebA agreement); "
        "CelebAMask-HQ adds the same restriction.",
    },
}


# ---------------------------------------------------------------- safe extraction


def _check_member_name(name: str, archive: Path) -> None:
    if not name or "\x00" in name:
        raise ValueError(f"{archive}: refusing member {name!r}: empty or invalid name")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise ValueError(f"{archive}: refusing member {name!r}: absolute path")
    if ".." in PurePosixPath(norm).parts:
        raise ValueError(f"{archive}: refusing member {name!r}: '..' path component")


def _zip_members(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        _check_member_name(info.filename, archive)
        ftype = stat.S_IFMT(info.external_attr >> 16)  # Unix file type bits, 0 when absent
        if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
            kind = "symlink" if ftype == stat.S_IFLNK else "device or special file"
            raise ValueError(f"{archive}: refusing member {info.filename!r}: {kind}")


def _tar_members(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tf.getmembers()
    for m in members:
        _check_member_name(m.name, archive)
        if m.issym() or m.islnk():
            raise ValueError(f"{archive}: refusing member {m.name!r}: link to {m.linkname!r}")
        if not (m.isfile() or m.isdir()):
            raise ValueError(f"{archive}: refusing member {m.name!r}: device or special file")
    return members


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a .zip or .tar[.gz|.bz2|.xz]/.tgz archive into the new folder `target`, safely.

    Every member is checked before anything is written: an absolute path, a ``..`` component,
    a symlink or hardlink (all links are refused) or a device/FIFO entry raises ValueError naming
    the member. The archive is extracted into a temporary folder beside `target`, which is then
    renamed onto `target` (so `target` either is complete or does not exist). `target` must not
    exist yet (an empty folder is allowed). The format is detected from the content.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive not found")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target}: already exists; delete it to extract {archive} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _zip_members(zf, archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                members = _tar_members(tf, archive)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(tmp, members=members)
        else:
            raise ValueError(f"{archive}: not a zip or tar archive")
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- paper datasets

_DEFAULT = object()


def _env_key(name: str, what: str) -> str:
    return f"AMBIENT_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_{what}"


def source(name: str) -> dict:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown dataset source {name!r}: use one of {sorted(SOURCES)}") from None


def source_url(name: str, url: str | None = None) -> str | None:
    """The url to fetch `name` from: `url` if given, else $AMBIENT_<NAME>_URL, else the registry's."""
    src = source(name)
    return url or os.environ.get(_env_key(name, "URL")) or (src["urls"][0] if src["urls"] else None)


def source_checksums(name: str, sha256=_DEFAULT, md5=_DEFAULT) -> dict[str, str | None]:
    """Checksums to verify: argument, else $AMBIENT_<NAME>_SHA256/_MD5 (empty or 'none' turns the
    check off), else the registry's."""
    src = source(name)
    out = {}
    for algo, given in (("sha256", sha256), ("md5", md5)):
        if given is _DEFAULT:
            env = os.environ.get(_env_key(name, algo.upper()))
            given = src[algo] if env is None else (None if env.strip().lower() in ("", "none") else env)
        out[algo] = given or None
    return out


def list_images(root: str | os.PathLike, patterns: list[str] | str) -> tuple[list[Path], str]:
    """Image files under `root` matching the first layout glob that matches any; sorted."""
    root = Path(root)
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    for pattern in patterns:
        files = [
            p
            for p in root.glob(pattern)
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in data.IMAGE_SUFFIXES
        ]
        if files:
            return sorted(files, key=lambda p: p.relative_to(root).as_posix()), pattern
    raise ValueError(f"{root}: no image files match the expected layout {patterns}; is this the right archive?")


def choose_subset(num_files: int, num_images: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `num_images` of `num_files` sorted files, chosen by `seed`."""
    if num_images is None or num_images == num_files:
        return np.arange(num_files)
    if not 1 <= num_images <= num_files:
        raise ValueError(f"num_images={num_images}: must be in 1..{num_files} (the files available)")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_files, num_images, replace=False))


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive lock on `lock_path` (POSIX flock; a no-op where fcntl is missing), so that
    parallel jobs preparing from the same raw_dir download and extract only once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process that holds {lock_path}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_and_extract(
    name: str,
    raw_dir: str | os.PathLike,
    url: str | None = None,
    *,
    sha256=_DEFAULT,
    md5=_DEFAULT,
    progress: bool = True,
    **download_kw,
) -> tuple[Path, dict]:
    """Make sure ``raw_dir/<name>/`` holds the extracted source; return it and its source record."""
    with _exclusive(Path(raw_dir) / f".{name}.lock"):
        return _fetch_and_extract(name, raw_dir, url, sha256=sha256, md5=md5, progress=progress, **download_kw)


def _fetch_and_extract(
    name: str, raw_dir: str | os.PathLike, url: str | None, *, sha256, md5, progress: bool, **download_kw
) -> tuple[Path, dict]:
    src = source(name)
    raw_dir = Path(raw_dir)
    root = raw_dir / name
    record_path = root / SOURCE_RECORD
    if root.is_dir() and any(root.iterdir()):
        record = {"name": name}
        if record_path.is_file():
            record = json.loads(record_path.read_text())
        return root, record
    checks = source_checksums(name, sha256, md5)
    archive = raw_dir / src["filename"]
    use_url = source_url(name, url)
    if not archive.exists():
        if use_url is None:
            pages = " or ".join(src.get("pages", [])) or src["homepage"]
            raise ValueError(
                f"{name}: no download url is known for {src['filename']} (see {pages}); download it "
                f"yourself and pass url=, set {_env_key(name, 'URL')} (http(s):// or file://), or put "
                f"the archive at {archive} or its extracted files under {root}/"
            )
        download(use_url, archive, sha256=checks["sha256"], md5=checks["md5"], progress=progress, **download_kw)
        hashes = file_hashes(archive)
    else:
        hashes = check_hashes(archive, {k: v for k, v in checks.items() if v})
    record = {"name": name, "url": use_url, "archive": src["filename"], **hashes}
    tmp_target = raw_dir / f".{name}.extracted"
    if tmp_target.exists():
        shutil.rmtree(tmp_target)
    safe_extract(archive, tmp_target)
    write_json(tmp_target / SOURCE_RECORD, record)
    if root.exists():
        root.rmdir()  # empty (checked above)
    os.replace(tmp_target, root)
    return root, record


def _load_resized(paths: list[Path], resolution: int, desc: str, progress: bool) -> np.ndarray:
    """The images at `paths`, center-cropped/resized to `resolution` RGB, stacked (with a progress bar)."""
    return np.stack(
        [
            data.load_image_file(p, resolution, 3)
            for p in tqdm(paths, desc=desc, unit="img", disable=not progress, file=sys.stderr)
        ]
    )


def _heldout_indices(num_files: int, idx: np.ndarray, heldout_images: int | None, seed: int) -> np.ndarray:
    """The files outside the training subset `idx`; with `heldout_images`, a sorted seeded choice of them."""
    rest = np.setdiff1d(np.arange(num_files), idx)
    if heldout_images is not None:
        if not 1 <= heldout_images <= len(rest):
            raise ValueError(
                f"heldout_images={heldout_images}: must be in 1..{len(rest)} (the images outside the training subset)"
            )
        rest = np.sort(np.random.default_rng(seed + 1).choice(rest, heldout_images, replace=False))
    return rest


def _write_heldout(
    name: str,
    heldout_out: str | os.PathLike,
    heldout_images: int | None,
    files: list[Path],
    idx: np.ndarray,
    root: Path,
    info: dict,
    resolution: int,
    seed: int,
    progress: bool,
) -> None:
    """Write the held-out split (the files outside the training subset) to `heldout_out`."""
    rest = _heldout_indices(len(files), idx, heldout_images, seed)
    held = [files[i] for i in rest]
    held_rel = [p.relative_to(root).as_posix() for p in held]
    held_images = _load_resized(held, resolution, f"prepare {name} held-out", progress)
    data.write_image_zip(
        heldout_out,
        held_images,
        [f"{name}:{r}" for r in held_rel],
        {
            **info,
            "split": "heldout",
            "subset_indices": [int(i) for i in rest],
            "subset_files": held_rel,
            "heldout_rule": "the files outside the training subset; with heldout_images, "
            "numpy.random.default_rng(seed + 1).choice of them, sorted",
        },
    )


def prepare_paper_dataset(
    name: str,
    raw_dir: str | os.PathLike,
    out_zip: str | os.PathLike,
    resolution: int = 64,
    num_images: int | None = 3000,
    seed: int = 0,
    url: str | None = None,
    *,
    sha256=_DEFAULT,
    md5=_DEFAULT,
    progress: bool = True,
    heldout_out: str | os.PathLike | None = None,
    heldout_images: int | None = None,
    **download_kw,
) -> dict:
    """Download (if needed), extract, choose a seeded subset, crop/resize and write `out_zip`.

    See the module docstring for the recipe. `url` overrides the registry (as does
    $AMBIENT_<NAME>_URL); `sha256`/`md5` override the registry's checksums (None: do not check;
    also $AMBIENT_<NAME>_SHA256/_MD5). The registry's checksums still apply to an overridden url,
    since a mirror should serve the same file. Returns the manifest written.
    """
    src = source(name)
    root, record = fetch_and_extract(name, raw_dir, url, sha256=sha256, md5=md5, progress=progress, **download_kw)
    files, pattern = list_images(root, src["images"])
    idx = choose_subset(len(files), num_images, seed)
    chosen = [files[i] for i in idx]
    rel = [p.relative_to(root).as_posix() for p in chosen]
    images = _load_resized(chosen, resolution, f"prepare {name}", progress)
    info = {
        "source": name,
        "description": src["description"],
        "url": record.get("url"),
        "archive": record.get("archive", src["filename"]),
        "archive_sha256": record.get("sha256"),
        "archive_md5": record.get("md5"),
        "layout": pattern,
        "num_available": len(files),
        "seed": int(seed),
        "subset_indices": [int(i) for i in idx],
        "subset_files": rel,
        "recipe": f"{src['recipe']}; {RECIPE}",
        "license": src["license"],
    }
    manifest = data.write_image_zip(out_zip, images, [f"{name}:{r}" for r in rel], {**info, "split": "train"})
    if heldout_out:
        _write_heldout(name, heldout_out, heldout_images, files, idx, root, info, resolution, seed, progress)
    return manifest

"""Image sources, prepared datasets, and image sets (zips or folders) read into arrays.

A prepared dataset is one zip of uint8 PNGs (`000000.png`, ...) plus `dataset.json`, a
manifest with the index, source id and sha256 of every image. Zip entries carry a fixed
timestamp so the same images always give the same bytes (DVC hashes files).
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .utils import atomic_path, sha256_bytes

MANIFEST = "dataset.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)
# Modes PIL converts to L/RGB without losing meaning; 16-bit and float modes need a decision we do not guess.
_CONVERTIBLE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La"}


@dataclass
class Dataset:
    """Images as uint8, shape (N, C, H, W), plus the manifest they came with."""

    images: np.ndarray
    manifest: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def as_float(self):
        """Images as a float32 tensor in [-1, 1]."""
        from .utils import uint8_to_signed

        return uint8_to_signed(self.images)


# ---------------------------------------------------------------- sources


def embedded_faces(num_images: int = 100, crop: int = 24) -> tuple[np.ndarray, list[str]]:
    """The faces of `skimage.data.lfw_subset()` (25x25 grayscale), center-cropped to `crop`.

    The first 100 entries of lfw_subset are faces (the other 100 are not); it ships
    inside scikit-image, so this source needs no download.
    """
    from skimage import data as skdata

    faces = skdata.lfw_subset()[:100]
    if not 1 <= num_images <= len(faces):
        raise ValueError(f"embedded source: num_images={num_images} must be in 1..{len(faces)}")
    size = faces.shape[-1]
    if not 1 <= crop <= size:
        raise ValueError(f"embedded source: crop={crop} must be in 1..{size}")
    top = (size - crop) // 2
    faces = faces[:num_images, top : top + crop, top : top + crop]
    images = np.clip(np.rint(faces * 255.0), 0, 255).astype(np.uint8)[:, None]
    return images, [f"lfw_subset:{i}" for i in range(num_images)]


# A source image may be upscaled at most this much; a tiny image (a 1x1 icon, a thumbnail) blown
# up to the output size is no face, and would train and score as one.
MAX_UPSCALE = 2.0


def _center_crop_resize(img: Image.Image, resolution: int) -> Image.Image:
    w, h = img.size
    side = min(w, h)
    if side * MAX_UPSCALE < resolution:
        raise ValueError(
            f"{w}x{h} px is too small for {resolution} px output (at most {MAX_UPSCALE:g}x upscaling): "
            f"use a lower --resolution, or remove the image"
        )
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return img


def load_image_file(path: Path, resolution: int, channels: int) -> np.ndarray:
    """One image file -> uint8 array (C, R, R): center crop to a square, resize, convert mode."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in _CONVERTIBLE_MODES:
                raise ValueError(
                    f"{path}: image mode {img.mode!r} is not supported (use 8-bit L, RGB, RGBA or P images)"
                )
            img = img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from None
    try:
        arr = np.asarray(_center_crop_resize(img, resolution), dtype=np.uint8)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def image_folder(
    folder: str | Path, resolution: int, channels: int = 3, max_images: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """Every image file under `folder` (sorted, recursive), center-cropped and resized."""
    folder = Path(folder)
    if channels not in (1, 3):
        raise ValueError(f"channels={channels}: use 1 (grayscale) or 3 (RGB)")
    if resolution < 1 or (max_images is not None and max_images < 1):
        raise ValueError(f"{folder}: resolution={resolution} and max_images={max_images} must be >= 1")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder}: the image folder is empty")
    bad = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise ValueError(
            f"{bad[0]}: not an image file (expected one of {sorted(IMAGE_SUFFIXES)}); "
            f"remove it from {folder} or point at a folder of images only"
        )
    if max_images is not None:
        files = files[:max_images]
    images = np.stack([load_image_file(p, resolution, channels) for p in files])
    return images, [str(p.relative_to(folder)) for p in files]


def split_heldout(
    num_available: int, num_heldout: int, seed: int = 0, num_train: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) indices into `num_available` images: `num_heldout` chosen by
    numpy.random.default_rng(seed) (sorted), the training set the first `num_train` of the rest
    (default all of them). The two never share an image."""
    if num_heldout < 0 or num_heldout >= num_available:
        raise ValueError(
            f"heldout_images={num_heldout}: must be in 0..{num_available - 1} "
            f"(of {num_available} images, at least one must stay for training)"
        )
    held = np.sort(np.random.default_rng(seed).choice(num_available, num_heldout, replace=False))
    rest = np.setdiff1d(np.arange(num_available), held)
    if num_train is not None:
        if not 1 <= num_train <= len(rest):
            raise ValueError(
                f"num_images={num_train}: must be in 1..{len(rest)} ({num_available} images, {num_heldout} held out)"
            )
        rest = rest[:num_train]
    return rest, held


# ---------------------------------------------------------------- prepared datasets


def encode_png(image_chw: np.ndarray) -> bytes:
    arr = image_chw[0] if image_chw.shape[0] == 1 else image_chw.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_image_zip(
    path: str | Path, images: np.ndarray, source_ids: list[str] | None = None, info: dict | None = None
) -> dict:
    """Write uint8 images (N, C, H, W) as a zip of PNGs with a manifest, atomically."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{path}: expected uint8 images of shape (N, 1|3, H, W), got {images.dtype} {images.shape}")
    source_ids = source_ids or [str(i) for i in range(len(images))]
    entries = []
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for i, (img, sid) in enumerate(zip(images, source_ids)):
            data = encode_png(img)
            name = f"{i:06d}.png"
            zf.writestr(zipfile.ZipInfo(name, _FIXED_TIME), data)
            entries.append({"index": i, "file": name, "source": sid, "sha256": sha256_bytes(data)})
        manifest = {
            "num_images": int(len(images)),
            "channels": int(images.shape[1]),
            "resolution": int(images.shape[-1]),
            **(info or {}),
            "images": entries,
        }
        import json

        zf.writestr(zipfile.ZipInfo(MANIFEST, _FIXED_TIME), json.dumps(manifest, indent=1))
    return manifest


def _manifest(zf: zipfile.ZipFile, path: Path) -> dict:
    """The zip's manifest, refused by name when it is not JSON or lists no images."""
    import json

    try:
        manifest = json.loads(zf.read(MANIFEST))
        if not isinstance(manifest, dict) or not all(isinstance(e, dict) and "file" in e for e in manifest["images"]):
            raise TypeError("expected {'images': [{'file': ...}, ...]}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: its {MANIFEST} is not a dataset manifest ({type(e).__name__}: {e}); re-create the zip "
            "(python -m ambient prepare)"
        ) from None
    return manifest


def read_image_zip(path: str | Path, verify: bool = True, allow_plain: bool = False) -> Dataset:
    """Read a prepared dataset or sample zip; checks every image against its sha256 and its size.

    A zip without the manifest (dataset.json) has nothing to check its images against and is
    refused unless `allow_plain` (then its images, sorted by name, are read as they are)."""

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset zip not found (run `python -m ambient prepare` first)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            manifest = _manifest(zf, path) if MANIFEST in names else None
            if manifest is not None:
                entries = manifest["images"]
            elif allow_plain:
                entries = [{"file": n} for n in sorted(names) if Path(n).suffix.lower() in IMAGE_SUFFIXES]
            else:
                raise ValueError(
                    f"{path}: no {MANIFEST} in the zip, so its images cannot be checked; make it with "
                    "`python -m ambient prepare` (a folder of images: --source folder --folder DIR)"
                )
            if not entries:
                raise ValueError(f"{path}: the zip holds no images")
            shape = (manifest["channels"], manifest["resolution"], manifest["resolution"]) if manifest else None
            arrays = []
            for e in entries:
                data = zf.read(e["file"])
                if verify and "sha256" in e and sha256_bytes(data) != e["sha256"]:
                    raise ValueError(
                        f"{path}: {e['file']} does not match its sha256 in {MANIFEST}; "
                        "the file is corrupt: prepare it again"
                    )
                try:
                    with Image.open(io.BytesIO(data)) as img:
                        arr = np.asarray(img)
                except (UnidentifiedImageError, OSError) as err:
                    raise ValueError(
                        f"{path}: member {e['file']} is not a readable image ({err.__class__.__name__})"
                    ) from None
                arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)[:3]
                shape = shape or arr.shape
                if arr.shape != tuple(shape) or arr.dtype != np.uint8:
                    raise ValueError(
                        f"{path}: member {e['file']} is {arr.dtype} {'x'.join(map(str, arr.shape))}, "
                        f"the others uint8 {'x'.join(map(str, shape))}; prepare the zip again"
                    )
                arrays.append(arr)
    except KeyError as e:
        raise ValueError(
            f"{path}: {MANIFEST} names a member the zip lacks or misses a key ({e}); prepare it again"
        ) from None
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path}: not a valid zip ({e}); delete it and prepare it again") from None
    images = np.stack(arrays).astype(np.uint8)
    return Dataset(images, manifest or {"num_images": len(images)})


# ---------------------------------------------------------------- image sets (samples, datasets, folders)


def image_files(path: str | os.PathLike) -> tuple[list[str], str | None]:
    """Image file names of a zip (with the zip as clean-fid's `fdir`) or full paths in a folder, in the
    order `load_images` returns them (a zip's manifest order, else sorted)."""

    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                listed = zf.namelist()
                if MANIFEST in listed:
                    names = [e["file"] for e in _manifest(zf, path)["images"]]
                else:
                    names = sorted(n for n in listed if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path}: not a valid zip ({e})") from None
        if not names:
            raise ValueError(f"{path}: the zip holds no images")
        return names, str(path)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: the folder holds no images")
        return files, None
    raise FileNotFoundError(f"{path}: image zip or folder not found")


def load_images(path: str | os.PathLike) -> np.ndarray:
    """uint8 (N, C, H, W) from a dataset/sample zip (sha256-checked when it has a manifest) or a folder
    of equally sized images (no resizing), in sorted file order."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        return read_image_zip(path).images
    files, _ = image_files(path)
    arrays = []
    for f in files:
        with Image.open(f) as img:
            img = img.convert("L" if img.mode in ("1", "L", "LA") else "RGB")
            a = np.asarray(img, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"{path}: images differ in size or channels ({sorted(shapes)[:3]}...); resize them first")
    return np.stack(arrays)

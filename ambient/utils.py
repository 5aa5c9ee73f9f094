"""Small shared helpers: atomic writes, seeding, device choice."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .entry import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file lives in the same directory so the final rename is atomic
    (a kill leaves either the old file or the new one, never a half-written file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results and DVC caches are shared
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def run_dir_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on a run directory: a second writer fails at once with one clear line."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"{run_dir}: another process is training in this run directory (lock {run_dir / '.lock'}); "
            "wait for it to finish, or use another --run-dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Rows of equal keys as CSV (floats to 6 significant digits), written atomically."""
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def write_npz(path: str | os.PathLike, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")


def read_json(path: str | os.PathLike, hint: str = ""):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found" + (f" ({hint})" if hint else "")) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers, stable across runs, processes and platforms."""
    h = hashlib.sha256(b"/".join(str(int(p)).encode() for p in parts)).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def generator(*parts: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*parts))
    return g


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but CUDA is not available here; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(name)


class SampleRNG:
    """Gaussian draws for one training step, one independent stream per sample of the global batch.

    Sample j of step t draws from a generator seeded by (seed, t, stream, j), so a data-parallel
    rank that holds positions [r*b, (r+1)*b) draws exactly what a single process would for
    those samples, and a resumed run draws what the uninterrupted one would have.
    Draws happen on the CPU (identical on every device) and move to `device`.
    """

    def __init__(self, seed: int, step: int, stream: int, positions, device="cpu"):
        self.gens = [generator(seed, step, stream, int(j)) for j in positions]
        self.device = device

    def randn(self, shape) -> torch.Tensor:
        if shape[0] != len(self.gens):
            raise ValueError(f"SampleRNG holds {len(self.gens)} samples, asked for a batch of {shape[0]}")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in self.gens]).to(self.device)


# The random stream of the training batches (ambient.training's own streams start at 12)
STREAM_BATCH = 11


class BatchSampler:
    """Epoch-wise random permutations of the dataset, seeded by (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            self._cache = {
                epoch: torch.randperm(self.n, generator=generator(self.seed, epoch, STREAM_BATCH)),
                **{k: v for k, v in self._cache.items() if k == epoch - 1},
            }
        return self._cache[epoch]

    def indices(self, step: int) -> torch.Tensor:
        pos = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs = pos // self.n
        return torch.stack([self._perm(int(e))[int(k)] for e, k in zip(epochs, pos % self.n)])


def uint8_to_signed(images, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (array or tensor, any shape) -> a `dtype` tensor in [-1, 1], the models' range."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    return x.to(dtype).div(127.5).sub(1.0)


def signed_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> uint8 (rounded; values outside the range saturate at 0 and 255)."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)

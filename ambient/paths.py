"""Output paths checked before the work, not after it. Torch-free (the CLI runner uses it)."""

from __future__ import annotations

import os
from pathlib import Path


def check_writable(path: str | os.PathLike) -> None:
    """Fail before long work if `path` cannot be written: its folder is created if missing."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"{path}: cannot create its folder {path.parent} ({e.strerror}); choose another output path"
        ) from None
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"{path}: not writable; choose another output path or fix the permissions")

import os
import sys
from pathlib import Path

import pytest

from ambient.data import embedded_faces, write_image_zip

# A tiny U-Net so a training step takes milliseconds.
TINY_NET = {"base_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}
TINY_NET_ARGS = ["--base-channels", "8", "--channel-mult", "1", "2", "--attn-resolutions", "4"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """16 embedded faces, center-cropped to 8x8, as a prepared dataset zip."""
    path = tmp_path_factory.mktemp("data") / "tiny.zip"
    images, ids = embedded_faces(16, 8)
    write_image_zip(path, images, ids, {"source": "test"})
    return path


def run_cli(args, env=None, **kw):
    """Run `python -m ambient ARGS` in a fresh process."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ambient", *map(str, args)], capture_output=True, text=True, env=full_env, **kw
    )

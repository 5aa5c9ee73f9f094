"""Helpers shared by the figure notebooks: locating files, reading small result files, saving figures.

The notebooks read only small files the workflow wrote (sample and dataset zips, JSON, CSV,
gallery .npz): no training or sampling happens here. They run in paper_figures/ (by hand in
Jupyter, or by the workflow: papermill --cwd paper_figures), so `import figlib` finds this file; by
hand, the defaults point at results/ of config/config.yaml; by the workflow, every path comes as a
parameter. Run names, labels and file paths come from ambient.layout, as in the workflow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# The checkout's `ambient` first, as for the workflow's jobs (`python -m ambient` in the workflow
# directory): under `snakemake --sdm conda` the package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ambient import layout  # noqa: E402
from ambient.layout import MASKED_KINDS  # noqa: E402,F401  (the notebooks use figlib.MASKED_KINDS)

# the similarity shares the figures show (summary.csv's columns): the copy threshold and the looser one
COPY = layout.COPY_THRESHOLD
LOOSE = layout.SIMILARITY_THRESHOLDS[0]
THRESHOLDS = (LOOSE, COPY)
share = layout.share_column
COPY_SHARE, LOOSE_SHARE = share(COPY), share(LOOSE)
RED = np.array([0.85, 0.10, 0.10])  # pixels outside A: never observed
ORANGE = np.array([1.00, 0.65, 0.00])  # in A but not in A~: observed, hidden from the network input (delta)


def find_root(root: str | None = None) -> Path:
    """The workflow directory: `root` if given (relative to the working directory), else the first
    folder upwards holding a Snakefile."""
    if root:
        return Path(root).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "Snakefile").is_file():
            return p
    raise FileNotFoundError(f"no Snakefile in {here} or its parents: pass the `root` parameter")


def default_config(root: Path) -> dict:
    import yaml

    return yaml.safe_load((Path(root) / "config" / "config.yaml").read_text())


def default_dataset(root: Path, cfg: dict | None = None) -> str:
    cfg = cfg or default_config(root)
    return cfg["dataset"]["name"]


def complete_runs(root: Path, runs: list[dict] | None, dataset: str, extractor: str = "pixel") -> list[dict]:
    """`runs` (default: config/config.yaml's models) with every file path filled in and resolved."""
    runs = runs if runs else layout.run_list(default_config(root))
    out = []
    for r in runs:
        # samples_full only where given: just the Tweedie models trained with consistency have one
        files = {
            k: layout.run_file(k, dataset, r["name"], extractor=extractor)
            for k in layout.RUN_FILES
            if k != "samples_full" and "{" not in layout.run_file(k, dataset, r["name"], extractor=extractor)
        }
        r = {**files, **r}
        out.append({k: (resolve(root, v) if k in layout.RUN_FILES else v) for k, v in r.items()})
    return out


def resolve(root: Path, path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else Path(root) / path


def require(*paths: Path) -> None:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError("missing result files (run `snakemake --cores all` first): " + ", ".join(missing))


# ---------------------------------------------------------------- reading


def read_images(path: Path) -> np.ndarray:
    """uint8 (N, C, H, W) from a dataset or sample zip (sha256-checked)."""
    from ambient.data import read_image_zip

    return read_image_zip(path).images


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- drawing


def to_rgb(image_chw: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) -> float (H, W, 3) in [0, 1]."""
    x = np.asarray(image_chw, dtype=np.float64) / 255.0
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    return x.transpose(1, 2, 0)


def show(ax, image, title: str | None = None, fontsize: float = 7, color: str = "black") -> None:
    """Draw a uint8 (C, H, W) image or a float (H, W, 3) one in [0, 1], without axes."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = to_rgb(image)
    ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if title is not None:
        ax.set_title(title, fontsize=fontsize, color=color, pad=2)


def grid(images: np.ndarray, columns: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """uint8 (N, C, H, W) -> one float (H', W', 3) mosaic in [0, 1]."""
    images = np.asarray(images)
    n, _, h, w = images.shape
    rows = max(1, -(-n // columns))
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), fill)
    for i in range(n):
        r, c = divmod(i, columns)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = to_rgb(
            images[i]
        )
    return out


def save(fig, out_dir: Path, stem: str, dpi: int = 200) -> list[Path]:
    """Save `fig` as PNG and PDF under `out_dir`; returns the paths. Byte-stable: the PDF carries no
    creation date (matplotlib writes the current time otherwise), so the same figure hashes the same
    for DVC in every run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for p in paths:
        meta = {"CreationDate": None} if p.suffix == ".pdf" else {}
        fig.savefig(p, dpi=dpi, bbox_inches="tight", metadata=meta)
    return paths

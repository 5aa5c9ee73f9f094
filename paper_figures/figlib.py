"""Helpers shared by the figure notebooks: locating files, reading small result files, saving figures.

The notebooks read only small files the workflow wrote (sample and dataset zips, JSON, CSV,
gallery .npz): no training or sampling happens here. Run by hand in Jupyter (working
directory paper_figures/), the defaults point at results/ of config/config.yaml; run by the
workflow (papermill, working directory = the workflow's), every path comes as a parameter.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MASKED_KINDS = ("dust", "box")
NAIVE_SUFFIX = "-naive"  # noise-s0.20-naive: the naive baseline (EDM loss on the noisy data)
THRESHOLDS = (0.90, 0.95)
RED = np.array([0.85, 0.10, 0.10])     # pixels outside A: never observed
ORANGE = np.array([1.00, 0.65, 0.00])  # in A but not in A~: observed, hidden from the network input (delta)


def find_root(root: str | None = None) -> Path:
    """The workflow directory: `root` if given, else the first parent holding a Snakefile."""
    if root:
        return Path(root)
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "Snakefile").is_file():
            return p
    raise FileNotFoundError(f"no Snakefile in {here} or its parents: pass the `root` parameter")


def corruption_name(c: dict) -> str:
    """Run name, as ambient.runs.run_name and workflow/rules/common.smk."""
    if c["kind"] == "clean":
        return "clean"
    if c["kind"] == "noise":
        return f"noise-s{c['sigma_n']:.2f}" + (NAIVE_SUFFIX if c.get("loss", "auto") == "edm" else "")
    return f"{c['kind']}-p{c['p']:.2f}"


def run_label(c: dict) -> str:
    """As workflow/rules/common.smk (corruption_label)."""
    if c["kind"] == "clean":
        return "clean"
    if c["kind"] == "noise":
        naive = c.get("loss", "auto") == "edm"
        return f"noisy sigma_n={c['sigma_n']:.2f}, " + ("naive (EDM loss)" if naive else "Tweedie (ours)")
    return f"ambient {c['kind']}, p={c['p']:.2f}"


def default_config(root: Path) -> dict:
    import yaml

    return yaml.safe_load((Path(root) / "config" / "config.yaml").read_text())


def default_runs(root: Path, cfg: dict | None = None) -> list[dict]:
    """The models of config/config.yaml, as the workflow passes them (name, kind, level, delta, label)."""
    cfg = cfg or default_config(root)
    out = []
    for c in cfg["corruptions"]:
        level = {"clean": 0.0, "noise": c.get("sigma_n", 0.0)}.get(c["kind"], c.get("p", 0.0))
        naive = c.get("loss", "auto") == "edm"
        out.append({"name": corruption_name(c), "kind": c["kind"], "level": level,
                    "delta": c.get("delta", 0.1) if c["kind"] == "dust" else 0.0,
                    "sigma_n": c.get("sigma_n", 0.0), "p": c.get("p", 0.0), "label": run_label(c),
                    "loss": c.get("loss", "auto"), "naive": naive,
                    "series": f"{c['kind']} (naive)" if naive else c["kind"]})
    return out


def default_dataset(root: Path, cfg: dict | None = None) -> str:
    cfg = cfg or default_config(root)
    return cfg["dataset"]["name"]


def run_files(dataset: str, name: str, extractor: str = "pixel") -> dict:
    """Per-model result files, as workflow/rules/common.smk (run_file) lays them out."""
    base = f"results/{dataset}/{name}"
    return {
        "model": f"{base}/model.pt",
        "samples": f"{base}/samples.zip",
        "neighbors_json": f"{base}/neighbors_{extractor}.json",
        "neighbors_csv": f"{base}/neighbors_{extractor}.csv",
        "attack_inpaint_json": f"{base}/attack_inpaint.json",
        "attack_inpaint_npz": f"{base}/attack_inpaint_gallery.npz",
        "attack_noise_json": f"{base}/attack_noise.json",
        "attack_noise_npz": f"{base}/attack_noise_gallery.npz",
        "hf_json": f"{base}/hf_energy.json",
    }


def complete_runs(root: Path, runs: list[dict] | None, dataset: str, extractor: str = "pixel") -> list[dict]:
    """`runs` (default: config/config.yaml's models) with every file path filled in and resolved."""
    runs = runs if runs else default_runs(root)
    out = []
    for r in runs:
        files = run_files(dataset, r["name"], extractor)
        r = {**files, **r}
        out.append({k: (resolve(root, v) if k in files else v) for k, v in r.items()})
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
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = to_rgb(images[i])
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

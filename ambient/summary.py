"""`ambient summarize`: one CSV row per model from the workflow's per-model result files.

Layout read (as workflow/rules/*.smk write it), for each corruption name C under RUNS_DIR:

    C/model.pt                   final checkpoint (training settings: steps, delta, formulation, ...)
    C/samples.zip                samples (manifest: number of sampler steps, seed)
    C/neighbors_<X>.json         memorization metrics in feature space X (`ambient neighbors`)
    C/fd_<E>.json                FD/KD with extractor E (`ambient fid`), one per --extractors entry
    C/attack_<K>.json            attack K in inpaint|noise (`ambient attack`), one per --attacks entry
    C/hf_energy.json             high-frequency energy (`python -m ambient.metrics_hf`), with --hf-energy

C is a run name (ambient.layout): a corruption name, or noise-sS-naive for the naive baseline
(plain EDM loss on the noisy data of noise-sS).

Columns: model, dataset, corruption, kind, level, loss (the loss trained with: edm, ambient,
tweedie; edm on noise data = the naive baseline), delta, formulation, steps, n_samples,
sampler_steps, extractor (the similarity feature space), sim_mean, sim_median, sim_max,
share_gt_0.90, share_gt_0.95, share_gt_0.99, carlini_share, train_nn_sim_mean and train_nn_sim_max (a
training image's top-1 similarity to another training image: the scale of a copy), then fd_<x>/kd_<x> per FD
extractor (fid/kid for the official Inception; a requested extractor whose weights were missing
shows under its fallback's name, with `<requested>_fallback` naming it; each key ends in the
reference set it was measured against, `_heldout` or `_train`, and kd_*_std is KD's standard
deviation over its random subsets), then per attack <K>_sim_mean, <K>_other_sim_mean, <K>_extracted
(its primary method) and <K>_<method>_extracted for every method (inpaint_u1, inpaint_u5, ...), then with --hf-energy
hf_samples, hf_train_clean, hf_train_noisy (noise runs), hf_noise_index (see ambient.metrics_hf).

Run as `python -m ambient.summary ...` (the workflow does), or register `add_summary_command`
on the main parser for `ambient summarize`.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .layout import AUTO_LOSS
from .utils import read_json

BASE_COLUMNS = ["model", "dataset", "corruption", "kind", "level", "loss", "delta", "formulation", "steps", "n_samples",
                "sampler_steps", "extractor", "sim_mean", "sim_median", "sim_max", "share_gt_0.90", "share_gt_0.95",
                "share_gt_0.99", "carlini_share", "train_nn_sim_mean", "train_nn_sim_max"]


def _read_json(path: Path) -> dict:
    return read_json(path, hint="run the workflow's rule that makes it")


def _sample_manifest(path: Path) -> dict:
    import zipfile

    from .data import MANIFEST

    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run `ambient sample`)")
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(MANIFEST)) if MANIFEST in zf.namelist() else {}


def _train_config(path: Path) -> dict:
    from .training import load_checkpoint

    state = load_checkpoint(path, map_location="cpu")
    return {**state["config"], "step": state["step"]}


HF_COLUMNS = ("hf_samples", "hf_train_clean", "hf_train_noisy", "hf_noise_index")


def model_row(run_dir: Path, dataset: str, similarity_extractor: str, extractors: list[str],
              attacks: list[str], hf_energy: bool = False) -> dict:
    """The summary row of one model directory."""
    from .corruption import Corruption
    from .runs import parse_run_name

    name = run_dir.name
    corr, loss = parse_run_name(name)
    row: dict = {"model": f"{dataset}/{name}", "dataset": dataset, "corruption": name, "kind": corr.kind,
                 "level": corr.level, "loss": loss if loss != "auto" else AUTO_LOSS[corr.kind]}
    model = run_dir / "model.pt"
    if model.is_file():
        cfg = _train_config(model)
        c = cfg["corruption"]
        if c.get("kind") != corr.kind or Corruption(**c).name != corr.name:
            raise ValueError(f"{model}: was trained on {Corruption(**c).name}, but its directory says {name}")
        trained = cfg.get("loss", "auto")
        trained = AUTO_LOSS[corr.kind] if trained == "auto" else trained
        if trained != row["loss"]:
            raise ValueError(f"{model}: was trained with the {trained} loss, but its directory name {name} "
                             f"means {row['loss']}")
        row.update(delta=c.get("delta", 0.0), formulation=cfg.get("formulation"), steps=int(cfg["step"]))
    manifest = _sample_manifest(run_dir / "samples.zip")
    row["n_samples"] = int(manifest.get("num_images", 0)) or None
    row["sampler_steps"] = manifest.get("num_steps")
    if row.get("steps") is None:
        row["steps"] = manifest.get("train_steps")

    nb = _read_json(run_dir / f"neighbors_{similarity_extractor}.json")
    row["extractor"] = nb["extractor"]
    for key in ("sim_mean", "sim_median", "sim_max", "share_gt_0.90", "share_gt_0.95", "share_gt_0.99"):
        row[key] = nb.get(key)
    row["carlini_share"] = (nb.get("carlini") or {}).get("share_flagged")
    row["train_nn_sim_mean"], row["train_nn_sim_max"] = nb.get("train_nn_sim_mean"), nb.get("train_nn_sim_max")
    if nb.get("n") is not None:
        row["n_samples"] = int(nb["n"])

    for ex in extractors:
        fd = _read_json(run_dir / f"fd_{ex}.json")
        fd_key, kd_key = fd["fd_key"], fd["kd_key"]
        if fd_key in row and row[fd_key] != fd[fd_key]:
            raise ValueError(f"{run_dir}: two results for {fd_key} disagree ({row[fd_key]} vs {fd[fd_key]})")
        row[fd_key], row[kd_key] = fd[fd_key], fd[kd_key]
        if fd.get("kd_std_key"):
            row[fd["kd_std_key"]] = fd[fd["kd_std_key"]]
        if fd.get("fallback_used"):
            row[f"{ex}_fallback"] = fd["extractor"]

    for kind in attacks:
        at = _read_json(run_dir / f"attack_{kind}.json")
        m = at["methods"][at["primary_method"]]
        row[f"{kind}_sim_mean"] = m["sim_mean"]
        row[f"{kind}_other_sim_mean"] = m["other_sim_mean"]
        row[f"{kind}_extracted"] = m["share_extracted"]
        for method, ms in at["methods"].items():
            if method != kind:
                row[f"{method}_extracted" if method.startswith(kind) else f"{kind}_{method}_extracted"] = ms["share_extracted"]

    if hf_energy:
        hf = _read_json(run_dir / "hf_energy.json")
        for key in HF_COLUMNS:
            row[key] = hf.get(key)
    return row


def summarize(runs_dir: str | Path, corruptions: list[str], similarity_extractor: str = "pixel",
              extractors: list[str] | None = None, attacks: list[str] | None = None,
              dataset: str | None = None, hf_energy: bool = False) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per run name, in the given order."""
    runs_dir = Path(runs_dir)
    dataset = dataset or runs_dir.name
    rows = [model_row(runs_dir / c, dataset, similarity_extractor, list(extractors or []), list(attacks or []),
                      hf_energy) for c in corruptions]
    columns = list(BASE_COLUMNS)
    for r in rows:
        columns += [k for k in r if k not in columns]
    return columns, rows


def write_csv(path: str | Path, columns: list[str], rows: list[dict]) -> None:
    from .utils import atomic_path

    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        return v

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: fmt(r.get(k)) for k in columns})


def write_metrics_json(path: str | Path, rows: list[dict]) -> None:
    """The numeric columns, one object per model ({run: {column: value}}): DVC's `metrics:` file,
    so that `dvc metrics diff` compares two recorded runs."""
    from .utils import write_json

    write_json(path, {r["corruption"]: {k: v for k, v in r.items() if isinstance(v, (int, float))
                                        and not isinstance(v, bool) and k not in ("steps", "n_samples", "sampler_steps")}
                      for r in rows})


def cmd_summarize(a) -> None:
    columns, rows = summarize(a.runs_dir, a.corruptions, a.similarity_extractor, a.extractors, a.attacks, a.dataset,
                              a.hf_energy)
    write_csv(a.out, columns, rows)
    if a.metrics_json:
        write_metrics_json(a.metrics_json, rows)
    print(f"wrote {a.out}: {len(rows)} models, {len(columns)} columns")
    for r in rows:
        print(f"  {r['corruption']:>18}: share_gt_0.95={r['share_gt_0.95']}, sim_mean={r['sim_mean']}")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", required=True, help="results/<dataset>: one folder per corruption")
    p.add_argument("--corruptions", nargs="+", required=True,
                   help="run names, e.g. clean dust-p0.20 box-p0.40 noise-s0.20 noise-s0.20-naive")
    p.add_argument("--similarity-extractor", default="pixel", help="X of neighbors_<X>.json (default pixel)")
    p.add_argument("--extractors", nargs="*", default=[], help="E of fd_<E>.json, one FD/KD pair each")
    p.add_argument("--attacks", nargs="*", default=[], choices=["inpaint", "noise", "key"], help="K of attack_<K>.json")
    p.add_argument("--hf-energy", action="store_true", help="add the hf_* columns from C/hf_energy.json")
    p.add_argument("--dataset", default=None, help="dataset name (default: the name of --runs-dir)")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--metrics-json", default=None, help="also the numeric columns as JSON, {run: {column: value}}")
    p.set_defaults(func=cmd_summarize)


def add_summary_command(sub) -> None:
    """Register `ambient summarize` on the main parser's sub-commands."""
    p = sub.add_parser("summarize", help="one CSV row per model from the per-model metric files")
    _add_arguments(p)


def main(argv: list[str] | None = None) -> int:
    from .entry import standalone_main

    return standalone_main("python -m ambient.summary", __doc__, _add_arguments, "summarize", argv)


if __name__ == "__main__":
    sys.exit(main())

"""`ambient summarize`: one CSV row per model from the workflow's per-model result files.

Files read for each run name C of dataset D, at the paths ambient.layout.RUN_FILES gives:

    models/D/C/model.pt                 final checkpoint (training settings: steps, delta, formulation, ...)
    samples/D/C/samples.zip             samples (manifest: number of sampler steps, seed)
    evaluation/D/C/neighbors_<X>.json   memorization metrics in feature space X (`ambient neighbors`)
    evaluation/D/C/fd_<E>.json          FD/KD with extractor E (`ambient fid`), one per --extractors entry
    evaluation/D/C/attack_<K>.json      attack K of layout.ATTACK_KINDS (`ambient attack`), one per --attacks entry
    evaluation/D/C/hf_energy.json       high-frequency energy (`ambient hf-energy`), with --hf-energy

C is a run name (ambient.layout): a corruption name, <corruption>-naive for a naive baseline
(plain EDM loss on that corrupted data, e.g. dust-p0.50-naive, noise-s0.20-naive), or gauss.

Columns: model, dataset, corruption, kind, level, loss (the loss trained with: edm, ambient,
tweedie; edm on noise data = the naive baseline), delta, formulation, steps, n_samples,
sampler_steps, extractor (the similarity feature space), sim_mean, sim_median, sim_max,
share_gt_0.90, share_gt_0.95, share_gt_0.99, carlini_share, train_nn_sim_mean and train_nn_sim_max (a
training image's top-1 similarity to another training image: the scale of a copy), then fd_<x>/kd_<x> per FD
extractor (fid/kid for the official Inception; a requested extractor whose weights were missing
shows under its fallback's name, with `<requested>_fallback` naming it; each key ends in the
reference set it was measured against, `_heldout` or `_train`, and kd_*_std is KD's standard
deviation over its random subsets; c2st_<x>_heldout is the classifier two-sample test's accuracy in
the same features, 0.5 = indistinguishable, with its _std: the quality ruler, ambient.eval.c2st),
then per attack <K>_sim_mean, <K>_other_sim_mean, <K>_extracted (its primary method) and
<K>_<method>_extracted for every method (inpaint_u1, inpaint_u5, ...), then with --hf-energy
hf_samples, hf_train_clean, hf_train_noisy (noise runs), hf_noise_index (see ambient.eval.metrics_hf).

Run as `python -m ambient summarize ...` (the workflow's summary rule does; its arguments:
ambient.cli.metrics).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..layout import AUTO_LOSS, COPY_THRESHOLD, SIMILARITY_THRESHOLDS, run_file, share_column
from ..utils import read_json

SHARE = share_column(COPY_THRESHOLD)  # the copy share
SIMILARITY_COLUMNS = ("sim_mean", "sim_median", "sim_max", *(share_column(t) for t in SIMILARITY_THRESHOLDS))
BASE_COLUMNS = [
    "model",
    "dataset",
    "corruption",
    "kind",
    "level",
    "loss",
    "delta",
    "formulation",
    "steps",
    "n_samples",
    "sampler_steps",
    "extractor",
    *SIMILARITY_COLUMNS,
    "carlini_share",
    "train_nn_sim_mean",
    "train_nn_sim_max",
]


def _read_json(path: Path) -> dict:
    return read_json(path, hint="run the workflow's rule that makes it")


def _sample_manifest(path: Path) -> dict:
    import zipfile

    from ..data import MANIFEST

    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run `ambient sample`)")
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(MANIFEST)) if MANIFEST in zf.namelist() else {}


def _train_config(path: Path) -> dict:
    from ..checkpoints import load_checkpoint

    state = load_checkpoint(path, map_location="cpu")
    return {**state["config"], "step": state["step"]}


HF_COLUMNS = ("hf_samples", "hf_train_clean", "hf_train_noisy", "hf_noise_index")


def _training_columns(model: Path, name: str, corr, loss: str) -> dict:
    """Settings of the final checkpoint; refuses a checkpoint whose corruption or loss is not its name's."""
    from ..corruption import Corruption

    cfg = _train_config(model)
    c = cfg["corruption"]
    if c.get("kind") != corr.kind or Corruption(**c).name != corr.name:
        raise ValueError(f"{model}: was trained on {Corruption(**c).name}, but its run name is {name}")
    trained = cfg.get("loss", "auto")
    trained = AUTO_LOSS[corr.kind] if trained == "auto" else trained
    if trained != loss:
        raise ValueError(f"{model}: was trained with the {trained} loss, but its run name {name} means {loss}")
    return {"delta": c.get("delta", 0.0), "formulation": cfg.get("formulation"), "steps": int(cfg["step"])}


def _neighbor_columns(nb: dict) -> dict:
    row = {
        "extractor": nb["extractor"],
        **{k: nb.get(k) for k in SIMILARITY_COLUMNS},
        "carlini_share": (nb.get("carlini") or {}).get("share_flagged"),
        "train_nn_sim_mean": nb.get("train_nn_sim_mean"),
        "train_nn_sim_max": nb.get("train_nn_sim_max"),
    }
    if nb.get("n") is not None:
        row["n_samples"] = int(nb["n"])
    return row


def _fd_columns(fd: dict, ex: str) -> dict:
    row = {fd["fd_key"]: fd[fd["fd_key"]], fd["kd_key"]: fd[fd["kd_key"]]}
    for key in ("kd_std_key", "c2st_key", "c2st_std_key"):  # files written before the C2ST lack the last two
        if fd.get(key):
            row[fd[key]] = fd[fd[key]]
    if fd.get("fallback_used"):
        row[f"{ex}_fallback"] = fd["extractor"]
    return row


def _attack_columns(at: dict, kind: str) -> dict:
    m = at["methods"][at["primary_method"]]
    row = {
        f"{kind}_sim_mean": m["sim_mean"],
        f"{kind}_other_sim_mean": m["other_sim_mean"],
        f"{kind}_extracted": m["share_extracted"],
    }
    for method, ms in at["methods"].items():
        if method != kind:
            row[f"{method}_extracted" if method.startswith(kind) else f"{kind}_{method}_extracted"] = ms[
                "share_extracted"
            ]
    return row


def model_row(
    root: Path,
    dataset: str,
    name: str,
    similarity_extractor: str,
    extractors: list[str],
    attacks: list[str],
    hf_energy: bool = False,
) -> dict:
    """The summary row of run `name`, from its files under `root` (the workflow directory)."""

    def path(key: str, **fields) -> Path:
        return Path(root) / run_file(key, dataset, name, **fields)

    from ..corruption import Corruption

    corr, loss = Corruption.of_run(name)
    loss = loss if loss != "auto" else AUTO_LOSS[corr.kind]
    row: dict = {
        "model": f"{dataset}/{name}",
        "dataset": dataset,
        "corruption": name,
        "kind": corr.kind,
        "level": corr.level,
        "loss": loss,
    }
    if path("model").is_file():
        row.update(_training_columns(path("model"), name, corr, loss))
    manifest = _sample_manifest(path("samples"))
    row["n_samples"] = int(manifest.get("num_images", 0)) or None
    row["sampler_steps"] = manifest.get("num_steps")
    if row.get("steps") is None:
        row["steps"] = manifest.get("train_steps")
    row.update(_neighbor_columns(_read_json(path("neighbors_json", extractor=similarity_extractor))))
    for ex in extractors:
        fd = _fd_columns(_read_json(path("fd_json", extractor=ex)), ex)
        clash = [k for k in fd if k in row and row[k] != fd[k]]
        if clash:
            raise ValueError(
                f"{dataset}/{name}: two results for {clash[0]} disagree ({row[clash[0]]} vs {fd[clash[0]]})"
            )
        row.update(fd)
    for kind in attacks:
        row.update(_attack_columns(_read_json(path("attack_json", attack=kind)), kind))
    if hf_energy:
        hf = _read_json(path("hf_json"))
        row.update({key: hf.get(key) for key in HF_COLUMNS})
    return row


def summarize(
    dataset: str,
    corruptions: list[str],
    similarity_extractor: str = "pixel",
    extractors: list[str] | None = None,
    attacks: list[str] | None = None,
    hf_energy: bool = False,
    root: str | Path = ".",
) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per run name, in the given order."""
    rows = [
        model_row(Path(root), dataset, c, similarity_extractor, list(extractors or []), list(attacks or []), hf_energy)
        for c in corruptions
    ]
    columns = list(BASE_COLUMNS)
    for r in rows:
        columns += [k for k in r if k not in columns]
    return columns, rows


def write_csv(path: str | Path, columns: list[str], rows: list[dict]) -> None:
    from ..utils import atomic_path

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
    from ..utils import write_json

    write_json(
        path,
        {
            r["corruption"]: {
                k: v
                for k, v in r.items()
                if isinstance(v, (int, float))
                and not isinstance(v, bool)
                and k not in ("steps", "n_samples", "sampler_steps")
            }
            for r in rows
        },
    )


def cmd_summarize(a) -> None:
    columns, rows = summarize(
        a.dataset, a.corruptions, a.similarity_extractor, a.extractors, a.attacks, a.hf_energy, a.root
    )
    write_csv(a.out, columns, rows)
    if a.metrics_json:
        write_metrics_json(a.metrics_json, rows)
    print(f"wrote {a.out}: {len(rows)} models, {len(columns)} columns")
    for r in rows:
        print(f"  {r['corruption']:>18}: {SHARE}={r[SHARE]}, sim_mean={r['sim_mean']}")

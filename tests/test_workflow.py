"""The Snakemake workflow: config schema, lint, and the smoke config end to end.

The end-to-end test copies the workflow (Snakefile, workflow/, config/, paper_figures/,
profiles/) into a temporary directory and runs config/smoke.yaml there: every figure, the
executed notebooks, summary.csv and the HTML report, then `snakemake -n` must find nothing to do,
also after a DVC-style restore (new mtimes) followed by `snakemake --touch`.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ambient import layout

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "paper_figures", "profiles", "environment.yml")
NOTEBOOKS = tuple(f.stem for f in layout.PIXEL.figures)  # the pixel branch's (the SDXL ones: tests/test_sdxl.py)
FIGURES = tuple(f.stem for f in layout.PIXEL.figures if not f.per_run)  # one PNG/PDF each; samples: one per model


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.pyc")
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` in `workdir` with this interpreter (the jobs inherit it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *map(str, args)],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def load_common() -> dict:
    """workflow/rules/common.smk is plain Python: load its functions without Snakemake."""
    ns: dict = {"config": {}}
    code = (REPO / "workflow" / "rules" / "common.smk").read_text()
    exec(compile(code, "common.smk", "exec"), ns)
    return ns


def smoke_config() -> dict:
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


# ---------------------------------------------------------------- config and schema (fast)


def test_run_names_round_trip_through_the_library():
    from ambient.corruption import Corruption

    entries = [
        {"kind": "clean"},
        {"kind": "dust", "p": 0.2, "delta": 0.1},
        {"kind": "dust", "p": 0.5},
        {"kind": "box", "p": 0.4, "delta": 0.0},
        {"kind": "noise", "sigma_n": 0.2},
        {"kind": "noise", "sigma_n": 0.2, "loss": "auto"},
        {"kind": "noise", "sigma_n": 0.4, "loss": "edm"},
        {"kind": "dust", "p": 0.5, "loss": "edm"},
        {"kind": "gauss"},
    ]
    names = [layout.run_name(e) for e in entries]
    assert names == [
        "clean",
        "dust-p0.20",
        "dust-p0.50",
        "box-p0.40",
        "noise-s0.20",
        "noise-s0.20",
        "noise-s0.40-naive",
        "dust-p0.50-naive",
        "gauss",
    ]
    for e, name in zip(entries, names):
        corr = Corruption(kind=e["kind"], p=e.get("p", 0.0), delta=e.get("delta", 0.0), sigma_n=e.get("sigma_n", 0.0))
        assert corr.name == layout.base_name(name)
        assert Corruption.of_run(name) == (Corruption.from_name(corr.name), e.get("loss", "auto"))
    for bad in ("clean-naive", "gauss-naive", "dust-naive"):
        with pytest.raises(ValueError):
            Corruption.of_run(bad)


def test_layout_imports_without_torch():
    """Snakemake and the notebook kernels import it: no torch, no numpy."""
    code = "import sys, ambient.layout; assert not {'torch', 'numpy'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_run_records_and_labels():
    runs = layout.run_list(
        {
            "corruptions": [
                {"kind": "clean"},
                {"kind": "dust", "p": 0.5},
                {"kind": "box", "p": 0.4, "delta": 0.0},
                {"kind": "noise", "sigma_n": 0.2, "loss": "edm"},
                {"kind": "dust", "p": 0.5, "loss": "edm"},
                {"kind": "gauss"},
            ]
        }
    )
    assert [r["label"] for r in runs] == [
        "clean",
        "ambient dust, p=0.50",
        "ambient box, p=0.40",
        "noisy sigma_n=0.20, naive (EDM loss)",
        "naive dust p=0.50 (EDM loss)",
        "Gaussian (mean + covariance of the training set)",
    ]
    assert [r["level"] for r in runs] == [0.0, 0.5, 0.4, 0.2, 0.5, 0.0]
    # dust's default further corruption; none for the naive baseline (its EDM loss draws no B)
    assert [r["delta"] for r in runs] == [0.0, 0.1, 0.0, 0.0, 0.0, 0.0]
    assert [r["series"] for r in runs] == ["clean", "dust", "box", "noise (naive)", "dust (naive)", "gauss"]
    assert [r["naive"] for r in runs] == [False, False, False, True, True, False]
    assert (
        layout.run_file("neighbors_csv", "faces", runs[1]["name"], extractor="filterbank")
        == "results/evaluation/faces/dust-p0.50/neighbors_filterbank.csv"
    )
    assert layout.run_file("model") == "results/models/{dataset}/{corruption}/model.pt"  # the train rule's pattern


def test_every_kind_has_its_loss():
    from ambient.checkpoints import LOSSES
    from ambient.corruption import KINDS

    assert set(layout.AUTO_LOSS) == set(layout.KIND_LOSSES) == set(KINDS)
    for kind, loss in layout.AUTO_LOSS.items():
        assert loss in layout.KIND_LOSSES[kind] and set(layout.KIND_LOSSES[kind]) <= set(LOSSES)


def test_figure_table_matches_notebooks_and_captions():
    """Each figure: its notebook, its caption (its own file, else the generic one), its branch's files,
    and a rule of its name in the workflow."""
    for fig in layout.FIGURES:
        assert (REPO / fig.notebook_path).is_file(), fig.notebook_path
        assert (REPO / "workflow" / "report" / (fig.caption or "figure.rst")).is_file(), fig.caption
        assert set(fig.files) <= set(fig.of.files), fig.rule
    assert set(layout.PIXEL.figures) | set(layout.SDXL.figures) == set(layout.FIGURES)
    assert len({f.rule for f in layout.FIGURES}) == len(layout.FIGURES)
    cfg = default_config()
    outs = layout.figure_outputs(cfg)
    assert len(outs) == len(set(outs))
    assert all(o.startswith(layout.FIGURES_DIR + "/") for o in outs)
    no_attacks = {
        **cfg,
        "evaluation": {**cfg["evaluation"], "attacks": {**cfg["evaluation"]["attacks"], "enabled": False}},
    }
    assert not any("attack" in o for o in layout.figure_outputs(no_attacks))


def test_figlib_resolves_every_run_file_against_the_root():
    """The notebooks run in paper_figures/: every path of a run, samples_full included, is made absolute."""
    sys.path.insert(0, str(REPO / "paper_figures"))
    try:
        import figlib
    finally:
        sys.path.remove(str(REPO / "paper_figures"))
    assert figlib.find_root("..") == Path("..").resolve()
    runs = [
        {"name": "noise-s0.20", "label": "x", "samples_full": "results/samples/faces/noise-s0.20/samples_full.zip"},
        {"name": "clean", "label": "clean"},
    ]
    done = figlib.complete_runs(REPO, runs, "faces")
    assert done[0]["samples_full"] == REPO / "results/samples/faces/noise-s0.20/samples_full.zip"
    assert done[1]["samples"] == REPO / "results/samples/faces/clean/samples.zip" and "samples_full" not in done[1]
    assert done[0]["label"] == "x"


def test_figures_are_byte_stable(tmp_path):
    """The same figure saved twice, a second apart, gives the same PNG and PDF bytes (DVC hashes)."""
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(REPO / "paper_figures"))
    try:
        import figlib
    finally:
        sys.path.remove(str(REPO / "paper_figures"))
    outs = []
    for k in range(2):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [1, 0])
        outs.append([p.read_bytes() for p in figlib.save(fig, tmp_path / str(k), "f")])
        plt.close(fig)
        time.sleep(1.1)
    assert outs[0] == outs[1]
    assert b"CreationDate" not in outs[0][1]


def _merged(base: dict, override: dict) -> dict:
    """--configfile's merge: nested mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


@pytest.mark.parametrize("path", ["config/config.yaml", "config/smoke.yaml", "config/faces24.yaml"])
def test_shipped_configs_are_valid(path):
    common = load_common()
    cfg = _merged(yaml.safe_load((REPO / "config/config.yaml").read_text()), yaml.safe_load((REPO / path).read_text()))
    common["validate_config"](cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    # defaults were filled in
    assert cfg["resources"]["gpu"] == 0 and cfg["training"]["corruption_seed"] == 0
    assert cfg["evaluation"]["attacks"]["steps"] >= 1


def test_default_config_is_the_embedded_grid():
    cfg = default_config()
    names = [layout.run_name(c) for c in cfg["corruptions"]]
    assert names[0] == "clean" and "box-p0.40" in names and "noise-s0.20-naive" in names
    dust = [c["p"] for c in cfg["corruptions"] if c["kind"] == "dust"]
    assert len(dust) >= 3 and min(dust) < 0.2 and max(dust) >= 0.5  # the transition and the far end
    assert cfg["dataset"] == {
        "name": "faces16",
        "source": "embedded",
        "folder": None,
        "resolution": 16,
        "num_images": 40,
        "heldout_images": 60,
        "split_seed": 0,
    }
    assert cfg["network"]["channel_mult"] == [1, 2, 2] and cfg["network"]["attn_resolutions"] == [4]
    assert cfg["training"]["precision"] == "bf16" and cfg["training"]["consistency_weight"] == 0.0
    assert cfg["evaluation"]["attacks"]["resample"] == [1, 5]
    assert cfg["sampling"]["precision"] == "bf16"  # docs/speed.md: same memorization numbers, faster


def _bad(mutate) -> dict:
    cfg = smoke_config()
    mutate(cfg)
    return cfg


BAD_CONFIGS = {
    "p_out_of_range": (lambda c: c["corruptions"][1].update(p=1.5), ["corruptions[1].p", "1.5"]),
    "unknown_kind": (lambda c: c["corruptions"][1].update(kind="blur"), ["corruptions[1].kind", "blur"]),
    "missing_key": (lambda c: c["sampling"].pop("steps"), ["sampling", "'steps' is a required property"]),
    "typo_key": (lambda c: c["training"].update(stpes=c["training"].pop("steps")), ["training", "stpes"]),
    "typo_top_level": (lambda c: c.update(sampeling={}), ["sampeling"]),
    "dust_without_p": (lambda c: c["corruptions"][1].pop("p"), ["corruptions[1]", "'p' is a required property"]),
    "three_decimals": (lambda c: c["corruptions"][1].update(p=0.255), ["corruptions[1].p", "2 decimals"]),
    "duplicate_run": (
        lambda c: c["corruptions"].append({"kind": "dust", "p": 0.5, "delta": 0.2}),
        ["corruptions[5]", "dust-p0.50"],
    ),
    "bad_device": (lambda c: c.update(device="tpu"), ["device", "tpu"]),
    "naive_on_clean": (lambda c: c["corruptions"][0].update(loss="edm"), ["corruptions[0].loss", "auto"]),
    "naive_with_delta": (lambda c: c["corruptions"][1].update(loss="edm"), ["corruptions[1]", "delta"]),
    "gauss_with_p": (lambda c: c["corruptions"].append({"kind": "gauss", "p": 0.5}), ["corruptions[5]", "'p'"]),
    "gauss_with_loss": (
        lambda c: c["corruptions"].append({"kind": "gauss", "loss": "edm"}),
        ["corruptions[5].loss", "auto"],
    ),
    "unknown_loss": (lambda c: c["corruptions"][3].update(loss="tweedie"), ["corruptions[3].loss", "tweedie"]),
    "duplicate_naive": (
        lambda c: c["corruptions"].append({"kind": "noise", "sigma_n": 0.2, "loss": "edm"}),
        ["corruptions[5]", "noise-s0.20-naive"],
    ),
    "bad_precision": (lambda c: c["training"].update(precision="fp16"), ["training.precision", "fp16"]),
    "negative_consistency": (lambda c: c["training"].update(consistency_weight=-1), ["training.consistency_weight"]),
    "unknown_source": (lambda c: c["dataset"].update(source="imagenet"), ["dataset.source", "imagenet"]),
    "batch_not_split": (
        lambda c: c.update(device="cuda", resources={"gpu": 1, "train_gpu": 3}),
        ["training.batch_size", "3 GPUs"],
    ),
    "gpu_on_cpu_device": (lambda c: c.update(resources={"gpu": 1}), ["device", "cpu"]),
    "attention_nowhere": (lambda c: c["network"].update(attn_resolutions=[99]), ["network.attn_resolutions", "99"]),
    # issue 28: NaN and inf pass a JSON schema's bounds; refused before any job, by key
    "lr_inf": (lambda c: c["training"].update(lr=float("inf")), ["training.lr", "inf", "finite"]),
    "lr_nan": (lambda c: c["training"].update(lr=float("nan")), ["training.lr", "nan", "finite"]),
    "sigma_n_inf": (lambda c: c["corruptions"][3].update(sigma_n=float("inf")), ["corruptions[3].sigma_n", "finite"]),
    "delta_nan": (lambda c: c["corruptions"][1].update(delta=float("nan")), ["corruptions[1].delta", "finite"]),
    "dropout_nan": (lambda c: c["network"].update(dropout=float("nan")), ["network.dropout", "finite"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_schema_rejects_bad_config_naming_the_key(case):
    from snakemake.exceptions import WorkflowError

    mutate, expected = BAD_CONFIGS[case]
    common = load_common()
    with pytest.raises(WorkflowError) as info:
        common["validate_config"](_bad(mutate), str(REPO / "workflow/schemas/config.schema.yaml"))
    msg = str(info.value)
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_snakemake_stops_on_bad_config_before_any_job(tmp_path):
    """Through the real CLI: an override file (merged over config/config.yaml) and a config.yaml missing a key."""
    wd = copy_workflow(tmp_path / "wf")
    (wd / "bad.yaml").write_text(yaml.safe_dump({"corruptions": [{"kind": "clean"}, {"kind": "dust", "p": 1.5}]}))
    t0 = time.perf_counter()
    r = snakemake(wd, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert r.returncode != 0
    assert "corruptions[1].p" in r.stderr + r.stdout
    cfg = default_config()
    del cfg["sampling"]["steps"]
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake(wd, "-n", "--cores", "1")
    assert r.returncode != 0
    assert "'steps' is a required property" in r.stderr + r.stdout and "at sampling" in r.stderr + r.stdout
    assert not (wd / "results").exists() and not (wd / "data").exists()
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("configs", [[], ["--configfile", "config/sdxl-smoke.yaml"]], ids=["default", "sdxl"])
def test_lint_is_clean(configs):
    """The pixel branch (default config) and the SDXL branch (its rules exist only with an sdxl: section)."""
    r = snakemake(REPO, "--lint", "--cores", "1", *configs, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations" in r.stdout + r.stderr


def test_notebooks_have_a_parameters_cell():
    import nbformat

    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "paper_figures" / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        src = tagged[0].source
        assert "root = None" in src and "out_dir = " in src, name
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: clear the outputs"


def test_notebooks_review_as_text():
    """Outputs stripped and code cells short (docs/design.md, Notebooks): a notebook's diff reads like code."""
    import nbformat

    for path in sorted((REPO / "paper_figures").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in (c for c in nb.cells if c.cell_type == "code"):
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name}: clear the outputs"
            assert len(cell.source.splitlines()) <= 40, f"{path.name}: a code cell of over 40 lines; split it"


def test_dry_run_plans_the_grid(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    r = snakemake(wd, "-n", "--cores", "2", "--quiet", "rules")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    runs = len(default_config()["corruptions"])  # one model per entry; a naive entry is its own run
    for rule, count in [
        ("train", runs),
        ("sample", runs),
        ("neighbors", runs),
        ("attack", 3 * runs),
        ("hf_energy", runs),
        ("summary", 1),
        ("fig3_nearest_neighbors", 1),
        ("fig5_noise_generations", 1),
        ("fig6_noise_histograms", 1),
        ("prepare_dataset", 1),
    ]:
        assert re.search(rf"^{rule}\s+{count}$", out, re.M), f"{rule} x{count} not planned:\n{out}"
    assert "download_dataset" not in out and "fetch_weights" not in out  # the default never downloads


def test_job_graph_depends_on_the_config_not_on_files(tmp_path):
    """A weights file lying around changes nothing; `inception: always` adds the FID jobs and the
    download of their weights."""
    wd = copy_workflow(tmp_path / "wf")

    def planned(*args):
        r = snakemake(wd, "-n", "--cores", "2", "--quiet", "rules", *args)
        assert r.returncode == 0, r.stderr
        return sorted(re.findall(r"^(\w+)\s+(\d+)$", r.stdout + r.stderr, re.M))

    before = planned()
    weights = wd / default_config()["evaluation"].get("inception_weights", "resources/weights/inception-2015-12-05.pt")
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"not really the weights")
    assert planned() == before
    weights.unlink()
    always = dict(planned("--config", "evaluation={inception: always}"))
    runs = len(default_config()["corruptions"])
    assert int(always["fid"]) == int(dict(before)["fid"]) + runs and always["fetch_weights"] == "1"


def test_protect_models_write_protects_the_model(tmp_path):
    """training.protect_models (paper configs): the finished model is read-only. For an ordinary user
    a forced retraining then stops with Snakemake's write-protection error; as root (this machine,
    CI) only the mode bits can be checked, since root may write anything."""
    wd = copy_workflow(tmp_path / "wf")
    model = "results/models/smoke8/clean/model.pt"
    (wd / "protect.yaml").write_text("training: {protect_models: true}\n")
    args = ("--cores", "2", "--configfile", "config/smoke.yaml", "protect.yaml")
    r = snakemake(wd, model, *args)  # --configfile takes every argument after it
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (wd / model).stat().st_mode & 0o222  # no write bit for anyone
    if os.geteuid() == 0:
        # root may write anything: os.access (what Snakemake asks) ignores the mode bits, so the
        # refusal below only happens for ordinary users (a cluster account); here only the bits count
        assert os.access(wd / model, os.W_OK)
        return
    r = snakemake(wd, model, "--forcerun", "train", *args)
    assert r.returncode != 0 and "protected" in (r.stdout + r.stderr).lower(), (r.stdout + r.stderr)[-3000:]
    assert not (wd / model).stat().st_mode & 0o222


def train_settings(dry_run_output: str, run: str) -> dict:
    """The `--settings` JSON of run `run`'s train job in a `snakemake -n -p` output (a naive baseline's:
    its corruption with --loss edm; any other run's: its corruption without), whatever the jobs' order."""
    loss = " --loss edm" if layout.parse_run_name(run)[2] else ""
    m = re.search(
        rf"--corruption {re.escape(layout.base_name(run))} --delta [0-9.]+{loss} --settings '(\{{.*?\}})' ",
        dry_run_output,
    )
    assert m, f"no train job of {run} with --settings"
    return json.loads(m[1])


def test_dry_run_noise_entry_and_folder_source(tmp_path):
    """Issue 6's noise runs fit the grid (named noise-sX, no delta); a folder source is an input."""
    wd = copy_workflow(tmp_path / "wf")
    folder = tmp_path / "images"
    folder.mkdir()
    override = {
        "dataset": {
            "name": "mine",
            "source": "folder",
            "folder": str(folder),
            "resolution": 16,
            "num_images": None,
            "channels": 3,
        },
        "corruptions": [
            {"kind": "clean"},
            {"kind": "noise", "sigma_n": 0.2},
            {"kind": "noise", "sigma_n": 0.2, "loss": "edm"},
        ],
        "training": {"consistency_weight": 0.25},
        "network": {"attn_resolutions": [4]},
    }  # 16 px: feature maps 16, 8, 4
    (wd / "override.yaml").write_text(yaml.safe_dump(override))
    r = snakemake(wd, "-n", "--cores", "1", "--configfile", "override.yaml", "-p")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "results/models/mine/noise-s0.20/model.pt" in out and "results/models/mine/noise-s0.20-naive/model.pt" in out
    assert "--corruption noise-s0.20 --delta 0.0 --settings " in out
    assert "--corruption noise-s0.20 --delta 0.0 --loss edm --settings " in out
    assert "--corruption clean --delta 0.0 --settings " in out  # no loss flags for the other runs
    # the training section whole, with each run's own consistency weight (0 but for the Tweedie run)
    weights = {run: train_settings(out, run)["training"]["consistency_weight"] for run in ("noise-s0.20", "clean")}
    assert weights == {"noise-s0.20": 0.25, "clean": 0.0}
    assert train_settings(out, "noise-s0.20")["network"] == default_config()["network"]
    assert "-m ambient hf-energy" in out and "--corruption noise-s0.20-naive --corruption-seed 0" in out
    assert "fig5_noise_generations" in out and "fig6_noise_histograms" in out
    assert "--device auto --threads 1" in out and "torch.distributed.run" not in out
    heldout = default_config()["dataset"]["heldout_images"]  # config.yaml's held-out split
    assert (
        f"--source folder --resolution 16 --folder {folder} --channels 3 --heldout-out data/mine-heldout.zip "
        f"--heldout-images {heldout} --split-seed 0 --out data/mine.zip"
    ) in out
    assert "ambient ref-stats --images data/mine-heldout.zip" in out and "--ref-name heldout" in out
    assert "--num-images" not in out.split("ambient prepare")[1].split("\n")[0]


def _result(root, key: str, name: str, **fields):
    """The path of one of run `name`'s result files (dataset faces) under root, its folder made."""
    path = root / layout.run_file(key, "faces", name, **fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _fake_run(root, name: str, neighbors: dict) -> None:
    """A run as the workflow leaves it: a 4-sample zip and its neighbours summary."""
    import numpy as np

    from ambient.data import write_image_zip

    write_image_zip(
        _result(root, "samples", name), np.zeros((4, 1, 8, 8), np.uint8), info={"num_steps": 3, "train_steps": 7}
    )
    _result(root, "neighbors_json", name, extractor="pixel").write_text(
        json.dumps({"extractor": "pixel", "n": 4, **neighbors})
    )


def test_summary_from_metric_files(tmp_path):
    """ambient.eval.summary: one row per model, FD/KD under the extractor actually used, attack columns."""
    from ambient.cli import main

    for i, name in enumerate(["clean", "dust-p0.50"]):
        _fake_run(
            tmp_path,
            name,
            {
                "sim_mean": 0.5 - i / 4,
                "sim_median": 0.5,
                "sim_max": 0.99,
                "share_gt_0.90": 0.5 - i / 4,
                "share_gt_0.95": 0.25 - i / 4,
                "share_gt_0.99": 0.0,
                "carlini": {"share_flagged": 0.25},
            },
        )
        _result(tmp_path, "fd_json", name, extractor="filterbank").write_text(
            json.dumps(
                {
                    "extractor": "filterbank",
                    "fd_key": "fd_filterbank",
                    "kd_key": "kd_filterbank",
                    "fd_filterbank": 1.5 + i,
                    "kd_filterbank": 0.1,
                    "fallback_used": False,
                }
            )
        )
        _result(tmp_path, "fd_json", name, extractor="inception").write_text(
            json.dumps(  # weights missing: fell back to filterbank
                {
                    "extractor": "filterbank",
                    "fd_key": "fd_filterbank",
                    "kd_key": "kd_filterbank",
                    "fd_filterbank": 1.5 + i,
                    "kd_filterbank": 0.1,
                    "fallback_used": True,
                }
            )
        )
        _result(tmp_path, "attack_json", name, attack="inpaint").write_text(
            json.dumps(
                {
                    "primary_method": "inpaint",
                    "methods": {"inpaint": {"sim_mean": 0.9, "other_sim_mean": 0.6, "share_extracted": 0.75 - i / 2}},
                }
            )
        )
    out = tmp_path / "summary.csv"
    metrics = tmp_path / "summary.json"
    assert (
        main(
            [
                "summarize",
                "--root",
                str(tmp_path),
                "--dataset",
                "faces",
                "--corruptions",
                "clean",
                "dust-p0.50",
                "--extractors",
                "filterbank",
                "inception",
                "--attacks",
                "inpaint",
                "--out",
                str(out),
                "--metrics-json",
                str(metrics),
            ]
        )
        == 0
    )
    # DVC's metrics file: the numeric columns per model, the same numbers as the CSV
    numbers = json.loads(metrics.read_text())
    assert list(numbers) == ["clean", "dust-p0.50"] and numbers["dust-p0.50"]["inpaint_extracted"] == 0.25
    assert (
        numbers["clean"]["share_gt_0.95"] == 0.25 and "steps" not in numbers["clean"] and "kind" not in numbers["clean"]
    )
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["faces/clean", "faces/dust-p0.50"]
    assert [r["level"] for r in rows] == ["0", "0.5"] and rows[1]["kind"] == "dust"
    assert rows[0]["steps"] == "7" and rows[0]["n_samples"] == "4" and rows[0]["sampler_steps"] == "3"
    assert rows[1]["share_gt_0.95"] == "0" and rows[0]["share_gt_0.95"] == "0.25"
    assert rows[1]["fd_filterbank"] == "2.5" and rows[0]["inception_fallback"] == "filterbank"
    assert "fid" not in rows[0] and rows[1]["inpaint_extracted"] == "0.25"
    assert [r["loss"] for r in rows] == ["edm", "ambient"] and "hf_samples" not in rows[0]
    assert (
        main(
            [
                "summarize",
                "--root",
                str(tmp_path),
                "--dataset",
                "faces",
                "--corruptions",
                "box-p0.40",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_summary_noise_runs_and_hf_energy(tmp_path):
    """The naive baseline's run name maps to its corruption; hf_energy.json adds the hf_* columns."""
    from ambient.cli import main

    for i, name in enumerate(["noise-s0.20", "noise-s0.20-naive"]):
        _fake_run(
            tmp_path,
            name,
            {
                "sim_mean": 0.5,
                "sim_median": 0.5,
                "sim_max": 0.9,
                "share_gt_0.90": 0.0,
                "share_gt_0.95": 0.0,
                "share_gt_0.99": 0.0,
            },
        )
        _result(tmp_path, "hf_json", name).write_text(
            json.dumps(
                {"hf_samples": 0.02 + i / 10, "hf_train_clean": 0.02, "hf_train_noisy": 0.12, "hf_noise_index": i}
            )
        )
    out = tmp_path / "summary.csv"
    assert (
        main(
            [
                "summarize",
                "--root",
                str(tmp_path),
                "--dataset",
                "faces",
                "--corruptions",
                "noise-s0.20",
                "noise-s0.20-naive",
                "--hf-energy",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], r["level"], r["loss"]) for r in rows] == [("noise", "0.2", "tweedie"), ("noise", "0.2", "edm")]
    assert [r["hf_noise_index"] for r in rows] == ["0", "1"] and rows[1]["hf_train_noisy"] == "0.12"
    assert (
        main(
            [
                "summarize",
                "--root",
                str(tmp_path),
                "--dataset",
                "faces",
                "--corruptions",
                "clean-naive",
                "--out",
                str(out),
            ]
        )
        == 2
    )


# ---------------------------------------------------------------- end to end (smoke config)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke config end to end, with a second `snakemake` started in the same checkout while
    the first runs (issue 11): Snakemake's lock must refuse it, and the first must still finish."""
    wd = copy_workflow(tmp_path_factory.mktemp("smoke") / "wf")
    args = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/smoke.yaml"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    first = subprocess.Popen(args, cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    locks = wd / ".snakemake" / "locks"
    while first.poll() is None and not (locks.is_dir() and any(locks.iterdir())) and time.perf_counter() - t0 < 120:
        time.sleep(0.2)
    second = subprocess.run(args, cwd=wd, capture_output=True, text=True, env=env, timeout=300)
    _, err = first.communicate(timeout=900)
    seconds = time.perf_counter() - t0
    if first.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((wd / "logs").rglob("*.log")))
        pytest.fail(f"smoke workflow failed:\n{err[-5000:]}\n{logs}")
    print(f"smoke workflow: {seconds:.0f} s")
    return wd, seconds, second


@pytest.mark.slow
def test_smoke_second_snakemake_in_the_same_checkout_is_refused(smoke_run):
    _, _, second = smoke_run
    assert second.returncode != 0, "a second snakemake ran beside the first"
    assert "cannot be locked" in second.stderr or "LockException" in second.stderr, second.stderr[-2000:]


@pytest.mark.slow
def test_smoke_outputs(smoke_run):
    wd, seconds, _ = smoke_run
    cfg = smoke_config()
    names = [layout.run_name(c) for c in cfg["corruptions"]]
    figs = wd / "results" / "figures"
    stems = list(FIGURES) + [f"samples_{n}" for n in names]
    for stem in stems:
        png, pdf = figs / f"{stem}.png", figs / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 3000, png
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 3000, pdf
        import numpy as np
        from PIL import Image

        with Image.open(png) as im:
            assert min(im.size) > 150, (png, im.size)
            assert len(np.unique(np.asarray(im.convert("L")))) > 10, png
    import nbformat

    for name in NOTEBOOKS:
        nb = nbformat.read(figs / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.metadata["papermill"]["parameters"]["root"] == ".."  # the kernel runs in paper_figures/
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", f"{name}: {out}"
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells), name

    with open(wd / "results" / "metrics" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["corruption"] for r in rows] == names
    for col in (
        "model",
        "corruption",
        "level",
        "steps",
        "n_samples",
        "extractor",
        "sim_mean",
        "share_gt_0.90",
        "share_gt_0.95",
        "fd_pixel_heldout",
        "kd_pixel_heldout",
        "kd_pixel_heldout_std",
        "fd_filterbank_heldout",
        "kd_filterbank_heldout",
        "kd_filterbank_heldout_std",
        "inpaint_extracted",
        "inpaint_u1_extracted",
        "inpaint_u5_extracted",
        "noise_extracted",
    ):
        assert col in rows[0], col
        assert all(r[col] != "" for r in rows), col
    assert not any(k.startswith(("fid", "kid")) for k in rows[0])  # offline: never called FID
    assert not any(k.startswith(("fd_", "kd_")) and "_heldout" not in k for k in rows[0])  # each names its reference
    assert all(int(r["steps"]) == cfg["training"]["steps"] for r in rows)
    assert all(int(r["n_samples"]) == cfg["sampling"]["num_samples"] for r in rows)
    assert [float(r["level"]) for r in rows] == [0.0, 0.5, 0.4, 0.2, 0.2]
    assert [r["loss"] for r in rows] == ["edm", "ambient", "ambient", "tweedie", "edm"]
    for col in ("hf_samples", "hf_train_clean"):
        assert all(float(r[col]) > 0 for r in rows), col
    assert [r["hf_train_noisy"] != "" for r in rows] == [False, False, False, True, True]
    assert float(rows[3]["hf_train_noisy"]) > float(rows[3]["hf_train_clean"])
    # the naive baseline is sampled to sigma_min, the Tweedie model stops at sigma_n (from the checkpoint)
    from ambient.data import read_image_zip

    manifests = {
        n: read_image_zip(wd / layout.run_file("samples", "smoke8", n)).manifest
        for n in ("noise-s0.20", "noise-s0.20-naive")
    }
    assert manifests["noise-s0.20"]["stop_sigma"] == 0.2 and manifests["noise-s0.20"]["loss"] == "tweedie"
    assert manifests["noise-s0.20-naive"]["stop_sigma"] is None and manifests["noise-s0.20-naive"]["loss"] == "edm"
    # trained with consistency: also sampled full-length, through sigma < sigma_n
    full = read_image_zip(wd / layout.run_file("samples_full", "smoke8", "noise-s0.20")).manifest
    assert full["stop_sigma"] is None and full["sampler"] == "full"
    assert not (wd / layout.run_file("samples_full", "smoke8", "noise-s0.20-naive")).exists()
    # quality is scored against the held-out split, which shares no image with the training set
    held, train = (read_image_zip(wd / "data" / f"smoke8{s}.zip") for s in ("-heldout", ""))
    assert held.manifest["split"] == "heldout" and len(held) == cfg["dataset"]["heldout_images"]
    assert not {e["source"] for e in held.manifest["images"]} & {e["source"] for e in train.manifest["images"]}
    claims = list(csv.DictReader(open(wd / "results" / "metrics" / "claims.csv")))
    assert {"claim", "measured", "threshold", "holds"} <= set(claims[0]) and len(claims) >= 8
    for r in rows:
        assert 0.0 <= float(r["share_gt_0.95"]) <= float(r["share_gt_0.90"]) <= 1.0
    for bench in ("train", "sample", "neighbors_pixel", "attack_inpaint"):
        assert (wd / "benchmarks" / "smoke8" / "clean" / f"{bench}.tsv").is_file(), bench
    assert seconds < 300, f"the smoke workflow took {seconds:.0f} s"


@pytest.mark.slow
def test_smoke_nothing_to_do_afterwards(smoke_run):
    wd, _, _ = smoke_run
    r = snakemake(wd, "-n", "--cores", "2", "--configfile", "config/smoke.yaml")
    assert r.returncode == 0, r.stderr
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.slow
def test_smoke_report_embeds_every_figure(smoke_run):
    wd, _, _ = smoke_run
    report = wd / "results" / "report.html"
    r = snakemake(wd, "--configfile", "config/smoke.yaml", "--report", report)
    assert r.returncode == 0, r.stderr
    html = report.read_text()
    m = re.search(r"var results = (\{.*?\});\s*</script>", html, re.S)
    assert m, "no results block in the report"
    results = json.loads(m.group(1))
    names = [layout.run_name(c) for c in smoke_config()["corruptions"]]
    expected = [f"results/figures/{s}.png" for s in (*FIGURES, *(f"samples_{n}" for n in names))]
    expected.append("results/metrics/summary.csv")
    for path in expected:
        assert path in results, f"{path} not in the report"
        entry = results[path]
        data = base64.b64decode(entry["data_uri"].split("base64,", 1)[1])
        assert data == (wd / path).read_bytes(), f"{path}: embedded bytes differ from the file"
        assert entry["caption"].strip(), f"{path}: no caption"
    assert "Fig. 3, samples beside their nearest training images" in html


@pytest.mark.slow
def test_smoke_touch_after_restore_then_nothing_to_do(smoke_run):
    """A consumer (`dvc pull` into a fresh clone) has the files with new, arbitrary mtimes and no
    .snakemake metadata; `snakemake --touch` makes the DAG consistent again."""
    wd, _, _ = smoke_run
    shutil.rmtree(wd / ".snakemake")
    now = time.time()
    files = [p for d in ("data", "results") for p in (wd / d).rglob("*") if p.is_file()]
    for i, p in enumerate(sorted(files, reverse=True)):  # outputs older than their inputs
        os.utime(p, (now - 1000 + i, now - 1000 + i))
    r = snakemake(wd, "-n", "--cores", "2", "--configfile", "config/smoke.yaml")
    assert "Nothing to be done" not in r.stdout + r.stderr
    r = snakemake(wd, "--touch", "--cores", "2", "--configfile", "config/smoke.yaml")
    assert r.returncode == 0, r.stderr
    r = snakemake(wd, "-n", "--cores", "2", "--configfile", "config/smoke.yaml")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout + r.stderr

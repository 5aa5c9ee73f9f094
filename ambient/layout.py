"""Names and places, defined once: run names and labels, the loss of each corruption kind, where
each result file lies, and the figures.

Read by the workflow (workflow/rules/*.smk), the figure notebooks (paper_figures/figlib.py), the
library and the tests. Torch-free and config-driven (a config is the dict Snakemake validated),
so that Snakemake and the notebook kernel import it cheaply.

Run names:

    clean, dust-p0.20, box-p0.40     one model per corruption (loss chosen by the corruption)
    noise-s0.20                      the Tweedie loss on noisy data (loss auto = tweedie)
    noise-s0.20-naive                the naive baseline on the same noisy data: the plain EDM loss
                                     (`ambient train --loss edm`), which learns to output noisy images
    dust-p0.50-naive                 the naive baseline on the same dusty data: the unmasked network,
                                     the plain EDM loss on the observations as stored (erased pixels 0)
    gauss                            the Gaussian baseline: the mean and covariance of the clean
                                     training images, its exact denoiser (ambient.gaussian); no loss
                                     is minimised (loss `gauss`: the closed-form fit)

A naive run is any corrupted kind (AUTO_LOSS not edm) trained with loss edm; its name is the
corruption's plus NAIVE_SUFFIX, and `ambient train --corruption <base_name> --loss edm` trains it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# The corruption kinds. Masked kinds erase pixels (level p, the ambient loss); noise adds Gaussian
# noise (level sigma_n, the Tweedie loss); clean and the Gaussian baseline see the clean images.
# A new masked kind is its draw in ambient/corruption.py, its name here, and the schema's kind enum.
MASKED_KINDS = ("dust", "box")
NOISY_KINDS = ("noise",)
# Kinds whose data went through a corruption (clean and gauss see the clean images).
CORRUPTED_KINDS = (*MASKED_KINDS, *NOISY_KINDS)
# Kinds of one model each, named by the kind alone: clean, and the Gaussian baseline.
LEVELLESS_KINDS = ("clean", "gauss")
NAIVE_SUFFIX = "-naive"
# The memorization attacks on training images: inpainting (Fig. 1), noise (Fig. 4) and the mask key.
ATTACK_KINDS = ("inpaint", "noise", "key")
# Shares of samples whose top-1 similarity to the training set exceeds a threshold (share_gt_<t>);
# above COPY_THRESHOLD a sample is a copy (the copy claims read that share).
COPY_THRESHOLD = 0.95
SIMILARITY_THRESHOLDS = (0.90, COPY_THRESHOLD, 0.99)


def share_column(threshold: float) -> str:
    """The column of the share of samples whose top-1 similarity exceeds `threshold`: share_gt_0.95."""
    return f"share_gt_{threshold:.2f}"


# The loss `--loss auto` trains each kind with (gauss: the closed-form fit of mean and covariance).
AUTO_LOSS = {
    "clean": "edm",
    **dict.fromkeys(MASKED_KINDS, "ambient"),
    **dict.fromkeys(NOISY_KINDS, "tweedie"),
    "gauss": "gauss",
}
# The losses a kind may be trained with: edm on corrupted data is that data's naive baseline.
KIND_LOSSES = {k: (loss, "edm") if k in CORRUPTED_KINDS else (loss,) for k, loss in AUTO_LOSS.items()}


# ---------------------------------------------------------------- runs


def corruption_name(kind: str, p: float = 0.0, sigma_n: float = 0.0) -> str:
    """clean, gauss, dust-p0.20, box-p0.40, noise-s0.20: the levels carry 2 decimals."""
    if kind in LEVELLESS_KINDS:
        return kind
    if kind == "noise":
        return f"noise-s{sigma_n:.2f}"
    return f"{kind}-p{p:.2f}"


# A run name, the one pattern: the Snakefile's wildcard constraint, and parse_run_name below.
_PLAIN, _MASKED, _NOISY = ("|".join(kinds) for kinds in (LEVELLESS_KINDS, MASKED_KINDS, NOISY_KINDS))
RUN_NAME_PATTERN = rf"{_PLAIN}|(?:(?:{_MASKED})-p[0-9.]+|(?:{_NOISY})-s[0-9.]+)(?:{NAIVE_SUFFIX})?"
_RUN_NAME = re.compile(
    rf"(?P<plain>{_PLAIN})|(?:(?P<kind>{_MASKED})-p(?P<p>[0-9.]+)|(?P<noisy>{_NOISY})-s(?P<s>[0-9.]+))"
    rf"(?P<naive>{NAIVE_SUFFIX})?"
)


def parse_run_name(name: str) -> tuple[str, float, bool]:
    """(kind, level, naive) of a run name: the inverse of run_name."""
    m = _RUN_NAME.fullmatch(name)
    if not m:
        raise ValueError(
            f"run name {name!r} is not one of clean, gauss, dust-pP, box-pP, noise-sS "
            f"(the last three also with {NAIVE_SUFFIX})"
        )
    if m["plain"]:
        return m["plain"], 0.0, False
    if m["kind"]:
        return m["kind"], float(m["p"]), bool(m["naive"])
    return m["noisy"], float(m["s"]), bool(m["naive"])


def is_naive(entry: dict) -> bool:
    """A config entry of a naive baseline: corrupted data (dust, box, noise) trained with the plain EDM loss."""
    return entry["kind"] in CORRUPTED_KINDS and entry.get("loss", "auto") == "edm"


def run_name(entry: dict) -> str:
    """The run name of a config `corruptions` entry."""
    name = corruption_name(entry["kind"], entry.get("p", 0.0), entry.get("sigma_n", 0.0))
    return name + NAIVE_SUFFIX if is_naive(entry) else name


def base_name(run: str) -> str:
    """The corruption of a run name (noise-s0.20-naive -> noise-s0.20, dust-p0.50-naive -> dust-p0.50):
    `ambient train --corruption`."""
    return run.removesuffix(NAIVE_SUFFIX)


GAUSS_LABEL = "Gaussian (mean + covariance of the training set)"


def run_label(entry: dict) -> str:
    """The legend label of a run."""
    kind = entry["kind"]
    if kind == "clean":
        return "clean"
    if kind == "gauss":
        return GAUSS_LABEL
    if kind == "noise":
        return f"noisy sigma_n={entry['sigma_n']:.2f}, " + ("naive (EDM loss)" if is_naive(entry) else "Tweedie (ours)")
    if is_naive(entry):
        return f"naive {kind} p={entry['p']:.2f} (EDM loss)"
    return f"ambient {kind}, p={entry['p']:.2f}"


# dust's further corruption under the ambient loss, when a run does not set its own delta.
DUST_DELTA = 0.1


def default_delta(kind: str, loss: str = "auto") -> float:
    """The further corruption delta of `kind` trained with `loss` when none is given: dust's
    DUST_DELTA under the ambient loss; 0 otherwise (box's further corruption is a second box; the
    naive baseline, loss edm, never draws one)."""
    return DUST_DELTA if kind == "dust" and loss in ("auto", "ambient") else 0.0


def run_delta(entry: dict) -> float:
    """The further corruption delta a run trains with: its own, else default_delta; 0 for the kinds
    that draw none (unmasked ones, box, whose further corruption is a second box) and for a naive baseline."""
    if entry["kind"] not in MASKED_KINDS or entry["kind"] == "box" or is_naive(entry):
        return 0.0
    return entry.get("delta", default_delta(entry["kind"]))


def run_record(entry: dict) -> dict:
    """A run as the notebooks take it: name, kind, level, delta, p, sigma_n, label, loss, naive, series."""
    kind, naive = entry["kind"], is_naive(entry)
    return {
        "name": run_name(entry),
        "kind": kind,
        "level": 0.0 if kind in LEVELLESS_KINDS else entry.get("sigma_n" if kind == "noise" else "p", 0.0),
        "delta": run_delta(entry),
        "p": entry.get("p", 0.0),
        "sigma_n": entry.get("sigma_n", 0.0),
        "label": run_label(entry),
        "loss": entry.get("loss", "auto"),
        "naive": naive,
        "series": f"{kind} (naive)" if naive else kind,
    }


def run_list(config: dict) -> list[dict]:
    """One record per model of the config, in config order."""
    return [run_record(c) for c in config["corruptions"]]


# ---------------------------------------------------------------- result files

# One directory per phase (one DVC stage each, dvc.yaml), then dataset, then model. A phase's files
# never share a directory with another phase's, so DVC tracks each phase as one directory.
# The workflow config's schema; its training and network sections come from ambient.settings.
SCHEMA = "workflow/schemas/config.schema.yaml"

DATA_DIR = "data"
MODELS_DIR = "results/models"
SAMPLES_DIR = "results/samples"
EVALUATION_DIR = "results/evaluation"
METRICS_DIR = "results/metrics"
FIGURES_DIR = "results/figures"
# In the order the phases run (dvc.yaml's stages: datasets, models, samples, evaluation, metrics, figures).
PHASE_DIRS = (DATA_DIR, MODELS_DIR, SAMPLES_DIR, EVALUATION_DIR, METRICS_DIR, FIGURES_DIR)

DATASET_ZIP = DATA_DIR + "/{dataset}.zip"
HELDOUT_ZIP = DATA_DIR + "/{dataset}-heldout.zip"
# Feature statistics of the reference set FD/KD are scored against ({ref}: heldout or train).
REF_STATS = EVALUATION_DIR + "/{dataset}/ref_{extractor}_{ref}.npz"
# The quality ruler's disturbance test (ambient.eval.extractor_check) on the training images against {ref}.
RULER_CHECK = EVALUATION_DIR + "/{dataset}/ruler_check_{extractor}_{ref}.json"
SUMMARY_CSV = METRICS_DIR + "/summary.csv"
SUMMARY_JSON = METRICS_DIR + "/summary.json"  # dvc.yaml's metrics
CLAIMS_CSV = METRICS_DIR + "/claims.csv"

# Per-model result files. {extractor}: the feature space; {attack}: inpaint, noise or key.
_MODEL, _SAMPLES, _EVAL = (d + "/{dataset}/{run}/" for d in (MODELS_DIR, SAMPLES_DIR, EVALUATION_DIR))
RUN_FILES = {
    "model": _MODEL + "model.pt",
    "train_dir": _MODEL + "train",  # checkpoints and train_log.jsonl: resume state, not an output
    "samples": _SAMPLES + "samples.zip",
    "samples_full": _SAMPLES + "samples_full.zip",
    "neighbors_json": _EVAL + "neighbors_{extractor}.json",
    "neighbors_csv": _EVAL + "neighbors_{extractor}.csv",
    "neighbors_npz": _EVAL + "neighbors_{extractor}_gallery.npz",
    "fd_json": _EVAL + "fd_{extractor}.json",
    "attack_json": _EVAL + "attack_{attack}.json",
    "attack_csv": _EVAL + "attack_{attack}.csv",
    "attack_npz": _EVAL + "attack_{attack}_gallery.npz",
    "hf_json": _EVAL + "hf_energy.json",
}
# The attack files of one kind, as the figure table names them.
for _attack in ATTACK_KINDS:
    for _ext in ("json", "csv", "npz"):
        RUN_FILES[f"attack_{_attack}_{_ext}"] = RUN_FILES[f"attack_{_ext}"].replace("{attack}", _attack)


class _Keep(dict):
    """format_map fields not given stay as they are: Snakemake wildcards ({dataset}, {extractor})."""

    def __missing__(self, key):
        return "{" + key + "}"


def run_file(key: str, dataset: str = "{dataset}", run: str = "{corruption}", **fields) -> str:
    """The path of a model's result file. Fields left out stay wildcards: run_file("model") is the
    train rule's output pattern results/models/{dataset}/{corruption}/model.pt."""
    return RUN_FILES[key].format_map(_Keep(dataset=dataset, run=run, **fields))


# ---------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    """One figure notebook, paper_figures/<notebook>.ipynb, run by papermill as Snakemake rule `rule`.

    files: the per-model result files it reads (RUN_FILES keys), passed in `runs`; noise_only: it
    shows the clean and noise models only, and exists only when the config has noise models;
    needs_attacks: it exists only with evaluation.attacks.enabled; per_run: one PNG/PDF per model
    (<notebook>_<run>), else one (<notebook>); params: further notebook parameters from the config.
    """

    rule: str
    caption: str  # workflow/report/<caption>, shown in `snakemake --report`
    label: str  # its title in the report (per_run figures: the report's category)
    files: tuple[str, ...] = ()
    dataset: bool = False  # reads data/<dataset>.zip (dataset_zip)
    summary: bool = False  # reads results/metrics/summary.csv (summary_csv)
    runs: bool = True  # takes the models (`runs`, with their `files`)
    noise_only: bool = False
    needs_attacks: bool = False
    per_run: bool = False
    notebook: str = ""  # default: the rule name
    params: Callable[[dict], dict] = field(default=lambda config: {})

    @property
    def stem(self) -> str:
        return self.notebook or self.rule

    @property
    def notebook_path(self) -> str:
        return f"paper_figures/{self.stem}.ipynb"

    @property
    def executed_notebook(self) -> str:
        return f"{FIGURES_DIR}/notebooks/{self.stem}.ipynb"

    def enabled(self, config: dict) -> bool:
        if self.needs_attacks and not config["evaluation"]["attacks"]["enabled"]:
            return False
        return not self.noise_only or any(c["kind"] == "noise" for c in config["corruptions"])

    def stems(self, config: dict) -> list[str]:
        """Stems of its PNG and PDF files under FIGURES_DIR."""
        return [f"{self.stem}_{r['name']}" for r in run_list(config)] if self.per_run else [self.stem]


def _extractor(config: dict) -> dict:
    return {"extractor": config["evaluation"]["similarity_extractor"]}


def _corruption_seed(config: dict) -> dict:
    return {"corruption_seed": config["training"]["corruption_seed"]}


# One Snakemake rule per entry (workflow/rules/figures.smk); table order = the order of rule `all`'s
# figures. A new figure: an entry here, paper_figures/<name>.ipynb (a cell tagged `parameters`, then
# `ROOT = figlib.find_root(root)`) and its caption workflow/report/<caption>.
FIGURES = (
    Figure("fig2_training_data", "fig2.rst", "Fig. 2: what each model saw", dataset=True, params=_corruption_seed),
    Figure(
        "fig3_nearest_neighbors",
        "fig3.rst",
        "Fig. 3: samples and their nearest training images",
        files=("samples", "neighbors_csv"),
        dataset=True,
        params=lambda config: {**_extractor(config), "n_show": 8},
    ),
    Figure(
        "fig8_similarity_histograms",
        "fig8.rst",
        "Fig. 8: similarity histograms",
        files=("neighbors_json", "neighbors_csv"),
        params=_extractor,
    ),
    Figure("tradeoff", "tradeoff.rst", "Trade-off: memorization vs quality", summary=True, runs=False),
    Figure(
        "sample_grids",
        "samples.rst",
        "Samples",
        files=("samples",),
        per_run=True,
        notebook="samples",
        params=lambda config: {"columns": 16, "max_samples": 128},
    ),
    Figure(
        "fig1_inpainting_attack",
        "fig1.rst",
        "Fig. 1: inpainting attack",
        files=("attack_inpaint_json", "attack_inpaint_npz"),
        needs_attacks=True,
        params=lambda config: {"n_show": 8},
    ),
    Figure(
        "fig4_noise_attack",
        "fig4.rst",
        "Fig. 4: noise attack",
        files=("attack_noise_json", "attack_noise_npz"),
        needs_attacks=True,
        params=lambda config: {"n_show": 8},
    ),
    # Training on noisy data (Tweedie paper, Figs. 5-7): noisy training examples beside the samples of
    # each noise model and the naive baseline, and the high-frequency energy of each.
    Figure(
        "fig5_noise_generations",
        "fig5.rst",
        "Fig. 5: training on noisy data, generations",
        files=("samples", "hf_json"),
        dataset=True,
        noise_only=True,
        params=lambda config: {**_corruption_seed(config), "n_show": 8},
    ),
    Figure(
        "fig6_noise_histograms",
        "fig6.rst",
        "Fig. 6: similarity against noise level",
        files=("neighbors_json", "neighbors_csv"),
        noise_only=True,
        params=_extractor,
    ),
)


def figure_outputs(config: dict) -> list[str]:
    """Every figure file the workflow renders for `config`: PNG and PDF, then the executed notebooks."""
    figures = [f for f in FIGURES if f.enabled(config)]
    return [
        f"{FIGURES_DIR}/{s}.{ext}"
        for f in sorted(figures, key=lambda f: f.per_run)
        for s in f.stems(config)
        for ext in ("png", "pdf")
    ] + [f.executed_notebook for f in figures]

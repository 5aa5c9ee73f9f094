"""Names and places, defined once: run names and labels, the loss of each corruption kind, where
each result file lies, the branches of the workflow (BRANCHES: the pixel models, the SDXL
fine-tuning) and the figures of every branch (FIGURES).

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


# ---------------------------------------------------------------- the SDXL branch's files

# Every result of the SDXL branch lies under SDXL_DIR; {name}: the config's sdxl.name.
SDXL_DIR = "results/sdxl/{name}"
SDXL_FIGURES_DIR = FIGURES_DIR + "/sdxl/{name}"
# The attacks' image zips, attack/<attack>_<part>.zip (ambient/cli/sdxl.py writes them), and those
# scored against the attacked image (Figs. 1, 4), in the order the figure draws them.
SDXL_ATTACK_PARTS = {"noise": ("noised", "one_step", "full"), "inpaint": ("masked", "inpainted")}
SDXL_ATTACK_OUTPUTS = tuple(f"{attack}_{part}" for attack, parts in SDXL_ATTACK_PARTS.items() for part in parts)
SDXL_ATTACK_SCORES = ("inpaint_inpainted", "noise_one_step", "noise_full")
# {part}: data (the fine-tuning images) or attack (the images attacked); {tn}: the noise level t_n;
# {sampler}: early or full; {output}: an attack zip (SDXL_ATTACK_OUTPUTS); {kind}: a scored one.
SDXL_FILES = {
    key: f"{SDXL_DIR}/{path}"
    for key, path in {
        "model": "model.json",  # the base model: its folder (tiny build or local lookup)
        "tiny_model": "tiny_model",
        "images": "data/{part}.zip",
        "train_images": "data/data.zip",
        "attack_images": "data/attack.zip",
        "lora": "tn{tn}/lora.pt",
        "train_dir": "tn{tn}/train",  # checkpoints: resume state, not an output
        "samples": "tn{tn}/samples_{sampler}.zip",
        "similarity_json": "tn{tn}/similarity_{sampler}.json",
        "similarity_csv": "tn{tn}/similarity_{sampler}.csv",
        "attack_zip": "attack/{output}.zip",
        "attack_json": "attack/similarity_{kind}.json",
        "attack_csv": "attack/similarity_{kind}.csv",
    }.items()
}


def sdxl_model_note(config: dict) -> str:
    """What the SDXL figures print on their face about the models."""
    m = config["sdxl"]["model"]
    if m["tiny"]:
        return "RANDOM-WEIGHT TINY MODELS (ambient.latent.tiny): a pipeline check, the images mean nothing"
    return f"base model {m.get('id') or m.get('path')}"


def _sdxl_grid(config: dict) -> dict:
    s = config["sdxl"]
    return {
        "tn": [str(t) for t in s["noise_levels"]],
        "sampler": list(s["generation"]["samplers"]),
        "output": list(SDXL_ATTACK_OUTPUTS),
        "kind": list(SDXL_ATTACK_SCORES),
    }


# ---------------------------------------------------------------- branches


def _no_params(config: dict) -> dict:
    return {}


@dataclass(frozen=True, eq=False)  # one object per branch (compared and hashed by identity)
class Branch:
    """A branch of the workflow: the pixel-space models trained from scratch, the SDXL fine-tuning.

    section: the config section of its own (sdxl:), without which it has no rules (None: the
    top-level config; its rules always exist); switch: the config key that asks for its targets
    (pixel: true; an sdxl: section). results_dir, figures_dir: where it writes ({name}: the
    section's name). files: its result files, key -> path template (fields left out stay
    Snakemake wildcards); phases: phase -> the keys of the files it writes, in the order they run.
    Its figures are the FIGURES entries of branch=<name>, drawn by the notebooks with `figlib`'s
    helpers in the environment `conda`, logged under figure_logs, in the report under
    report_category; grid: the values of its file wildcards for a config (a figure reads its
    `files` over all of them); figure_params: the notebook parameters every figure of the branch
    takes; figure_resources: mem_mb and runtime of a figure job; attacks: whether the config runs
    its attacks (the figures of needs_attacks).

    A new branch (IF fine-tuning, MRI): an entry of BRANCHES, its figures in FIGURES, its rules
    (workflow/rules/<name>.smk, included by the Snakefile) and its config section in the schema.
    """

    name: str
    switch: str
    results_dir: str
    figures_dir: str
    files: dict[str, str]
    phases: dict[str, tuple[str, ...]]
    figlib: str
    conda: str
    figure_logs: str
    report_category: str
    figure_resources: Callable[[dict], dict]
    attacks: Callable[[dict], bool]
    section: str | None = None
    grid: Callable[[dict], dict] = _no_params
    figure_params: Callable[[dict], dict] = _no_params

    def defined(self, config: dict) -> bool:
        """Whether the workflow defines its rules for `config`."""
        return self.section is None or bool(config.get(self.section))

    def enabled(self, config: dict) -> bool:
        """Whether `config` asks for its targets (rule all)."""
        return bool(config.get(self.switch))

    def _fields(self, config: dict | None) -> dict:
        return {"name": config[self.section]["name"]} if self.section and config is not None else {}

    def dir(self, config: dict | None = None) -> str:
        return self.results_dir.format_map(_Keep(self._fields(config)))

    def fig_dir(self, config: dict | None = None) -> str:
        return self.figures_dir.format_map(_Keep(self._fields(config)))

    def log_dir(self, config: dict | None = None) -> str:
        """The folder of its figure jobs' logs."""
        return self.figure_logs.format_map(_Keep(self._fields(config)))

    def path(self, key: str, config: dict | None = None, **fields) -> str:
        """A result file's path; the fields not given stay wildcards."""
        return self.files[key].format_map(_Keep(self._fields(config), **fields))

    def expand(self, key: str, config: dict) -> list[str]:
        """The paths of a result file over the values of its wildcards (grid), in their order."""
        paths = [self.path(key, config)]
        grid = self.grid(config)
        for name in re.findall(r"{(\w+)}", paths[0]):
            paths = [p.replace("{" + name + "}", str(v)) for p in paths for v in grid[name]]
        return paths

    @property
    def figures(self) -> tuple[Figure, ...]:
        return tuple(f for f in FIGURES if f.branch == self.name)

    def figure_outputs(self, config: dict) -> list[str]:
        """Its figure files for `config`: PNG and PDF (one per model last), then the executed notebooks."""
        figures = [f for f in self.figures if f.enabled(config)]
        files = [p for f in sorted(figures, key=lambda f: f.per_run) for p in f.outputs(config, "png", "pdf")]
        return files + [f.executed_notebook(config) for f in figures]


# ---------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    """One figure notebook, paper_figures/<notebook>.ipynb, run by papermill as Snakemake rule `rule`.

    branch: the Branch it belongs to (its result files, folders, notebook helpers); files: the
    branch's result files it reads (pixel: RUN_FILES keys, per model, passed in `runs`; other
    branches: their `files` over all of their wildcards); noise_only: it shows the clean and noise
    models only, and exists only when the config has noise models; needs_attacks: it exists only
    when the branch runs its attacks; per_run: one PNG/PDF per model (<notebook>_<run>), else one
    (<notebook>); params: further notebook parameters from the config.
    """

    rule: str
    label: str  # its title in the report (per_run figures: the report's category)
    # workflow/report/<caption>, shown in `snakemake --report`; none: workflow/report/figure.rst,
    # the label and the notebook's first markdown cell (notebook_description)
    caption: str = ""
    files: tuple[str, ...] = ()
    dataset: bool = False  # pixel: reads data/<dataset>.zip (dataset_zip)
    summary: bool = False  # pixel: reads results/metrics/summary.csv (summary_csv)
    runs: bool = True  # pixel: takes the models (`runs`, with their `files`)
    noise_only: bool = False
    needs_attacks: bool = False
    per_run: bool = False
    notebook: str = ""  # default: the rule name
    params: Callable[[dict], dict] = field(default=_no_params)
    branch: str = "pixel"

    @property
    def stem(self) -> str:
        return self.notebook or self.rule

    @property
    def notebook_path(self) -> str:
        return f"paper_figures/{self.stem}.ipynb"

    @property
    def of(self) -> Branch:
        return branch(self.branch)

    def executed_notebook(self, config: dict | None = None) -> str:
        return f"{self.of.fig_dir(config)}/notebooks/{self.stem}.ipynb"

    def enabled(self, config: dict) -> bool:
        if self.needs_attacks and not self.of.attacks(config):
            return False
        return not self.noise_only or any(c["kind"] == "noise" for c in config["corruptions"])

    def stems(self, config: dict) -> list[str]:
        """Stems of its PNG and PDF files in its branch's figures folder."""
        return [f"{self.stem}_{r['name']}" for r in run_list(config)] if self.per_run else [self.stem]

    def outputs(self, config: dict, *exts: str) -> list[str]:
        """Its figure files of the extensions `exts`, per stem."""
        return [f"{self.of.fig_dir(config)}/{s}.{ext}" for s in self.stems(config) for ext in exts]


def notebook_description(path: str) -> str:
    """A figure notebook's first markdown cell less its title line (# ...): what the figure shows."""
    import json
    from pathlib import Path

    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    text = next(("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"), "")
    lines = text.strip().splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("#") else lines).strip()


def _extractor(config: dict) -> dict:
    return {"extractor": config["evaluation"]["similarity_extractor"]}


def _corruption_seed(config: dict) -> dict:
    return {"corruption_seed": config["training"]["corruption_seed"]}


def _sdxl_levels(config: dict) -> dict:
    return {"noise_levels": config["sdxl"]["noise_levels"], "samplers": config["sdxl"]["generation"]["samplers"]}


# One Snakemake rule per entry (workflow/rules/figures.smk); a branch's entries in this order are the
# order of its figures in rule `all`. A new figure: an entry here and paper_figures/<name>.ipynb (a
# cell tagged `parameters`, then `ROOT = figlib.find_root(root)`; its first markdown cell is its
# report caption unless `caption` names a file in workflow/report/).
FIGURES = (
    Figure("fig2_training_data", "Fig. 2: what each model saw", "fig2.rst", dataset=True, params=_corruption_seed),
    Figure(
        "fig3_nearest_neighbors",
        "Fig. 3: samples and their nearest training images",
        "fig3.rst",
        files=("samples", "neighbors_csv"),
        dataset=True,
        params=lambda config: {**_extractor(config), "n_show": 8},
    ),
    Figure(
        "fig8_similarity_histograms",
        "Fig. 8: similarity histograms",
        "fig8.rst",
        files=("neighbors_json", "neighbors_csv"),
        params=_extractor,
    ),
    Figure("tradeoff", "Trade-off: memorization vs quality", "tradeoff.rst", summary=True, runs=False),
    Figure(
        "sample_grids",
        "Samples",
        "samples.rst",
        files=("samples",),
        per_run=True,
        notebook="samples",
        params=lambda config: {"columns": 16, "max_samples": 128},
    ),
    Figure(
        "fig1_inpainting_attack",
        "Fig. 1: inpainting attack",
        "fig1.rst",
        files=("attack_inpaint_json", "attack_inpaint_npz"),
        needs_attacks=True,
        params=lambda config: {"n_show": 8},
    ),
    Figure(
        "fig4_noise_attack",
        "Fig. 4: noise attack",
        "fig4.rst",
        files=("attack_noise_json", "attack_noise_npz"),
        needs_attacks=True,
        params=lambda config: {"n_show": 8},
    ),
    # Training on noisy data (Tweedie paper, Figs. 5-7): noisy training examples beside the samples of
    # each noise model and the naive baseline, and the high-frequency energy of each.
    Figure(
        "fig5_noise_generations",
        "Fig. 5: training on noisy data, generations",
        "fig5.rst",
        files=("samples", "hf_json"),
        dataset=True,
        noise_only=True,
        params=lambda config: {**_corruption_seed(config), "n_show": 8},
    ),
    Figure(
        "fig6_noise_histograms",
        "Fig. 6: similarity against noise level",
        "fig6.rst",
        files=("neighbors_json", "neighbors_csv"),
        noise_only=True,
        params=_extractor,
    ),
    # The SDXL branch (workflow/rules/sdxl.smk): its captions are the notebooks' first markdown cells.
    Figure(
        "sdxl_fig1_4_attacks",
        "SDXL Figs. 1 and 4: inpainting and noise attacks",
        files=("attack_json", "attack_images", "attack_zip"),
        needs_attacks=True,
        params=lambda config: {
            "n_show": 8,
            "t_attack": config["sdxl"]["attack"]["t_attack"],
            "mask_fraction": config["sdxl"]["attack"]["mask_fraction"],
        },
        branch="sdxl",
    ),
    Figure(
        "sdxl_fig5_7_generations",
        "SDXL Figs. 5-7: fine-tuning on noisy data",
        files=("samples", "train_images"),
        params=lambda config: {
            **_sdxl_levels(config),
            "noise_seed": config["sdxl"]["training"]["noise_seed"],
            "n_show": 8,
        },
        branch="sdxl",
    ),
    Figure(
        "sdxl_fig8_similarity_histograms",
        "SDXL Fig. 8: similarity of generations to the training set",
        files=("similarity_json",),
        params=_sdxl_levels,
        branch="sdxl",
    ),
)


# ---------------------------------------------------------------- the branches' table

# The phases, in the order they run: one DVC stage each (dvc.yaml) and one target rule each
# (workflow/rules/phases.smk) on the pixel branch, whose phases are PHASE_DIRS.
PHASES = ("datasets", "models", "samples", "evaluation", "metrics", "figures")
PIXEL_FILES = {
    "dataset_zip": DATASET_ZIP,
    "heldout_zip": HELDOUT_ZIP,
    **RUN_FILES,
    "ref_stats": REF_STATS,
    "ruler_check": RULER_CHECK,
    "summary_csv": SUMMARY_CSV,
    "summary_json": SUMMARY_JSON,
    "claims_csv": CLAIMS_CSV,
}

PIXEL = Branch(
    name="pixel",
    switch="pixel",
    results_dir="results",
    figures_dir=FIGURES_DIR,
    files=PIXEL_FILES,
    phases={
        phase: tuple(k for k, path in PIXEL_FILES.items() if path.startswith(d + "/"))
        for phase, d in zip(PHASES, PHASE_DIRS)
    },
    figlib="paper_figures/figlib.py",
    conda="environment.yml",
    figure_logs="logs/figures",
    report_category="Figures",
    figure_resources=lambda config: {
        "mem_mb": config["resources"]["mem_mb"]["figures"],
        "runtime": config["resources"]["runtime"]["figures"],
    },
    attacks=lambda config: config["evaluation"]["attacks"]["enabled"],
)

SDXL = Branch(
    name="sdxl",
    switch="sdxl",
    section="sdxl",
    results_dir=SDXL_DIR,
    figures_dir=SDXL_FIGURES_DIR,
    files=SDXL_FILES,
    phases={
        "datasets": ("images", "train_images", "attack_images"),
        "models": ("model", "tiny_model", "lora", "train_dir"),
        "samples": ("samples", "attack_zip"),
        "evaluation": ("similarity_json", "similarity_csv", "attack_json", "attack_csv"),
        "figures": (),
    },
    figlib="paper_figures/sdxl_figlib.py",
    conda="workflow/envs/sdxl.yml",
    figure_logs="logs/sdxl/{name}",
    report_category="SDXL",
    figure_resources=lambda config: {"mem_mb": 1500, "runtime": config["sdxl"]["resources"]["runtime"]["figures"]},
    attacks=lambda config: config["sdxl"]["attack"]["enabled"],
    grid=_sdxl_grid,
    figure_params=lambda config: {
        "model_note": sdxl_model_note(config),
        "tiny": config["sdxl"]["model"]["tiny"],
        "sdxl_dir": SDXL.dir(config),
    },
)

BRANCHES = (PIXEL, SDXL)


def branch(name: str) -> Branch:
    for b in BRANCHES:
        if b.name == name:
            return b
    raise KeyError(f"no branch {name!r} (ambient.layout.BRANCHES: {', '.join(b.name for b in BRANCHES)})")


def defined_figures(config: dict) -> list[Figure]:
    """The figures whose rules the workflow defines for `config`: those of every branch it defines."""
    return [f for f in FIGURES if f.of.defined(config)]


def figure_outputs(config: dict) -> list[str]:
    """Every figure file the pixel branch renders for `config`: PNG and PDF, then the executed notebooks."""
    return PIXEL.figure_outputs(config)

# Shared helpers: config validation (schema + cross-field checks), the run grid, paths.
# Every function of the workflow lives here (snakemake --lint: no functions beside rules).
# Run names, result paths and the figure table come from ambient/layout.py.
import json
import re
import shlex
import sys
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from ambient import layout
from ambient.settings import non_finite_values

# Sources downloaded by the download_dataset rule (ambient.pipeline.download); never part of the CPU/CI configs.
PAPER_SOURCES = ("celeba", "ffhq", "celeba_hq")


def _config_path(path):
    """corruptions[1].p from a jsonschema path deque."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate_config(cfg, schema):
    """Validate against the schema (filling defaults); stop with a message that names the key."""
    for where, value in non_finite_values(cfg):
        raise WorkflowError(f"invalid config at {where}: {value} is not a finite number "
                            "(.inf and .nan pass the schema's bounds; give a number)")
    try:
        validate(cfg, schema)
    except WorkflowError as e:
        err = e.__context__
        if not isinstance(err, jsonschema.ValidationError):
            raise
        # the most specific error: descend into anyOf/allOf/if-then contexts
        while err.context:
            err = jsonschema.exceptions.best_match(err.context)
        where = _config_path(err.absolute_path)
        raise WorkflowError(f"invalid config at {where}: {err.message} "
                            f"(schema: workflow/schemas/config.schema.yaml)") from None
    names = {}
    for i, c in enumerate(cfg["corruptions"]):
        for key in ("p", "sigma_n"):
            if key in c and round(c[key], 2) != c[key]:
                raise WorkflowError(f"invalid config at corruptions[{i}].{key}: {c[key]} has more than 2 decimals; "
                                    f"the run name ({layout.run_name(c)}) carries {key} with 2 decimals")
        name = layout.run_name(c)
        if name in names:
            raise WorkflowError(f"invalid config at corruptions[{i}]: run name {name!r} repeats corruptions[{names[name]}] "
                                "(delta is not part of the name: one delta per kind and level)")
        names[name] = i
    ev = cfg["evaluation"]
    if ev["ruler"] not in ev["extractors"]:
        raise WorkflowError(f"invalid config at evaluation.ruler: {ev['ruler']!r} is not among evaluation.extractors "
                            f"{ev['extractors']}; the ruler's C2ST column comes from that extractor's fd job")
    res = cfg["resources"]
    n_train = res["gpu"] if res.get("train_gpu") is None else res["train_gpu"]
    if n_train > 1 and cfg["training"]["batch_size"] % n_train:
        raise WorkflowError(f"invalid config at training.batch_size: {cfg['training']['batch_size']} does not split "
                            f"evenly over the {n_train} GPUs of a training job (resources.train_gpu)")
    if (res["gpu"] >= 1 or n_train >= 1) and cfg["device"] == "cpu":
        raise WorkflowError("invalid config at device: cpu, but resources.gpu / resources.train_gpu ask for GPUs; "
                            "use device cuda (or auto)")
    ds = cfg["dataset"]
    held = ds.get("heldout_images", 0)
    if ds["source"] == "embedded" and (ds["num_images"] or 0) + (held or 0) > 100:
        raise WorkflowError(f"invalid config at dataset.num_images: {ds['num_images']} training + {held} held-out "
                            "images > 100, the embedded source has 100 faces")
    if ds["source"] in ("embedded", "folder") and held is None:
        raise WorkflowError("invalid config at dataset.heldout_images: null (all the rest) is for paper sources; "
                            "give a number of images")
    if ds["source"] == "embedded" and ds["resolution"] > 25:
        raise WorkflowError(f"invalid config at dataset.resolution: {ds['resolution']} > 25, "
                            "the embedded faces are 25x25 (a center crop)")
    net, sizes = cfg["network"], [ds["resolution"]]
    for _ in net["channel_mult"][1:]:  # the U-Net's feature-map sizes (as ambient.networks.UNetConfig.resolutions)
        sizes.append((sizes[-1] + 1) // 2)
    bad = [r for r in net["attn_resolutions"] if r not in sizes]
    if bad:
        raise WorkflowError(f"invalid config at network.attn_resolutions: {bad} are not among the network's "
                            f"feature-map sizes {sizes} (dataset.resolution {ds['resolution']}, channel_mult "
                            f"{net['channel_mult']}); attention there would never run")


def uses_conda():
    """Whether Snakemake deploys the rules' conda environments (`--sdm conda`)."""
    methods = getattr(getattr(workflow, "deployment_settings", None), "deployment_method", None) or ()
    return any(getattr(m, "name", str(m)).lower() == "conda" for m in methods)


def python_cmd():
    """The interpreter of the jobs, shell-quoted: config python; else, under `--sdm conda`, the
    `python` of the rule's activated environment (environment.yml); else the one running Snakemake.
    Jobs run in the workflow directory, so `python -m ambient` imports the checkout's package."""
    if config.get("python"):
        return shlex.quote(config["python"])
    return "python" if uses_conda() else shlex.quote(sys.executable)


# ---------------------------------------------------------------- run grid

def dataset_name():
    return config["dataset"]["name"]


def corruption_names():
    return [layout.run_name(c) for c in config["corruptions"]]


def corruption_spec(name):
    """The config entry of a run name."""
    for c in config["corruptions"]:
        if layout.run_name(c) == name:
            return c
    raise WorkflowError(f"corruption {name!r} is not in the config's corruptions ({', '.join(corruption_names())})")


def corruption_delta(wildcards):
    """dust's further corruption under the ambient loss (default 0.1); 0 for every other run."""
    return layout.run_delta(corruption_spec(wildcards.corruption))


def train_corruption_args(wildcards):
    """`ambient train` arguments of a run name: corruption, delta, and --loss edm for a naive baseline
    (dust-p0.50-naive, noise-s0.20-naive); gauss (the Gaussian baseline) is `--corruption gauss`
    alone, its loss auto = the closed-form fit."""
    name = wildcards.corruption
    args = f"--corruption {layout.base_name(name)} --delta {corruption_delta(wildcards)}"
    return args + " --loss edm" if layout.is_naive(corruption_spec(name)) else args


# training keys of the workflow alone, not settings of `ambient train`
WORKFLOW_TRAINING_KEYS = ("protect_models",)


def train_settings(wildcards):
    """`ambient train --settings`: the config's training and network sections whole (JSON), with the
    run's own steps and consistency weight (0 for every run but a Tweedie one)."""
    name = wildcards.corruption
    training = {k: v for k, v in config["training"].items() if k not in WORKFLOW_TRAINING_KEYS}
    training.update(steps=run_steps(wildcards), consistency_weight=consistency_weight(name))
    return json.dumps({"training": training, "network": config["network"]}, sort_keys=True)


def consistency_weight(name):
    """The consistency weight of a Tweedie run: its own, else training.consistency_weight (0 for other runs)."""
    c = corruption_spec(name)
    if c["kind"] != "noise" or layout.is_naive(c):
        return 0.0
    return c.get("consistency_weight", config["training"]["consistency_weight"])


def full_sampler_runs():
    """Tweedie runs trained with consistency: also sampled full-length, through sigma < sigma_n."""
    return [name for name in corruption_names() if consistency_weight(name) > 0]


def run_steps(wildcards):
    """Training steps of a run: its own `steps`, else training.steps."""
    return corruption_spec(wildcards.corruption).get("steps", config["training"]["steps"])


def is_fitted(wildcards):
    """The Gaussian baseline: fitted in closed form in a second or so, a tiny CPU job (no GPU, one thread)."""
    return corruption_spec(wildcards.corruption)["kind"] == "gauss"


def train_priority(wildcards):
    """Longest first (steps); the Gaussian fit last, it takes no time."""
    return 0 if is_fitted(wildcards) else run_steps(wildcards)


def train_job_threads(wildcards):
    return 1 if is_fitted(wildcards) else config["threads_per_job"]


def train_job_gpus(wildcards):
    return 0 if is_fitted(wildcards) else train_gpus()


def train_job_mem(wildcards):
    """resources.mem_mb.train; the Gaussian fit: prepare's, or its covariance and eigenvectors (d x d
    float64 each, d = channels x resolution^2) with room to spare when those need more."""
    if not is_fitted(wildcards):
        return mem("train")
    ds = config["dataset"]
    d = (1 if ds["source"] == "embedded" else ds.get("channels") or 3) * ds["resolution"] ** 2
    return max(mem("prepare"), 4 * d * d * 8 // 2**20 + 500)


def train_job_runtime(wildcards):
    return runtime("prepare") if is_fitted(wildcards) else runtime("train")


def base_corruption(wildcards):
    return layout.base_name(wildcards.corruption)


def model_output():
    """The trained model, write-protected when training.protect_models is set (paper configs)."""
    path = layout.run_file("model")
    return protected(path) if config["training"].get("protect_models") else path


def run_files(key, **extra):
    """A result file (ambient.layout.RUN_FILES key) of every configured model (and `extra` wildcards)."""
    return expand(layout.run_file(key), dataset=dataset_name(), corruption=corruption_names(), **extra)


def inception_weights():
    return config["evaluation"]["inception_weights"]


def fd_extractors():
    """FD/KD extractors: the configured ones, plus inception with `inception: always`. A function of
    the config alone: the job graph never depends on which files exist on this machine."""
    ev = config["evaluation"]
    out = list(ev["extractors"])
    if "inception" not in out and ev["inception"] == "always":
        out.append("inception")
    if ev["inception"] == "never" and "inception" in out:
        out.remove("inception")
    return out


def weights_input(wildcards):
    """The Inception weights as an input of inception jobs (made by fetch_weights when missing)."""
    if wildcards.extractor == "inception" and config["evaluation"]["inception"] == "always":
        return {"weights": inception_weights()}
    return {}


def extractor_fallback(wildcards):
    """inception: always means no fallback (fail without the weights)."""
    if wildcards.extractor == "inception" and config["evaluation"]["inception"] == "always":
        return "none"
    return config["evaluation"]["fallback"]


def attack_kinds():
    return list(layout.ATTACK_KINDS) if config["evaluation"]["attacks"]["enabled"] else []


def attack_options(wildcards):
    a = config["evaluation"]["attacks"]
    opts = f"--steps {a['steps']} --seed {a['seed']} --threshold {a['threshold']} --precision {a['precision']}"
    if a["num_images"] is not None:
        opts += f" --num-images {a['num_images']}"
    if wildcards.attack == "inpaint":
        opts += f" --erase {a['erase']} --fraction {a['fraction']} --resample {list_args(a['resample'])}"
    elif wildcards.attack == "noise":
        opts += f" --sigma {a['sigma']}"
    return opts


def sim_extractor():
    return config["evaluation"]["similarity_extractor"]


def mem(step):
    return config["resources"]["mem_mb"][step]


def gpus():
    return config["resources"]["gpu"]


def train_gpus():
    """GPUs per training job: resources.train_gpu, or resources.gpu when that is null."""
    n = config["resources"].get("train_gpu")
    return gpus() if n is None else n


def runtime(step):
    """Minutes per job of a kind (the `runtime` resource: SLURM --time)."""
    return config["resources"]["runtime"][step]


def train_launcher(wildcards, resources):
    """How `ambient train` is started: torchrun (DDP, one process per GPU) when the job has more
    than one GPU, else the plain interpreter."""
    if resources.gpu > 1:
        return f'"$AMBIENT_PYTHON" -m torch.distributed.run --standalone --nproc_per_node={resources.gpu}'
    return '"$AMBIENT_PYTHON"'


def train_device(wildcards, resources):
    """cuda for GPU training jobs, else the configured device (cpu, or auto on the CPU profile)."""
    return "cuda" if resources.gpu >= 1 else config["device"]


def train_threads(wildcards, threads, resources):
    """CPU threads per training process (the job's threads shared by its torchrun processes)."""
    return max(1, threads // max(1, resources.gpu))


def extractor_gpus(wildcards):
    """GPUs for feature extraction: only the network extractors (inception, dinov2*) use one."""
    return gpus() if wildcards.extractor == "inception" or wildcards.extractor.startswith("dinov2") else 0


def dataset_source_input(wildcards):
    """The image folder of a folder source (its listing changes when images are added or removed)."""
    ds = config["dataset"]
    return [ds["folder"]] if ds["source"] == "folder" else []


def is_paper_source():
    return config["dataset"]["source"] in PAPER_SOURCES


def download_options(wildcards):
    """`python -m ambient download-dataset` options of a paper source."""
    ds = config["dataset"]
    opts = (f"--source {ds['source']} --raw-dir {shlex.quote(ds['raw_dir'])} --resolution {ds['resolution']} "
            f"--seed {ds['seed']}")
    if ds["num_images"] is not None:
        opts += f" --num-images {ds['num_images']}"
    if ds.get("url"):
        opts += f" --url {shlex.quote(ds['url'])}"
    return opts


def has_heldout():
    return config["dataset"].get("heldout_images", 0) != 0


def quality_ref_name():
    """What FD/KD are scored against: the held-out split (heldout), else the training set (train)."""
    return "heldout" if has_heldout() else "train"


def quality_ref_images():
    return (layout.HELDOUT_ZIP if has_heldout() else layout.DATASET_ZIP).format(dataset=dataset_name())


def ruler_check_file():
    """The quality ruler's disturbance test of this config (evaluation.ruler, against the quality reference)."""
    return layout.RULER_CHECK.format(dataset=dataset_name(), extractor=config["evaluation"]["ruler"],
                                     ref=quality_ref_name())


def ref_stats_file():
    """Feature statistics of the quality reference, per dataset and extractor (wildcards)."""
    return layout.REF_STATS.replace("{ref}", quality_ref_name())


def heldout_options(wildcards, output):
    """ --heldout-out PATH --heldout-images N for the data rules (nothing without a held-out split)."""
    if not has_heldout():
        return ""
    n = config["dataset"]["heldout_images"]
    return (f" --heldout-out {shlex.quote(output.heldout)}" + (f" --heldout-images {n}" if n is not None else "")
            + (f" --split-seed {config['dataset']['split_seed']}" if not is_paper_source() else ""))


def prepare_options(wildcards):
    ds = config["dataset"]
    opts = f"--source {ds['source']} --resolution {ds['resolution']}"
    if ds["source"] == "folder":
        opts += f" --folder {shlex.quote(ds['folder'])} --channels {ds['channels']}"
    if ds["num_images"] is not None:
        opts += f" --num-images {ds['num_images']}"
    return opts


def list_args(values):
    return " ".join(str(v) for v in values)


def papermill_params(**params):
    """Notebook parameters as one shell-quoted YAML/JSON string for `papermill -y`."""
    return shlex.quote(json.dumps(params))


# ---------------------------------------------------------------- phases (workflow/rules/phases.smk)

def phase_targets(phase):
    """The files of one phase for this config (ambient.layout places them): the phase's target rule."""
    if phase == "datasets":
        return [quality_ref_images(), layout.DATASET_ZIP.format(dataset=dataset_name())]
    if phase == "models":
        return run_files("model")
    if phase == "samples":
        full = expand(layout.run_file("samples_full"), dataset=dataset_name(), corruption=full_sampler_runs())
        return run_files("samples") + full
    if phase == "evaluation":
        per_model = [run_files(k, extractor=sim_extractor()) for k in ("neighbors_json", "neighbors_csv", "neighbors_npz")]
        per_model += [run_files("fd_json", extractor=fd_extractors()), run_files("hf_json")]
        per_model += [run_files(k, attack=attack_kinds()) for k in ("attack_json", "attack_csv", "attack_npz")]
        return sorted({f for files in per_model for f in files} | {ruler_check_file()})
    if phase == "metrics":
        return [layout.SUMMARY_CSV, layout.SUMMARY_JSON, layout.CLAIMS_CSV]
    if phase == "figures":
        return figure_outputs()
    raise WorkflowError(f"unknown phase {phase!r}")



# ---------------------------------------------------------------- figures (the table: ambient.layout.FIGURES)

def figure_runs(fig):
    """The models as pixel figure `fig` takes them (layout.run_record) with the paths of its files; a
    noise-only figure gets the clean and noise models, with samples_full for the Tweedie models
    sampled full-length too."""
    runs = []
    for r in layout.run_list(config):
        if fig.noise_only and r["kind"] not in ("clean", "noise"):
            continue
        keys = list(fig.files)
        if fig.noise_only and "samples" in fig.files and r["name"] in full_sampler_runs():
            keys.append("samples_full")
        runs.append({**r, **{k: layout.run_file(k, dataset_name(), r["name"], extractor=sim_extractor()) for k in keys}})
    return runs


def figure_files(fig):
    """The result files a figure reads. Pixel: per file kind, every model (noise-only figures: per
    model); another branch: each of its files over the values of its wildcards (Branch.expand)."""
    if fig.of is not layout.PIXEL:
        return [path for key in fig.files for path in fig.of.expand(key, config)]
    runs = figure_runs(fig)
    if fig.noise_only:
        return [r[k] for r in runs for k in (*fig.files, "samples_full") if k in r]
    return [r[k] for k in fig.files for r in runs]


def figure_named_inputs(fig):
    """The notebook, its branch's figlib, and the dataset or summary.csv where the figure reads them."""
    named = {"notebook": fig.notebook_path, "lib": fig.of.figlib}
    if fig.dataset:
        named["dataset"] = layout.DATASET_ZIP.format(dataset=dataset_name())
    if fig.summary:
        named["summary"] = layout.SUMMARY_CSV
    return named


def figure_outputs():
    return layout.figure_outputs(config)


def figure_params(fig, input):
    """papermill -y string. The kernel runs in paper_figures/ (figlib imports from there): root is
    the workflow directory relative to it; every other path is relative to root."""
    params = {"root": "..", "out_dir": fig.of.fig_dir(config), "stem": fig.stem}
    if fig.dataset:
        params["dataset_zip"] = input.dataset
    if fig.summary:
        params["summary_csv"] = input.summary
    if fig.runs and fig.of is layout.PIXEL:
        params["runs"] = figure_runs(fig)
    return papermill_params(**params, **fig.of.figure_params(config), **fig.params(config))


def figure_report(fig):
    """The figure's PNG files, as `report()` outputs for `snakemake --report`: its caption file, else
    workflow/report/figure.rst (the rule's params.caption: figure_caption)."""
    caption = f"../report/{fig.caption or 'figure.rst'}"
    png = fig.outputs(config, "png")
    if fig.per_run:
        return [report(path, caption=caption, category=fig.label, labels={"model": name})
                for path, name in zip(png, corruption_names())]
    return report(png[0], caption=caption, category=fig.of.report_category, labels={"figure": fig.label})


def figure_caption(fig, notebook):
    """A figure's caption in the report without a file of its own: its label in bold, then what its
    notebook's first markdown cell says (markdown's `code` as reStructuredText's ``code``)."""
    text = re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", layout.notebook_description(notebook))
    return f"**{fig.label}.** {text}"


def figure_resources(fig):
    return fig.of.figure_resources(config)


def figure_log(fig):
    """<branch's log folder>/<stem>.log, less the stem's branch prefix (logs/sdxl/<name>/fig8_...log)."""
    return f"{fig.of.log_dir(config)}/{fig.stem.removeprefix(f'{fig.of.name}_')}.log"


def figure_benchmark(fig):
    """Its log's path under benchmarks/ instead of logs/, as .tsv (benchmarks/figures/fig3_....tsv)."""
    log = figure_log(fig).removeprefix("logs/").removesuffix(".log")
    return f"benchmarks/{log}.tsv"


# GPU jobs (train, sample, attack, neighbors, ref_stats, fid) start through
# `python -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- CMD`: on a machine shared by several jobs it
# locks free devices and sets CUDA_VISIBLE_DEVICES (Snakemake caps the count, not the devices); with
# gpu 0, under SLURM, or with CUDA_VISIBLE_DEVICES already set it just runs CMD.


# papermill in a throw-away IPYTHONDIR and Jupyter data dir (no state from ~/.ipython, and no
# user-level `python3` kernelspec pointing at another interpreter): -k python3 then resolves to the
# environment's ipykernel spec or jupyter_client's native one, both the interpreter that runs
# papermill (jupyter_client maps the kernelspec's `python` to sys.executable).
PAPERMILL = (
    'export IPYTHONDIR="$(mktemp -d)" MPLBACKEND=agg; export JUPYTER_DATA_DIR="$IPYTHONDIR/jupyter"; '
    "trap 'rm -rf \"$IPYTHONDIR\"' EXIT; "
    '"$AMBIENT_PYTHON" -m papermill {input.notebook} {output.notebook} -k python3 --no-progress-bar '
    "-y {params.parameters} > {log} 2>&1"
)
# The figure notebooks' kernel runs in paper_figures/, next to figlib.
FIGURE_PAPERMILL = PAPERMILL.replace("--no-progress-bar ", "--no-progress-bar --cwd paper_figures ")

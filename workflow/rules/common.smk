# Shared helpers: config validation (schema + cross-field checks), run names, paths.
# Every function of the workflow lives here (snakemake --lint: no functions beside rules).
import json
import shlex
import sys
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

MASKED_KINDS = ("dust", "box")
NAIVE_SUFFIX = "-naive"  # as ambient.runs: noise-s0.20-naive = the naive baseline (EDM loss on noisy data)
# Sources downloaded by the download_dataset rule (ambient.download); never part of the CPU/CI configs.
PAPER_SOURCES = ("celeba", "ffhq", "celeba_hq")


def _config_path(path):
    """corruptions[1].p from a jsonschema path deque."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate_config(cfg, schema):
    """Validate against the schema (filling defaults); stop with a message that names the key."""
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
                                    f"the run name ({corruption_name(c)}) carries {key} with 2 decimals")
        name = corruption_name(c)
        if name in names:
            raise WorkflowError(f"invalid config at corruptions[{i}]: run name {name!r} repeats corruptions[{names[name]}] "
                                "(delta is not part of the name: one delta per kind and level)")
        names[name] = i
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


def corruption_name(c):
    """The run name, as ambient.runs.run_name (tests check they agree): the corruption's name
    (ambient.corruption.Corruption.name), plus -naive for a noise entry with loss edm."""
    if c["kind"] == "clean":
        return "clean"
    if c["kind"] == "noise":
        return f"noise-s{c['sigma_n']:.2f}" + (NAIVE_SUFFIX if c.get("loss", "auto") == "edm" else "")
    return f"{c['kind']}-p{c['p']:.2f}"


def base_corruption_name(name):
    """The corruption of a run name (noise-s0.20-naive -> noise-s0.20): `ambient train --corruption`."""
    return name[: -len(NAIVE_SUFFIX)] if name.endswith(NAIVE_SUFFIX) else name


def is_naive(name):
    return name.endswith(NAIVE_SUFFIX)


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
    return [corruption_name(c) for c in config["corruptions"]]


def corruption_spec(name):
    for c in config["corruptions"]:
        if corruption_name(c) == name:
            return c
    raise WorkflowError(f"corruption {name!r} is not in the config's corruptions ({', '.join(corruption_names())})")


def corruption_delta(wildcards):
    c = corruption_spec(wildcards.corruption)
    return c.get("delta", 0.1) if c["kind"] == "dust" else 0.0


def corruption_label(name):
    """As paper_figures/figlib.run_label."""
    c = corruption_spec(name)
    if c["kind"] == "clean":
        return "clean"
    if c["kind"] == "noise":
        return f"noisy sigma_n={c['sigma_n']:.2f}, " + ("naive (EDM loss)" if is_naive(name) else "Tweedie (ours)")
    return f"ambient {c['kind']}, p={c['p']:.2f}"


def run_list():
    """Per model: name, kind, level, delta, label, loss, naive, series (passed to the notebooks)."""
    out = []
    for c in config["corruptions"]:
        name = corruption_name(c)
        level = {"clean": 0.0, "noise": c.get("sigma_n", 0.0)}.get(c["kind"], c.get("p", 0.0))
        naive = is_naive(name)
        out.append({"name": name, "kind": c["kind"], "level": level,
                    "delta": c.get("delta", 0.1) if c["kind"] == "dust" else 0.0,
                    "p": c.get("p", 0.0), "sigma_n": c.get("sigma_n", 0.0), "label": corruption_label(name),
                    "loss": c.get("loss", "auto"), "naive": naive,
                    "series": f"{c['kind']} (naive)" if naive else c["kind"]})
    return out


def noise_runs():
    return [r["name"] for r in run_list() if r["kind"] == "noise"]


def train_corruption_args(wildcards):
    """`ambient train` arguments of a run name: corruption, delta, and the loss of noise runs
    (--loss edm for the naive baseline, --consistency-weight for the Tweedie model)."""
    name = wildcards.corruption
    c = corruption_spec(name)
    args = f"--corruption {base_corruption_name(name)} --delta {corruption_delta(wildcards)}"
    if is_naive(name):
        args += " --loss edm"
    elif c["kind"] == "noise":
        args += f" --consistency-weight {consistency_weight(name)}"
    return args


def consistency_weight(name):
    """The consistency weight of a Tweedie run: its own, else training.consistency_weight (0 for other runs)."""
    c = corruption_spec(name)
    if c["kind"] != "noise" or is_naive(name):
        return 0.0
    return c.get("consistency_weight", config["training"]["consistency_weight"])


def full_sampler_runs():
    """Tweedie runs trained with consistency: also sampled full-length, through sigma < sigma_n."""
    return [r["name"] for r in run_list() if consistency_weight(r["name"]) > 0]


def run_steps(wildcards):
    """Training steps of a run: its own `steps`, else training.steps."""
    return corruption_spec(wildcards.corruption).get("steps", config["training"]["steps"])


def base_corruption(wildcards):
    return base_corruption_name(wildcards.corruption)


def model_output():
    """The trained model, write-protected when training.protect_models is set (paper configs)."""
    path = "results/{dataset}/{corruption}/model.pt"
    return protected(path) if config["training"].get("protect_models") else path


def run_files(pattern, **extra):
    """`pattern` expanded over the configured corruptions (and `extra` wildcards)."""
    return expand(pattern, dataset=dataset_name(), corruption=corruption_names(), **extra)


def masked_runs():
    return [c["name"] for c in run_list() if c["kind"] in MASKED_KINDS]


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
    return ["inpaint", "noise", "key"] if config["evaluation"]["attacks"]["enabled"] else []


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
    """`python -m ambient.cli_data download-dataset` options of a paper source."""
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
    return f"data/{dataset_name()}-heldout.zip" if has_heldout() else f"data/{dataset_name()}.zip"


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


# ---------------------------------------------------------------- figures

FIGURES_DIR = "results/figures"


def run_file(kind, dataset, corruption):
    """Per-model result files (figlib.run_files in paper_figures/ follows the same layout)."""
    base = f"results/{dataset}/{corruption}"
    x = sim_extractor()
    return {
        "model": f"{base}/model.pt",
        "samples": f"{base}/samples.zip",
        "neighbors_json": f"{base}/neighbors_{x}.json",
        "neighbors_csv": f"{base}/neighbors_{x}.csv",
        "attack_inpaint_json": f"{base}/attack_inpaint.json",
        "attack_inpaint_npz": f"{base}/attack_inpaint_gallery.npz",
        "attack_noise_json": f"{base}/attack_noise.json",
        "attack_noise_npz": f"{base}/attack_noise_gallery.npz",
        "hf_json": f"{base}/hf_energy.json",
    }[kind]


def figure_runs(*keys):
    """The models as the notebooks take them: name, kind, level, delta, label and the files `keys`."""
    runs = []
    for r in run_list():
        runs.append({**r, **{k: run_file(k, dataset_name(), r["name"]) for k in keys}})
    return runs


def figure_inputs(*keys):
    return [run_file(k, dataset_name(), name) for k in keys for name in corruption_names()]


def noise_figure_runs(*keys):
    """The clean model (if any) and the noise models, for the noisy-data figures (fig5, fig6); with
    "samples" among keys, runs trained with consistency also carry their full-length samples."""
    runs = [r for r in figure_runs(*keys) if r["kind"] in ("clean", "noise")]
    if "samples" in keys:
        for r in runs:
            if r["name"] in full_sampler_runs():
                r["samples_full"] = f"results/{dataset_name()}/{r['name']}/samples_full.zip"
    return runs


def noise_figure_inputs(*keys):
    return [r[k] for r in noise_figure_runs(*keys) for k in (*keys, "samples_full") if k in r]


def noise_notebooks():
    """Figures of training on noisy data: only when the config has noise runs."""
    return ["fig5_noise_generations", "fig6_noise_histograms"] if noise_runs() else []


def figure_stems():
    """Every figure the workflow renders (stem of results/figures/<stem>.png|pdf)."""
    stems = ["fig2_training_data", "fig3_nearest_neighbors", "fig8_similarity_histograms", "tradeoff"]
    if attack_kinds():
        stems += ["fig1_inpainting_attack", "fig4_noise_attack"]
    stems += noise_notebooks()
    stems += [f"samples_{name}" for name in corruption_names()]
    return stems


def figure_outputs():
    notebooks = (["fig2_training_data", "fig3_nearest_neighbors", "fig8_similarity_histograms", "tradeoff",
                  "samples"] + (["fig1_inpainting_attack", "fig4_noise_attack"] if attack_kinds() else [])
                 + noise_notebooks())
    return ([f"{FIGURES_DIR}/{s}.{ext}" for s in figure_stems() for ext in ("png", "pdf")]
            + [f"{FIGURES_DIR}/notebooks/{nb}.ipynb" for nb in notebooks])


def figure_params(stem, **params):
    """papermill -y string: root '.', the output folder and stem, plus `params`."""
    return papermill_params(root=".", out_dir=FIGURES_DIR, stem=stem, **params)


# GPU jobs (train, sample, attack, neighbors, ref_stats, fid) start through
# `python -m ambient.gpu_slots --gpus {resources.gpu} -- CMD`: on a machine shared by several jobs it
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

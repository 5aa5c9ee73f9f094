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
    ds = cfg["dataset"]
    if ds["source"] == "embedded" and (ds["num_images"] or 100) > 100:
        raise WorkflowError(f"invalid config at dataset.num_images: {ds['num_images']} > 100, "
                            "the embedded source has 100 faces")
    if ds["source"] == "embedded" and ds["resolution"] > 25:
        raise WorkflowError(f"invalid config at dataset.resolution: {ds['resolution']} > 25, "
                            "the embedded faces are 25x25 (a center crop)")


def corruption_name(c):
    """The run name, as ambient.corruption.Corruption.name (tests check they agree)."""
    if c["kind"] == "clean":
        return "clean"
    if c["kind"] == "noise":
        return f"noise-s{c['sigma_n']:.2f}"
    return f"{c['kind']}-p{c['p']:.2f}"


def python_cmd():
    """The interpreter of the jobs, shell-quoted: config python, else the one running Snakemake."""
    return shlex.quote(config.get("python") or sys.executable)


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
    return c.get("delta", 0.1) if c["kind"] in MASKED_KINDS else 0.0


def corruption_label(name):
    c = corruption_spec(name)
    if c["kind"] == "clean":
        return "clean"
    if c["kind"] == "noise":
        return f"noisy, sigma_n={c['sigma_n']:.2f}"
    return f"ambient {c['kind']}, p={c['p']:.2f}"


def run_list():
    """Per model: name, kind, level, delta, label (passed to the notebooks)."""
    out = []
    for c in config["corruptions"]:
        name = corruption_name(c)
        level = {"clean": 0.0, "noise": c.get("sigma_n", 0.0)}.get(c["kind"], c.get("p", 0.0))
        out.append({"name": name, "kind": c["kind"], "level": level,
                    "delta": c.get("delta", 0.1) if c["kind"] in MASKED_KINDS else 0.0,
                    "p": c.get("p", 0.0), "sigma_n": c.get("sigma_n", 0.0), "label": corruption_label(name)})
    return out


def run_files(pattern, **extra):
    """`pattern` expanded over the configured corruptions (and `extra` wildcards)."""
    return expand(pattern, dataset=dataset_name(), corruption=corruption_names(), **extra)


def masked_runs():
    return [c["name"] for c in run_list() if c["kind"] in MASKED_KINDS]


def inception_weights():
    return config["evaluation"]["inception_weights"]


def fd_extractors():
    """FD/KD extractors: the configured ones, plus inception when its weights are present (inception: auto)."""
    ev = config["evaluation"]
    out = list(ev["extractors"])
    if "inception" not in out and (ev["inception"] == "always"
                                   or (ev["inception"] == "auto" and Path(inception_weights()).is_file())):
        out.append("inception")
    if ev["inception"] == "never" and "inception" in out:
        out.remove("inception")
    return out


def weights_input(wildcards):
    """The Inception weights as an input of inception jobs, so fetching them reruns what used the fallback."""
    if wildcards.extractor == "inception" and (config["evaluation"]["inception"] == "always"
                                               or Path(inception_weights()).is_file()):
        return {"weights": inception_weights()}
    return {}


def extractor_fallback(wildcards):
    """inception: always means no fallback (fail without the weights)."""
    if wildcards.extractor == "inception" and config["evaluation"]["inception"] == "always":
        return "none"
    return config["evaluation"]["fallback"]


def attack_kinds():
    return ["inpaint", "noise"] if config["evaluation"]["attacks"]["enabled"] else []


def attack_options(wildcards):
    a = config["evaluation"]["attacks"]
    opts = f"--steps {a['steps']} --seed {a['seed']} --threshold {a['threshold']}"
    if a["num_images"] is not None:
        opts += f" --num-images {a['num_images']}"
    if wildcards.attack == "inpaint":
        opts += f" --erase {a['erase']} --fraction {a['fraction']}"
    else:
        opts += f" --sigma {a['sigma']}"
    return opts


def sim_extractor():
    return config["evaluation"]["similarity_extractor"]


def mem(step):
    return config["resources"]["mem_mb"][step]


def gpus():
    return config["resources"]["gpu"]


def extractor_gpus(wildcards):
    """GPUs for feature extraction: only the network extractors (inception, dinov2*) use one."""
    return gpus() if wildcards.extractor == "inception" or wildcards.extractor.startswith("dinov2") else 0


def dataset_source_input(wildcards):
    """The image folder of a folder source (its listing changes when images are added or removed)."""
    ds = config["dataset"]
    return [ds["folder"]] if ds["source"] == "folder" else []


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
    }[kind]


def figure_runs(*keys):
    """The models as the notebooks take them: name, kind, level, delta, label and the files `keys`."""
    runs = []
    for r in run_list():
        runs.append({**r, **{k: run_file(k, dataset_name(), r["name"]) for k in keys}})
    return runs


def figure_inputs(*keys):
    return [run_file(k, dataset_name(), name) for k in keys for name in corruption_names()]


def figure_stems():
    """Every figure the workflow renders (stem of results/figures/<stem>.png|pdf)."""
    stems = ["fig2_training_data", "fig3_nearest_neighbors", "fig8_similarity_histograms", "tradeoff"]
    if attack_kinds():
        stems += ["fig1_inpainting_attack", "fig4_noise_attack"]
    stems += [f"samples_{name}" for name in corruption_names()]
    return stems


def figure_outputs():
    notebooks = ["fig2_training_data", "fig3_nearest_neighbors", "fig8_similarity_histograms", "tradeoff",
                 "samples"] + (["fig1_inpainting_attack", "fig4_noise_attack"] if attack_kinds() else [])
    return ([f"{FIGURES_DIR}/{s}.{ext}" for s in figure_stems() for ext in ("png", "pdf")]
            + [f"{FIGURES_DIR}/notebooks/{nb}.ipynb" for nb in notebooks])


def figure_params(stem, **params):
    """papermill -y string: root '.', the output folder and stem, plus `params`."""
    return papermill_params(root=".", out_dir=FIGURES_DIR, stem=stem, **params)


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

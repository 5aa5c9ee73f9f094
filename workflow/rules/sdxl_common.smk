# Helpers of the SDXL branch (workflow/rules/sdxl.smk): config access, options, targets. Its paths
# and figures are ambient.layout.SDXL's (a branch of ambient.layout.BRANCHES).
# Functions only (snakemake --lint: no functions beside rules). Absent `sdxl:` config = branch off.


def sdxl_enabled():
    return layout.SDXL.defined(config)


def sdxl_cfg():
    return config["sdxl"]


def sdxl_file(key, **fields):
    """A result file of the SDXL branch (ambient.layout.SDXL_FILES key): results/sdxl/<sdxl.name>/...;
    the wildcards not given in `fields` stay wildcards."""
    return layout.SDXL.path(key, config, **fields)


def sdxl_log(name):
    """logs/sdxl/<sdxl.name>/<name>.log (ambient.layout.SDXL's log folder; `name` may hold wildcards)."""
    return f"{layout.SDXL.log_dir(config)}/{name}.log"


def sdxl_benchmark(name):
    return f"benchmarks/sdxl/{sdxl_cfg()['name']}/{name}.tsv"


def sdxl_check_config():
    s = sdxl_cfg()
    m = s["model"]
    if not m["tiny"] and not (m.get("id") or m.get("path")):
        raise WorkflowError("invalid config at sdxl.model: give id (a Hugging Face model id in the local cache), "
                            "path (a local diffusers folder), or tiny: true")
    if s["data"]["source"] == "folder" and not s["data"]["folder"]:
        raise WorkflowError("invalid config at sdxl.data.folder: null, but sdxl.data.source is folder")
    a = s["attack"]
    if a["enabled"] and a["source"] == "folder" and not a["folder"]:
        raise WorkflowError("invalid config at sdxl.attack.folder: null, but sdxl.attack.source is folder "
                            "(the folder of images to attack, e.g. LAION images)")
    if a["t_attack"] >= 1000:
        raise WorkflowError(f"invalid config at sdxl.attack.t_attack: {a['t_attack']} must lie in [0, 1000)")
    if s["model"]["tiny"] and s["resolution"] != 2 * s["model"]["tiny_sample_size"]:
        raise WorkflowError(f"invalid config at sdxl.resolution: {s['resolution']}; the tiny VAE halves the size, "
                            f"so it must be 2 * sdxl.model.tiny_sample_size = {2 * s['model']['tiny_sample_size']}")


def sdxl_python_opts(gpu=True):
    """--device/--threads/--precision of the model jobs."""
    s = sdxl_cfg()
    dev = "cuda" if gpu and s["resources"]["gpu"] >= 1 else s["device"]
    return f"--device {dev} --threads {s['threads']} --precision {s['precision']}"


def sdxl_gpus():
    return sdxl_cfg()["resources"]["gpu"]


def sdxl_runtime(kind):
    return sdxl_cfg()["resources"]["runtime"][kind]


def sdxl_mem():
    return sdxl_cfg()["resources"]["mem_mb"]


def sdxl_prepare_opts(part):
    """sdxl-prepare options of the training data (part 'data') or the attacked images (part 'attack')."""
    s = sdxl_cfg()
    d = s[part]
    opts = f"--source {d['source']} --resolution {s['resolution']}"
    if d["source"] == "folder":
        opts += f" --folder {shlex.quote(d['folder'])}"
    if d["num_images"] is not None:
        opts += f" --num-images {d['num_images']}"
    return opts


def sdxl_train_opts(wildcards):
    s, t = sdxl_cfg(), sdxl_cfg()["training"]
    return (f"--t-n {wildcards.tn} --steps {t['steps']} --batch-size {t['batch_size']} --lr {t['lr']} "
            f"--weight-decay {t['weight_decay']} --rank {t['rank']} --grad-clip {t['grad_clip']} --seed {t['seed']} "
            f"--noise-seed {t['noise_seed']} --checkpoint-every {t['checkpoint_every']} --log-every {t['log_every']} "
            f"--consistency-weight {t['consistency_weight']} --consistency-start {t['consistency_start']} "
            f"--max-steps-diff {t['max_steps_diff']} "
            f"--prompt {shlex.quote(s['prompt'])}")


def sdxl_generate_opts(wildcards):
    g = sdxl_cfg()["generation"]
    return (f"--sampler {wildcards.sampler} --num {g['num']} --steps {g['steps']} --seed {g['seed']} "
            f"--batch-size {g['batch_size']} --guidance-scale {g['guidance_scale']} --resolution {sdxl_cfg()['resolution']}")


def sdxl_attack_opts(kind):
    a = sdxl_cfg()["attack"]
    opts = (f"--steps {a['steps']} --seed {a['seed']} --guidance-scale {a['guidance_scale']} "
            f"--prompt {shlex.quote(a['prompt'])}")
    if kind == "noise":
        opts += f" --t-attack {a['t_attack']}"
    else:
        opts += f" --fraction {a['mask_fraction']}"
    return opts


def sdxl_score_opts():
    sc = sdxl_cfg()["scoring"]
    return f"--extractor {sc['extractor']} --fallback {sc['fallback']} --bins {sc['bins']}"


def sdxl_outputs():
    """The SDXL branch's final files: its figures (none without `sdxl:`)."""
    return layout.SDXL.figure_outputs(config) if layout.SDXL.enabled(config) else []


def pixel_targets():
    """The pixel branch's final files (none with `pixel: false`)."""
    if not config["pixel"]:
        return []
    return [layout.SUMMARY_CSV, layout.CLAIMS_CSV, *figure_outputs()]

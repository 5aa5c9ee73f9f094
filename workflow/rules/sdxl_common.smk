# Helpers of the SDXL branch (workflow/rules/sdxl.smk): config access, paths, targets.
# Functions only (snakemake --lint: no functions beside rules). Absent `sdxl:` config = branch off.

SDXL_ATTACK_SCORES = ("noise_one_step", "noise_full", "inpaint_inpainted")


def sdxl_enabled():
    return bool(config.get("sdxl"))


def sdxl_cfg():
    return config["sdxl"]


def sdxl_dir():
    return f"results/sdxl/{sdxl_cfg()['name']}"


def sdxl_fig_dir():
    return f"{FIGURES_DIR}/sdxl/{sdxl_cfg()['name']}"


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


def sdxl_tns():
    return [str(t) for t in sdxl_cfg()["noise_levels"]]


def sdxl_samplers():
    return sdxl_cfg()["generation"]["samplers"]


def sdxl_generation_scores():
    return expand(f"{sdxl_dir()}/tn{{tn}}/similarity_{{sampler}}.json", tn=sdxl_tns(), sampler=sdxl_samplers())


def sdxl_attack_scores():
    if not sdxl_cfg()["attack"]["enabled"]:
        return []
    return [f"{sdxl_dir()}/attack/similarity_{k}.json" for k in SDXL_ATTACK_SCORES]


def sdxl_figure_stems():
    stems = ["sdxl_fig5_7_generations", "sdxl_fig8_similarity_histograms"]
    if sdxl_cfg()["attack"]["enabled"]:
        stems = ["sdxl_fig1_4_attacks"] + stems
    return stems


def sdxl_outputs():
    if not sdxl_enabled():
        return []
    return [f"{sdxl_fig_dir()}/{s}.{ext}" for s in sdxl_figure_stems() for ext in ("png", "pdf")] + \
        [f"{sdxl_fig_dir()}/notebooks/{s}.ipynb" for s in sdxl_figure_stems()]


def sdxl_model_note():
    """What the figures print on their face about the models."""
    m = sdxl_cfg()["model"]
    if m["tiny"]:
        return "RANDOM-WEIGHT TINY MODELS (ambient.latent.tiny): a pipeline check, the images mean nothing"
    return f"base model {m.get('id') or m.get('path')}"


def sdxl_figure_params(stem, **params):
    s = sdxl_cfg()
    return papermill_params(root="..", out_dir=sdxl_fig_dir(), stem=stem, model_note=sdxl_model_note(),
                            tiny=s["model"]["tiny"], **params)


def pixel_targets():
    """The pixel branch's final files (none with `pixel: false`)."""
    if not config["pixel"]:
        return []
    return [layout.SUMMARY_CSV, layout.CLAIMS_CSV, *figure_outputs()]

# The SDXL branch (issue 13): ambient/latent/, `python -m ambient sdxl-*`. Off unless the config has `sdxl:`.
# base model (tiny build or local lookup) -> LoRA per noise level t_n -> samples (early / full) ->
# nearest-training-image similarity; base model -> noise + inpainting attacks on an image folder ->
# pairwise similarity; -> papermill figures (results/figures/sdxl/<name>/): the entries of branch sdxl
# in the figure table ambient.layout.FIGURES, rendered by workflow/rules/figures.smk. Paths: ambient.layout.SDXL.
# Training checkpoints live in the run's train/ folder (not outputs): a killed job resumes from them.

if sdxl_enabled():
    sdxl_check_config()

    if sdxl_cfg()["model"]["tiny"]:

        rule sdxl_tiny_models:
            output:
                ref=sdxl_file("model"),
                folder=directory(sdxl_file("tiny_model")),
            log:
                sdxl_log("tiny_models"),
            benchmark:
                sdxl_benchmark("tiny_models")
            params:
                seed=sdxl_cfg()["model"]["tiny_seed"],
                size=sdxl_cfg()["model"]["tiny_sample_size"],
            threads: 1
            resources:
                mem_mb=sdxl_mem(),
                runtime=sdxl_runtime("models"),
            conda:
                "../envs/sdxl.yml"
            shell:
                '"$AMBIENT_PYTHON" -m ambient sdxl-tiny-models --out-dir {output.folder} --ref {output.ref} '
                "--seed {params.seed} --sample-size {params.size} > {log} 2>&1"

    else:

        rule sdxl_locate_model:
            # resolves the model in model.path or the local Hugging Face cache; never downloads
            output:
                ref=sdxl_file("model"),
            log:
                sdxl_log("locate_model"),
            benchmark:
                sdxl_benchmark("locate_model")
            params:
                opts=lambda w: " ".join(
                    f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
                    for k, v in (("model_id", sdxl_cfg()["model"]["id"]), ("model_path", sdxl_cfg()["model"]["path"]))
                    if v
                ),
            threads: 1
            resources:
                mem_mb=1000,
                runtime=sdxl_runtime("models"),
            conda:
                "../envs/sdxl.yml"
            shell:
                '"$AMBIENT_PYTHON" -m ambient sdxl-locate {params.opts} --ref {output.ref} > {log} 2>&1'

    rule sdxl_prepare:
        output:
            sdxl_file("images"),
        log:
            sdxl_log("prepare_{part}"),
        benchmark:
            sdxl_benchmark("prepare_{part}")
        wildcard_constraints:
            part="data|attack",
        params:
            opts=lambda w: sdxl_prepare_opts(w.part),
        localrule: True  # cheap: stays on the submitting host on cluster profiles
        threads: 1
        resources:
            mem_mb=sdxl_mem(),
            runtime=sdxl_runtime("models"),
        conda:
            "../envs/sdxl.yml"
        shell:
            '"$AMBIENT_PYTHON" -m ambient sdxl-prepare {params.opts} --out {output} > {log} 2>&1'

    rule sdxl_train:
        input:
            model=sdxl_file("model"),
            data=sdxl_file("train_images"),
        output:
            sdxl_file("lora"),
        log:
            sdxl_log("tn{tn}/train"),
        benchmark:
            sdxl_benchmark("tn{tn}/train")
        wildcard_constraints:
            tn=r"[0-9]+",
        params:
            opts=sdxl_train_opts,
            run=lambda w, output: str(Path(output[0]).parent / "train"),
            device=sdxl_python_opts(),
        threads: sdxl_cfg()["threads"]
        retries: 2
        resources:
            mem_mb=sdxl_mem(),
            runtime=sdxl_runtime("train"),
            gpu=sdxl_gpus(),
        conda:
            "../envs/sdxl.yml"
        shell:
            '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- "$AMBIENT_PYTHON" -m ambient sdxl-train '
            "--model {input.model} --dataset {input.data} {params.opts} {params.device} --run-dir {params.run} "
            "--out {output} --quiet > {log} 2>&1"

    rule sdxl_generate:
        input:
            model=sdxl_file("model"),
            adapter=sdxl_file("lora"),
        output:
            sdxl_file("samples"),
        log:
            sdxl_log("tn{tn}/generate_{sampler}"),
        benchmark:
            sdxl_benchmark("tn{tn}/generate_{sampler}")
        wildcard_constraints:
            tn=r"[0-9]+",
            sampler="early|full",
        params:
            opts=sdxl_generate_opts,
            device=sdxl_python_opts(),
        threads: sdxl_cfg()["threads"]
        resources:
            mem_mb=sdxl_mem(),
            runtime=sdxl_runtime("generate"),
            gpu=sdxl_gpus(),
        conda:
            "../envs/sdxl.yml"
        shell:
            '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- "$AMBIENT_PYTHON" -m ambient sdxl-generate '
            "--model {input.model} --adapter {input.adapter} {params.opts} {params.device} --out {output} > {log} 2>&1"

    rule sdxl_score_generations:
        # Fig. 8: each sample against its most similar training image
        input:
            samples=sdxl_file("samples"),
            reference=sdxl_file("train_images"),
        output:
            json=sdxl_file("similarity_json"),
            csv=sdxl_file("similarity_csv"),
        log:
            sdxl_log("tn{tn}/score_{sampler}"),
        benchmark:
            sdxl_benchmark("tn{tn}/score_{sampler}")
        wildcard_constraints:
            tn=r"[0-9]+",
            sampler="early|full",
        params:
            opts=sdxl_score_opts(),
            device=f"--device {sdxl_cfg()['device']} --threads {sdxl_cfg()['threads']}",
        localrule: True  # cheap: stays on the submitting host on cluster profiles
        threads: sdxl_cfg()["threads"]
        resources:
            mem_mb=sdxl_mem(),
            runtime=sdxl_runtime("score"),
        conda:
            "../envs/sdxl.yml"
        shell:
            '"$AMBIENT_PYTHON" -m ambient sdxl-score --images {input.samples} --reference {input.reference} '
            "--mode nearest --label 'tn{wildcards.tn} {wildcards.sampler}' {params.opts} {params.device} "
            "--out-json {output.json} --out-csv {output.csv} > {log} 2>&1"

    rule sdxl_attack_noise:
        # the noise attack; the inpainting attack below is this rule with its own command and outputs
        input:
            model=sdxl_file("model"),
            images=sdxl_file("attack_images"),
        output:
            **{part: sdxl_file("attack_zip", output=f"noise_{part}") for part in layout.SDXL_ATTACK_PARTS["noise"]},
        log:
            sdxl_log("attack_noise"),
        benchmark:
            sdxl_benchmark("attack_noise")
        params:
            attack="noise",
            opts=sdxl_attack_opts("noise"),
            device=sdxl_python_opts(),
            out=lambda w, output: str(Path(output[0]).parent),
        threads: sdxl_cfg()["threads"]
        resources:
            mem_mb=sdxl_mem(),
            runtime=sdxl_runtime("attack"),
            gpu=sdxl_gpus(),
        conda:
            "../envs/sdxl.yml"
        shell:
            '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- "$AMBIENT_PYTHON" -m ambient '
            "sdxl-attack-{params.attack} --model {input.model} --images {input.images} {params.opts} {params.device} "
            "--out-dir {params.out} > {log} 2>&1"

    use rule sdxl_attack_noise as sdxl_attack_inpaint with:
        output:
            **{part: sdxl_file("attack_zip", output=f"inpaint_{part}") for part in layout.SDXL_ATTACK_PARTS["inpaint"]},
        log:
            sdxl_log("attack_inpaint"),
        benchmark:
            sdxl_benchmark("attack_inpaint")
        params:
            attack="inpaint",
            opts=sdxl_attack_opts("inpaint"),

    rule sdxl_score_attack:
        # Figs. 1 and 4: each attack output against the image attacked
        input:
            images=sdxl_file("attack_zip", output="{kind}"),
            reference=sdxl_file("attack_images"),
        output:
            json=sdxl_file("attack_json"),
            csv=sdxl_file("attack_csv"),
        log:
            sdxl_log("score_{kind}"),
        benchmark:
            sdxl_benchmark("score_{kind}")
        wildcard_constraints:
            kind="|".join(layout.SDXL_ATTACK_SCORES),
        params:
            opts=sdxl_score_opts(),
            device=f"--device {sdxl_cfg()['device']} --threads {sdxl_cfg()['threads']}",
        localrule: True  # cheap: stays on the submitting host on cluster profiles
        threads: sdxl_cfg()["threads"]
        resources:
            mem_mb=sdxl_mem(),
            runtime=sdxl_runtime("score"),
        conda:
            "../envs/sdxl.yml"
        shell:
            '"$AMBIENT_PYTHON" -m ambient sdxl-score --images {input.images} --reference {input.reference} '
            "--mode pairs --label {wildcards.kind} {params.opts} {params.device} "
            "--out-json {output.json} --out-csv {output.csv} > {log} 2>&1"

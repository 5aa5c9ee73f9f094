# The SDXL branch (issue 13): ambient/latent/, `python -m ambient sdxl-*`. Off unless the config has `sdxl:`.
# base model (tiny build or local lookup) -> LoRA per noise level t_n -> samples (early / full) ->
# nearest-training-image similarity; base model -> noise + inpainting attacks on an image folder ->
# pairwise similarity; -> papermill figures (results/figures/sdxl/<name>/).
# Training checkpoints live in the run's train/ folder (not outputs): a killed job resumes from them.

if sdxl_enabled():
    sdxl_check_config()
    SDXL = sdxl_dir()
    SDXL_FIG = sdxl_fig_dir()

    if sdxl_cfg()["model"]["tiny"]:

        rule sdxl_tiny_models:
            output:
                ref=f"{SDXL}/model.json",
                folder=directory(f"{SDXL}/tiny_model"),
            log:
                f"logs/sdxl/{sdxl_cfg()['name']}/tiny_models.log",
            benchmark:
                f"benchmarks/sdxl/{sdxl_cfg()['name']}/tiny_models.tsv"
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
                ref=f"{SDXL}/model.json",
            log:
                f"logs/sdxl/{sdxl_cfg()['name']}/locate_model.log",
            benchmark:
                f"benchmarks/sdxl/{sdxl_cfg()['name']}/locate_model.tsv"
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
            f"{SDXL}/data/{{part}}.zip",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/prepare_{{part}}.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/prepare_{{part}}.tsv"
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
            model=f"{SDXL}/model.json",
            data=f"{SDXL}/data/data.zip",
        output:
            f"{SDXL}/tn{{tn}}/lora.pt",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/tn{{tn}}/train.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/tn{{tn}}/train.tsv"
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
            model=f"{SDXL}/model.json",
            adapter=f"{SDXL}/tn{{tn}}/lora.pt",
        output:
            f"{SDXL}/tn{{tn}}/samples_{{sampler}}.zip",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/tn{{tn}}/generate_{{sampler}}.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/tn{{tn}}/generate_{{sampler}}.tsv"
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
            samples=f"{SDXL}/tn{{tn}}/samples_{{sampler}}.zip",
            reference=f"{SDXL}/data/data.zip",
        output:
            json=f"{SDXL}/tn{{tn}}/similarity_{{sampler}}.json",
            csv=f"{SDXL}/tn{{tn}}/similarity_{{sampler}}.csv",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/tn{{tn}}/score_{{sampler}}.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/tn{{tn}}/score_{{sampler}}.tsv"
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
        input:
            model=f"{SDXL}/model.json",
            images=f"{SDXL}/data/attack.zip",
        output:
            noised=f"{SDXL}/attack/noise_noised.zip",
            one_step=f"{SDXL}/attack/noise_one_step.zip",
            full=f"{SDXL}/attack/noise_full.zip",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/attack_noise.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/attack_noise.tsv"
        params:
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
            "sdxl-attack-noise --model {input.model} --images {input.images} {params.opts} {params.device} "
            "--out-dir {params.out} > {log} 2>&1"

    rule sdxl_attack_inpaint:
        input:
            model=f"{SDXL}/model.json",
            images=f"{SDXL}/data/attack.zip",
        output:
            masked=f"{SDXL}/attack/inpaint_masked.zip",
            inpainted=f"{SDXL}/attack/inpaint_inpainted.zip",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/attack_inpaint.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/attack_inpaint.tsv"
        params:
            opts=sdxl_attack_opts("inpaint"),
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
            "sdxl-attack-inpaint --model {input.model} --images {input.images} {params.opts} {params.device} "
            "--out-dir {params.out} > {log} 2>&1"

    rule sdxl_score_attack:
        # Figs. 1 and 4: each attack output against the image attacked
        input:
            images=f"{SDXL}/attack/{{kind}}.zip",
            reference=f"{SDXL}/data/attack.zip",
        output:
            json=f"{SDXL}/attack/similarity_{{kind}}.json",
            csv=f"{SDXL}/attack/similarity_{{kind}}.csv",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/score_{{kind}}.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/score_{{kind}}.tsv"
        wildcard_constraints:
            kind="|".join(SDXL_ATTACK_SCORES),
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

    rule sdxl_fig1_4_attacks:
        input:
            sdxl_attack_scores(),
            notebook="paper_figures/sdxl_fig1_4_attacks.ipynb",
            lib="paper_figures/sdxl_figlib.py",
            original=f"{SDXL}/data/attack.zip",
            noised=f"{SDXL}/attack/noise_noised.zip",
            one_step=f"{SDXL}/attack/noise_one_step.zip",
            full=f"{SDXL}/attack/noise_full.zip",
            masked=f"{SDXL}/attack/inpaint_masked.zip",
            inpainted=f"{SDXL}/attack/inpaint_inpainted.zip",
        output:
            notebook=f"{SDXL_FIG}/notebooks/sdxl_fig1_4_attacks.ipynb",
            png=f"{SDXL_FIG}/sdxl_fig1_4_attacks.png",
            pdf=f"{SDXL_FIG}/sdxl_fig1_4_attacks.pdf",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/fig1_4_attacks.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/fig1_4_attacks.tsv"
        params:
            parameters=lambda w, input: sdxl_figure_params(
                "sdxl_fig1_4_attacks", sdxl_dir=SDXL, n_show=8,
                t_attack=sdxl_cfg()["attack"]["t_attack"], mask_fraction=sdxl_cfg()["attack"]["mask_fraction"]),
        localrule: True  # cheap: stays on the submitting host on cluster profiles
        threads: 1
        resources:
            mem_mb=1500,
            runtime=sdxl_runtime("figures"),
        conda:
            "../envs/sdxl.yml"
        shell:
            FIGURE_PAPERMILL

    rule sdxl_fig5_7_generations:
        input:
            expand(f"{SDXL}/tn{{tn}}/samples_{{sampler}}.zip", tn=sdxl_tns(), sampler=sdxl_samplers()),
            notebook="paper_figures/sdxl_fig5_7_generations.ipynb",
            lib="paper_figures/sdxl_figlib.py",
            data=f"{SDXL}/data/data.zip",
        output:
            notebook=f"{SDXL_FIG}/notebooks/sdxl_fig5_7_generations.ipynb",
            png=f"{SDXL_FIG}/sdxl_fig5_7_generations.png",
            pdf=f"{SDXL_FIG}/sdxl_fig5_7_generations.pdf",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/fig5_7_generations.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/fig5_7_generations.tsv"
        params:
            parameters=lambda w: sdxl_figure_params(
                "sdxl_fig5_7_generations", sdxl_dir=SDXL, noise_levels=sdxl_cfg()["noise_levels"],
                samplers=sdxl_samplers(), noise_seed=sdxl_cfg()["training"]["noise_seed"], n_show=8),
        localrule: True  # cheap: stays on the submitting host on cluster profiles
        threads: 1
        resources:
            mem_mb=1500,
            runtime=sdxl_runtime("figures"),
        conda:
            "../envs/sdxl.yml"
        shell:
            FIGURE_PAPERMILL

    rule sdxl_fig8_similarity_histograms:
        input:
            sdxl_generation_scores(),
            notebook="paper_figures/sdxl_fig8_similarity_histograms.ipynb",
            lib="paper_figures/sdxl_figlib.py",
        output:
            notebook=f"{SDXL_FIG}/notebooks/sdxl_fig8_similarity_histograms.ipynb",
            png=f"{SDXL_FIG}/sdxl_fig8_similarity_histograms.png",
            pdf=f"{SDXL_FIG}/sdxl_fig8_similarity_histograms.pdf",
        log:
            f"logs/sdxl/{sdxl_cfg()['name']}/fig8_similarity_histograms.log",
        benchmark:
            f"benchmarks/sdxl/{sdxl_cfg()['name']}/fig8_similarity_histograms.tsv"
        params:
            parameters=lambda w: sdxl_figure_params(
                "sdxl_fig8_similarity_histograms", sdxl_dir=SDXL, noise_levels=sdxl_cfg()["noise_levels"],
                samplers=sdxl_samplers()),
        localrule: True  # cheap: stays on the submitting host on cluster profiles
        threads: 1
        resources:
            mem_mb=1500,
            runtime=sdxl_runtime("figures"),
        conda:
            "../envs/sdxl.yml"
        shell:
            FIGURE_PAPERMILL

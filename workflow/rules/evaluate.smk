# Metrics of each model's samples: nearest training neighbours (memorization), FD/KD against
# the held-out split (images no model trained on; the training set only when the config holds
# none out, and then the columns say *_train), and the attacks on training images (inpainting,
# noise, and the mask key: sampling with a training image's own mask).


rule neighbors:
    input:
        samples=layout.run_file("samples"),
        train=layout.DATASET_ZIP,
    output:
        summary=layout.run_file("neighbors_json"),
        csv=layout.run_file("neighbors_csv"),
        gallery=layout.run_file("neighbors_npz"),
    log:
        "logs/{dataset}/{corruption}/neighbors_{extractor}.log",
    benchmark:
        "benchmarks/{dataset}/{corruption}/neighbors_{extractor}.tsv"
    params:
        fallback=config["evaluation"]["fallback"],
        gallery_size=config["evaluation"]["gallery_size"],
        device=config["device"],
    group:
        "evaluate"
    threads: config["threads_per_job"]
    resources:
        mem_mb=mem("evaluate"),
        runtime=runtime("evaluate"),
        gpu=extractor_gpus,
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- '
        '"$AMBIENT_PYTHON" -m ambient neighbors --samples {input.samples} --train {input.train} '
        "--extractor {wildcards.extractor} --fallback {params.fallback} --gallery-size {params.gallery_size} "
        "--out {output.summary} --csv {output.csv} --gallery {output.gallery} --no-png "
        "--device {params.device} --threads {threads} --quiet > {log} 2>&1"


rule fetch_weights:
    # Runs when an inception job needs the weights (`evaluation.inception: always`), or alone:
    # `snakemake --cores 1 fetch_weights`. The default config never downloads.
    output:
        config["evaluation"]["inception_weights"],
    log:
        "logs/fetch_weights.log",
    params:
        dest=lambda w, output: str(Path(output[0]).parent),
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient fetch-weights --name inception --dest {params.dest} --quiet > {log} 2>&1'


rule ref_stats:
    input:
        unpack(weights_input),
        images=quality_ref_images(),
    output:
        ref_stats_file(),
    log:
        f"logs/{{dataset}}/ref_{{extractor}}_{quality_ref_name()}.log",
    benchmark:
        f"benchmarks/{{dataset}}/ref_{{extractor}}_{quality_ref_name()}.tsv"
    params:
        fallback=extractor_fallback,
        weights_dir=lambda w: str(Path(config["evaluation"]["inception_weights"]).parent),
        device=config["device"],
    group:
        "evaluate"
    threads: config["threads_per_job"]
    resources:
        mem_mb=mem("evaluate"),
        runtime=runtime("evaluate"),
        gpu=extractor_gpus,
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- '
        '"$AMBIENT_PYTHON" -m ambient ref-stats --images {input.images} --out {output} '
        "--extractor {wildcards.extractor} --fallback {params.fallback} --weights-dir {params.weights_dir} "
        "--device {params.device} --threads {threads} --quiet > {log} 2>&1"


rule fid:
    input:
        unpack(weights_input),
        samples=layout.run_file("samples"),
        ref=ref_stats_file(),
    output:
        layout.run_file("fd_json"),
    log:
        "logs/{dataset}/{corruption}/fd_{extractor}.log",
    benchmark:
        "benchmarks/{dataset}/{corruption}/fd_{extractor}.tsv"
    params:
        fallback=extractor_fallback,
        weights_dir=lambda w: str(Path(config["evaluation"]["inception_weights"]).parent),
        seed=config["evaluation"]["kid_seed"],
        kid_subsets=config["evaluation"]["kid_subsets"],
        ref_name=quality_ref_name(),
        device=config["device"],
    group:
        "evaluate"
    threads: config["threads_per_job"]
    resources:
        mem_mb=mem("evaluate"),
        runtime=runtime("evaluate"),
        gpu=extractor_gpus,
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- '
        '"$AMBIENT_PYTHON" -m ambient fid --samples {input.samples} --ref {input.ref} --out {output} '
        "--extractor {wildcards.extractor} --fallback {params.fallback} --weights-dir {params.weights_dir} "
        "--seed {params.seed} --kid-subsets {params.kid_subsets} --ref-name {params.ref_name} "
        "--device {params.device} --threads {threads} --quiet > {log} 2>&1"


rule ruler_check:
    # Does the quality ruler (the C2ST in evaluation.ruler's features) rise with noise, blur, lost
    # contrast, salt and pepper and black boxes? The training images disturbed, scored against the
    # quality reference; the claims read it (a ruler that fails its own test backs no claim).
    input:
        images=layout.DATASET_ZIP,
        ref=ref_stats_file(),
    output:
        layout.RULER_CHECK.replace("{ref}", quality_ref_name()),
    log:
        f"logs/{{dataset}}/ruler_check_{{extractor}}_{quality_ref_name()}.log",
    benchmark:
        f"benchmarks/{{dataset}}/ruler_check_{{extractor}}_{quality_ref_name()}.tsv"
    params:
        seed=config["evaluation"]["kid_seed"],
        kid_subsets=config["evaluation"]["kid_subsets"],
        ref_name=quality_ref_name(),
        device=config["device"],
    group:
        "evaluate"
    threads: config["threads_per_job"]
    resources:
        mem_mb=mem("evaluate"),
        runtime=runtime("evaluate"),
        gpu=extractor_gpus,
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- '
        '"$AMBIENT_PYTHON" -m ambient extractor-check --images {input.images} --ref {input.ref} --out {output} '
        "--extractor {wildcards.extractor} --fallback none --ref-name {params.ref_name} --seed {params.seed} "
        "--kid-subsets {params.kid_subsets} --device {params.device} --threads {threads} --quiet > {log} 2>&1"


rule attack:
    input:
        model=layout.run_file("model"),
        train=layout.DATASET_ZIP,
    output:
        summary=layout.run_file("attack_json"),
        csv=layout.run_file("attack_csv"),
        gallery=layout.run_file("attack_npz"),
    log:
        "logs/{dataset}/{corruption}/attack_{attack}.log",
    benchmark:
        "benchmarks/{dataset}/{corruption}/attack_{attack}.tsv"
    wildcard_constraints:
        attack="|".join(layout.ATTACK_KINDS),
    params:
        options=attack_options,
        device=config["device"],
    threads: config["threads_per_job"]
    resources:
        mem_mb=mem("evaluate"),
        runtime=runtime("evaluate"),
        gpu=gpus(),
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- '
        '"$AMBIENT_PYTHON" -m ambient attack --checkpoint {input.model} --train {input.train} '
        "--kind {wildcards.attack} {params.options} --out {output.summary} --csv {output.csv} "
        "--gallery {output.gallery} --device {params.device} --threads {threads} --quiet > {log} 2>&1"


rule hf_energy:
    # High-frequency energy (power above half Nyquist) of the samples vs the clean training images
    # vs, for noise runs, the noisy training data the model saw (ambient/eval/metrics_hf.py).
    input:
        samples=layout.run_file("samples"),
        train=layout.DATASET_ZIP,
    output:
        layout.run_file("hf_json"),
    log:
        "logs/{dataset}/{corruption}/hf_energy.log",
    params:
        corruption_seed=config["training"]["corruption_seed"],
    threads: 1
    resources:
        mem_mb=mem("evaluate"),
        runtime=runtime("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient hf-energy --samples {input.samples} --train {input.train} '
        "--corruption {wildcards.corruption} --corruption-seed {params.corruption_seed} --out {output} > {log} 2>&1"


rule summary:
    input:
        models=run_files("model"),
        samples=run_files("samples"),
        neighbors=run_files("neighbors_json", extractor=sim_extractor()),
        fd=run_files("fd_json", extractor=fd_extractors()),
        attacks=run_files("attack_json", attack=attack_kinds()),
        hf=run_files("hf_json"),
    output:
        csv=report(
            layout.SUMMARY_CSV,
            caption="../report/summary.rst",
            category="Metrics",
            labels={"table": "summary.csv"},
        ),
        metrics=layout.SUMMARY_JSON,  # dvc.yaml's metrics
    log:
        "logs/summary.log",
    params:
        dataset=dataset_name(),
        corruptions=list_args(corruption_names()),
        sim_extractor=sim_extractor(),
        extractors=list_args(fd_extractors()),
        attacks=lambda w: (f"--attacks {list_args(attack_kinds())}" if attack_kinds() else ""),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient summarize --dataset {params.dataset} --corruptions {params.corruptions} '
        "--similarity-extractor {params.sim_extractor} --extractors {params.extractors} {params.attacks} "
        "--hf-energy --out {output.csv} --metrics-json {output.metrics} > {log} 2>&1"

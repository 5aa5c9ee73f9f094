# Samples of each model (EDM Heun; ambient models with a fixed seeded mask per sample; Tweedie
# models early-stopped at sigma_n with one x0 step, read from the checkpoint).


rule sample:
    input:
        model=layout.run_file("model"),
    output:
        samples=layout.run_file("samples"),
    log:
        "logs/{dataset}/{corruption}/sample.log",
    benchmark:
        "benchmarks/{dataset}/{corruption}/sample.tsv"
    params:
        num=config["sampling"]["num_samples"],
        steps=config["sampling"]["steps"],
        seed=config["sampling"]["seed"],
        batch_size=config["sampling"]["batch_size"],
        precision=config["sampling"]["precision"],
        sampler="auto",  # Tweedie models: early (stop at sigma_n); sample_full: full
        device=config["device"],
    threads: config["threads_per_job"]
    resources:
        mem_mb=mem("sample"),
        runtime=runtime("sample"),
        gpu=gpus(),
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- '
        '"$AMBIENT_PYTHON" -m ambient sample --checkpoint {input.model} --num {params.num} '
        "--steps {params.steps} --seed {params.seed} --batch-size {params.batch_size} --precision {params.precision} "
        "--sampler {params.sampler} --device {params.device} --threads {threads} --out {output.samples} "
        "--quiet > {log} 2>&1"


use rule sample as sample_full with:
    # Tweedie models trained with the consistency loss: the full-length sampler, down to sigma_min
    # through the range below sigma_n that only the consistency loss trains (Tweedie paper, Figs. 5-6).
    output:
        samples=layout.run_file("samples_full"),
    log:
        "logs/{dataset}/{corruption}/sample_full.log",
    benchmark:
        "benchmarks/{dataset}/{corruption}/sample_full.tsv"
    params:
        sampler="full",

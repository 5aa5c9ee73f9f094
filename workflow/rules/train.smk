# One model per run name. Checkpoints and train_log.jsonl live in the model's train/ folder
# (not declared outputs, so a failed or killed job resumes from its last checkpoint).
# GPUs per job: resources.train_gpu (null = resources.gpu). 0: the configured device (CPU profile);
# 1: --device cuda; N > 1: torchrun --standalone --nproc_per_node=N (DDP; `python -m
# torch.distributed.run` is torchrun with the jobs' interpreter), each rank a slice of the batch.
# The Gaussian baseline (run gauss) goes through the same rule and `ambient train`, which fits its
# mean and covariance at once: a one-thread CPU job (common.smk: is_fitted).


rule train:
    input:
        dataset=layout.DATASET_ZIP,
    output:
        model=model_output(),
    log:
        "logs/{dataset}/{corruption}/train.log",
    benchmark:
        "benchmarks/{dataset}/{corruption}/train.tsv"
    params:
        run_dir=lambda w: layout.run_file("train_dir", w.dataset, w.corruption),
        corruption=train_corruption_args,
        settings=train_settings,
        launcher=train_launcher,
        device=train_device,
        threads=train_threads,
    threads: train_job_threads
    # longest first: the run is bound by its total compute, and a long training started last
    # would leave the other cores idle at the end
    priority: train_priority
    # A training killed mid-way (out of memory, a SLURM --time limit, a preempted node) is retried
    # and `ambient train` resumes from its last checkpoint, not from step 0. Only training: the
    # other jobs are short, and a retry would only repeat their error.
    retries: 2
    resources:
        mem_mb=train_job_mem,
        runtime=train_job_runtime,
        gpu=train_job_gpus,
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus {resources.gpu} -- '
        "{params.launcher} -m ambient train --dataset {input.dataset} {params.corruption} "
        "--settings {params.settings:q} --run-dir {params.run_dir} "
        "--out {output.model} --device {params.device} --threads {params.threads} --quiet > {log} 2>&1"

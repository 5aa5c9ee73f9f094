# One model per corruption. Checkpoints and train_log.jsonl live in the run's train/ folder
# (not declared outputs, so a failed or killed job resumes from its last checkpoint).


rule train:
    input:
        dataset="data/{dataset}.zip",
    output:
        model="results/{dataset}/{corruption}/model.pt",
    log:
        "logs/{dataset}/{corruption}/train.log",
    benchmark:
        "benchmarks/{dataset}/{corruption}/train.tsv"
    params:
        run_dir=lambda w, output: str(Path(output.model).parent / "train"),
        delta=corruption_delta,
        network=lambda w: (
            f"--base-channels {config['network']['base_channels']} "
            f"--channel-mult {list_args(config['network']['channel_mult'])} "
            f"--num-blocks {config['network']['num_blocks']} "
            f"--attn-resolutions {list_args(config['network']['attn_resolutions'])} "
            f"--dropout {config['network']['dropout']}"
        ),
        training=lambda w: (
            f"--formulation {config['training']['formulation']} --steps {config['training']['steps']} "
            f"--batch-size {config['training']['batch_size']} --lr {config['training']['lr']} "
            f"--warmup-steps {config['training']['warmup_steps']} --ema-decay {config['training']['ema_decay']} "
            f"--grad-clip {config['training']['grad_clip']} --seed {config['training']['seed']} "
            f"--corruption-seed {config['training']['corruption_seed']} "
            f"--precision {config['training']['precision']} "
            f"--checkpoint-every {config['training']['checkpoint_every']} "
            f"--log-every {config['training']['log_every']}"
            + (" --xflip" if config["training"]["xflip"] else "")
        ),
        device=config["device"],
    threads: config["threads_per_job"]
    resources:
        mem_mb=mem("train"),
        gpu=gpus(),
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient train --dataset {input.dataset} --corruption {wildcards.corruption} '
        "--delta {params.delta} {params.network} {params.training} --run-dir {params.run_dir} "
        "--out {output.model} --device {params.device} --threads {threads} --quiet > {log} 2>&1"

# Prepared dataset: a zip of uint8 PNGs + dataset.json (sha256 of every image).


rule prepare_dataset:
    input:
        dataset_source_input,
    output:
        "data/{dataset}.zip",
    log:
        "logs/{dataset}/prepare.log",
    params:
        options=prepare_options,
    threads: 1
    resources:
        mem_mb=mem("prepare"),
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient prepare {params.options} --out {output} > {log} 2>&1'

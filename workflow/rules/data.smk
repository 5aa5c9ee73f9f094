# Prepared dataset: a zip of uint8 PNGs + dataset.json (sha256 of every image), and with
# dataset.heldout_images the held-out split (data/<dataset>-heldout.zip, never trained on: the
# reference of the quality metrics).
# embedded / folder sources: prepare_dataset (offline). Paper sources (celeba, ffhq, celeba_hq):
# download_dataset, defined only when the config names one (config/paper-*.yaml).

if not is_paper_source():

    rule prepare_dataset:
        input:
            dataset_source_input,
        output:
            train=layout.DATASET_ZIP,
            **({"heldout": layout.HELDOUT_ZIP} if has_heldout() else {}),
        log:
            "logs/{dataset}/prepare.log",
        params:
            options=prepare_options,
            heldout=heldout_options,
        threads: 1
        resources:
            mem_mb=mem("prepare"),
            runtime=runtime("prepare"),
        conda:
            "../../environment.yml"
        shell:
            '"$AMBIENT_PYTHON" -m ambient prepare {params.options}{params.heldout} --out {output.train} > {log} 2>&1'

else:

    rule download_dataset:
        # DOWNLOADS (CelebA ~1.4 GB from Google Drive; FFHQ thumbnails ~2 GB from a url you give).
        # Only the paper configs use it; it is a localrule (cluster compute nodes often have no
        # internet) and it refuses to run under CI (CI=true): tests only dry-run the paper configs.
        # The archive and its extraction stay in dataset.raw_dir and are reused; the subset is
        # seeded (dataset.seed) and recorded in the zip's manifest (see ambient/pipeline/download.py).
        output:
            train=layout.DATASET_ZIP,
            **({"heldout": layout.HELDOUT_ZIP} if has_heldout() else {}),
        log:
            "logs/{dataset}/download.log",
        params:
            options=download_options,
            heldout=heldout_options,
        threads: 1
        resources:
            mem_mb=mem("prepare"),
            runtime=runtime("prepare"),
            download=1,
        conda:
            "../../environment.yml"
        shell:
            'if [ -n "${{CI:-}}" ]; then echo "download_dataset: refusing to download under CI (CI=$CI)" > {log}; '
            "exit 1; fi; "
            '"$AMBIENT_PYTHON" -m ambient download-dataset {params.options}{params.heldout} --out {output.train} '
            "> {log} 2>&1"

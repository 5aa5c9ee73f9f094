# One target rule per phase: `snakemake --cores all models` trains every model, and so on. Each
# phase writes one directory of its own (ambient/layout.py), which is what dvc.yaml's stages run
# and record.


for _phase in layout.PHASES:

    rule:
        name:
            _phase
        localrule: True
        input:
            phase_targets(_phase) if config["pixel"] else [],

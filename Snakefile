# ambient-repro: clean vs ambient diffusion models, memorization and quality (Daras et al., NeurIPS 2023).
#
#   snakemake --cores all                                  the embedded default (config/config.yaml)
#   snakemake --cores all --configfile config/smoke.yaml   a tiny end-to-end run (tests)
#   snakemake --report results/report.html                 every figure in one HTML page
#   snakemake --cores all models                           one phase: datasets, models, samples,
#                                                          evaluation, metrics or figures
#
# Data flow: prepare -> train (one model per corruption) -> sample -> similarity, FD/KD, attacks
# -> summary.csv -> figure notebooks (papermill) -> PNG/PDF + executed notebooks.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/sdxl_common.smk"


validate_config(config, "workflow/schemas/config.schema.yaml")

# Jobs run `python -m ambient ...` with the interpreter named in the config (default: Snakemake's own).
shell.prefix(f"set -euo pipefail; export AMBIENT_PYTHON={python_cmd()}; ")

report: "workflow/report/workflow.rst"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    corruption=layout.RUN_NAME_PATTERN,
    extractor=r"[a-z0-9_]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/sdxl.smk"
include: "workflow/rules/phases.smk"


# Cheap rules stay on the submitting host on cluster profiles (the figure rules too: `localrule: True`
# in workflow/rules/figures.smk).
localrules:
    all,
    summary,
    claims,
    hf_energy,
    fetch_weights,


# Downloads run on the submitting host: cluster compute nodes often have no internet.
if is_paper_source():

    localrules:
        download_dataset,


rule all:
    default_target: True
    input:
        pixel_targets(),  # summary.csv, claims.csv and the figures; none with `pixel: false`
        sdxl_outputs(),  # the SDXL branch (workflow/rules/sdxl.smk); none without `sdxl:`

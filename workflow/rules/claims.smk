# The papers' claims checked against this run's summary.csv: one row per claim with the measured
# numbers, the threshold and holds = yes | no | n/a (ambient/eval/claims.py defines the thresholds).
# A claim that does not hold is a result, not a failure: the job succeeds either way.


rule claims:
    input:
        summary=layout.SUMMARY_CSV,
        ruler_check=ruler_check_file(),
    output:
        report(
            layout.CLAIMS_CSV,
            caption="../report/claims.rst",
            category="Metrics",
            labels={"table": "claims.csv"},
        ),
    log:
        "logs/claims.log",
    benchmark:
        "benchmarks/claims.tsv"
    params:
        ruler=config["evaluation"]["ruler"],
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        '"$AMBIENT_PYTHON" -m ambient claims --summary {input.summary} --ruler-check {input.ruler_check} '
        "--ruler {params.ruler} --out {output} > {log} 2>&1"

# One parameterized notebook per figure (paper_figures/*.ipynb, a cell tagged `parameters`),
# executed by papermill; the executed notebook and PNG + PDF figures are the outputs.
# The figures are the table ambient.layout.FIGURES: one rule per entry, named by it.


for fig in FIGURES:

    rule:
        name:
            fig.rule
        input:
            figure_files(fig),
            **figure_named_inputs(fig),
        output:
            notebook=fig.executed_notebook,
            png=figure_report(fig),
            pdf=[f"{FIGURES_DIR}/{stem}.pdf" for stem in fig.stems(config)],
        log:
            f"logs/figures/{fig.stem}.log",
        params:
            parameters=lambda w, input, fig=fig: figure_params(fig, input),
        threads: 1
        resources:
            mem_mb=mem("figures"),
            runtime=runtime("figures"),
        localrule: True
        conda:
            "../../environment.yml"
        shell:
            FIGURE_PAPERMILL

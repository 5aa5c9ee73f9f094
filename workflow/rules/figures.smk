# One parameterized notebook per figure (paper_figures/*.ipynb, a cell tagged `parameters`),
# executed by papermill; the executed notebook and PNG + PDF figures are the outputs.
# The figures are the table ambient.layout.FIGURES: one rule per entry, named by it, for every
# branch the config defines (ambient.layout.BRANCHES: its folders, helpers, environment).


for fig in layout.defined_figures(config):

    rule:
        name:
            fig.rule
        input:
            figure_files(fig),
            **figure_named_inputs(fig),
        output:
            notebook=fig.executed_notebook(config),
            png=figure_report(fig),
            pdf=fig.outputs(config, "pdf"),
        log:
            figure_log(fig),
        benchmark:
            figure_benchmark(fig)
        params:
            parameters=lambda w, input, fig=fig: figure_params(fig, input),
            # the report's caption where the figure has no caption file (workflow/report/figure.rst)
            caption=lambda w, input, fig=fig: figure_caption(fig, input.notebook),
        threads: 1
        resources:
            mem_mb=figure_resources(fig)["mem_mb"],
            runtime=figure_resources(fig)["runtime"],
        localrule: True
        conda:
            f"../../{fig.of.conda}"
        shell:
            FIGURE_PAPERMILL

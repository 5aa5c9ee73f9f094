# One parameterized notebook per figure (paper_figures/*.ipynb, a cell tagged `parameters`),
# executed by papermill; the executed notebook and PNG + PDF figures are the outputs.


rule fig2_training_data:
    input:
        notebook="paper_figures/fig2_training_data.ipynb",
        lib="paper_figures/figlib.py",
        dataset="data/{dataset}.zip".format(dataset=dataset_name()),
    output:
        notebook=f"{FIGURES_DIR}/notebooks/fig2_training_data.ipynb",
        png=report(f"{FIGURES_DIR}/fig2_training_data.png", caption="../report/fig2.rst", category="Figures",
                   labels={"figure": "Fig. 2: what each model saw"}),
        pdf=f"{FIGURES_DIR}/fig2_training_data.pdf",
    log:
        "logs/figures/fig2_training_data.log",
    params:
        parameters=lambda w, input: figure_params("fig2_training_data", dataset_zip=input.dataset,
                                                  runs=figure_runs(),
                                                  corruption_seed=config["training"]["corruption_seed"]),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL


rule fig3_nearest_neighbors:
    input:
        figure_inputs("samples", "neighbors_csv"),
        notebook="paper_figures/fig3_nearest_neighbors.ipynb",
        lib="paper_figures/figlib.py",
        dataset="data/{dataset}.zip".format(dataset=dataset_name()),
    output:
        notebook=f"{FIGURES_DIR}/notebooks/fig3_nearest_neighbors.ipynb",
        png=report(f"{FIGURES_DIR}/fig3_nearest_neighbors.png", caption="../report/fig3.rst", category="Figures",
                   labels={"figure": "Fig. 3: samples and their nearest training images"}),
        pdf=f"{FIGURES_DIR}/fig3_nearest_neighbors.pdf",
    log:
        "logs/figures/fig3_nearest_neighbors.log",
    params:
        parameters=lambda w, input: figure_params("fig3_nearest_neighbors", dataset_zip=input.dataset,
                                                  runs=figure_runs("samples", "neighbors_csv"),
                                                  extractor=sim_extractor(), n_show=8),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL


rule fig8_similarity_histograms:
    input:
        figure_inputs("neighbors_json", "neighbors_csv"),
        notebook="paper_figures/fig8_similarity_histograms.ipynb",
        lib="paper_figures/figlib.py",
    output:
        notebook=f"{FIGURES_DIR}/notebooks/fig8_similarity_histograms.ipynb",
        png=report(f"{FIGURES_DIR}/fig8_similarity_histograms.png", caption="../report/fig8.rst",
                   category="Figures", labels={"figure": "Fig. 8: similarity histograms"}),
        pdf=f"{FIGURES_DIR}/fig8_similarity_histograms.pdf",
    log:
        "logs/figures/fig8_similarity_histograms.log",
    params:
        parameters=lambda w: figure_params("fig8_similarity_histograms",
                                           runs=figure_runs("neighbors_json", "neighbors_csv"),
                                           extractor=sim_extractor()),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL


rule tradeoff:
    input:
        notebook="paper_figures/tradeoff.ipynb",
        lib="paper_figures/figlib.py",
        summary="results/metrics/summary.csv",
    output:
        notebook=f"{FIGURES_DIR}/notebooks/tradeoff.ipynb",
        png=report(f"{FIGURES_DIR}/tradeoff.png", caption="../report/tradeoff.rst", category="Figures",
                   labels={"figure": "Trade-off: memorization vs quality"}),
        pdf=f"{FIGURES_DIR}/tradeoff.pdf",
    log:
        "logs/figures/tradeoff.log",
    params:
        parameters=lambda w, input: figure_params("tradeoff", summary_csv=input.summary),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL


rule sample_grids:
    input:
        figure_inputs("samples"),
        notebook="paper_figures/samples.ipynb",
        lib="paper_figures/figlib.py",
    output:
        notebook=f"{FIGURES_DIR}/notebooks/samples.ipynb",
        png=[report(f"{FIGURES_DIR}/samples_{name}.png", caption="../report/samples.rst", category="Samples",
                    labels={"model": name}) for name in corruption_names()],
        pdf=[f"{FIGURES_DIR}/samples_{name}.pdf" for name in corruption_names()],
    log:
        "logs/figures/samples.log",
    params:
        parameters=lambda w: figure_params("samples", runs=figure_runs("samples"), columns=16, max_samples=128),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL


rule fig1_inpainting_attack:
    input:
        figure_inputs("attack_inpaint_json", "attack_inpaint_npz"),
        notebook="paper_figures/fig1_inpainting_attack.ipynb",
        lib="paper_figures/figlib.py",
    output:
        notebook=f"{FIGURES_DIR}/notebooks/fig1_inpainting_attack.ipynb",
        png=report(f"{FIGURES_DIR}/fig1_inpainting_attack.png", caption="../report/fig1.rst", category="Figures",
                   labels={"figure": "Fig. 1: inpainting attack"}),
        pdf=f"{FIGURES_DIR}/fig1_inpainting_attack.pdf",
    log:
        "logs/figures/fig1_inpainting_attack.log",
    params:
        parameters=lambda w: figure_params("fig1_inpainting_attack",
                                           runs=figure_runs("attack_inpaint_json", "attack_inpaint_npz"),
                                           n_show=8),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL


rule fig4_noise_attack:
    input:
        figure_inputs("attack_noise_json", "attack_noise_npz"),
        notebook="paper_figures/fig4_noise_attack.ipynb",
        lib="paper_figures/figlib.py",
    output:
        notebook=f"{FIGURES_DIR}/notebooks/fig4_noise_attack.ipynb",
        png=report(f"{FIGURES_DIR}/fig4_noise_attack.png", caption="../report/fig4.rst", category="Figures",
                   labels={"figure": "Fig. 4: noise attack"}),
        pdf=f"{FIGURES_DIR}/fig4_noise_attack.pdf",
    log:
        "logs/figures/fig4_noise_attack.log",
    params:
        parameters=lambda w: figure_params("fig4_noise_attack",
                                           runs=figure_runs("attack_noise_json", "attack_noise_npz"),
                                           n_show=8),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL


rule fig5_noise_generations:
    # Training on noisy data (Tweedie paper, Figs. 5-7): noisy training examples beside the samples of
    # each noise model and the naive baseline, and the high-frequency energy of each.
    input:
        noise_figure_inputs("samples", "hf_json"),
        notebook="paper_figures/fig5_noise_generations.ipynb",
        lib="paper_figures/figlib.py",
        dataset="data/{dataset}.zip".format(dataset=dataset_name()),
    output:
        notebook=f"{FIGURES_DIR}/notebooks/fig5_noise_generations.ipynb",
        png=report(f"{FIGURES_DIR}/fig5_noise_generations.png", caption="../report/fig5.rst", category="Figures",
                   labels={"figure": "Fig. 5: training on noisy data, generations"}),
        pdf=f"{FIGURES_DIR}/fig5_noise_generations.pdf",
    log:
        "logs/figures/fig5_noise_generations.log",
    params:
        parameters=lambda w, input: figure_params("fig5_noise_generations", dataset_zip=input.dataset,
                                                  runs=noise_figure_runs("samples", "hf_json"),
                                                  corruption_seed=config["training"]["corruption_seed"],
                                                  n_show=8),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL


rule fig6_noise_histograms:
    input:
        noise_figure_inputs("neighbors_json", "neighbors_csv"),
        notebook="paper_figures/fig6_noise_histograms.ipynb",
        lib="paper_figures/figlib.py",
    output:
        notebook=f"{FIGURES_DIR}/notebooks/fig6_noise_histograms.ipynb",
        png=report(f"{FIGURES_DIR}/fig6_noise_histograms.png", caption="../report/fig6.rst", category="Figures",
                   labels={"figure": "Fig. 6: similarity against noise level"}),
        pdf=f"{FIGURES_DIR}/fig6_noise_histograms.pdf",
    log:
        "logs/figures/fig6_noise_histograms.log",
    params:
        parameters=lambda w: figure_params("fig6_noise_histograms",
                                           runs=noise_figure_runs("neighbors_json", "neighbors_csv"),
                                           extractor=sim_extractor()),
    threads: 1
    resources:
        mem_mb=mem("figures"),
        runtime=runtime("figures"),
    conda:
        "../../environment.yml"
    shell:
        PAPERMILL

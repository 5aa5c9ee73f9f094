"""Figures of the SDXL branch (issue 13), drawn by the sdxl_*.ipynb notebooks (papermill, rules in
workflow/rules/sdxl.smk). Reuses figlib's readers and drawing helpers. Every figure prints on its face
which models made it (random-weight tiny models in the smoke config) and which feature extractor
scored it (DINOv2 only when its weights were present; otherwise the fallback, named). Its files' paths
come from ambient.layout.SDXL_FILES, the shares' thresholds from ambient.latent.scoring, which wrote them."""

from __future__ import annotations

from pathlib import Path

import figlib
import matplotlib.pyplot as plt
import numpy as np

from ambient.latent.scoring import SHARE_KEYS as THRESHOLDS  # the keys of a summary's shares_above

layout = figlib.layout


def default_dirs(root: Path, sdxl_dir: str | None, out_dir: str | None, configfile: str = "config/sdxl-smoke.yaml"):
    """The SDXL results and figures folders: those given, else ambient.layout.SDXL's for the sdxl.name
    of `configfile` (relative to root)."""
    if sdxl_dir is None or out_dir is None:
        import yaml

        cfg = yaml.safe_load((Path(root) / configfile).read_text())
        sdxl_dir, out_dir = sdxl_dir or layout.SDXL.dir(cfg), out_dir or layout.SDXL.fig_dir(cfg)
    return sdxl_dir, out_dir


def _file(d: Path, key: str, **fields) -> Path:
    """A result file (ambient.layout.SDXL_FILES key) of the SDXL results folder `d`."""
    relative = layout.SDXL_FILES[key].removeprefix(layout.SDXL_DIR + "/")
    return d / relative.format(**fields)


def header(fig, title: str, model_note: str, extractors: set[str] | None = None, tiny: bool = False) -> None:
    lines = [title, model_note]
    if extractors:
        ex = ", ".join(sorted(extractors))
        lines.append(
            f"similarity: cosine of {ex} features"
            + ("" if any(e.startswith("dinov2") for e in extractors) else " (NOT DINOv2: its weights were not found)")
        )
    fig.suptitle("\n".join(lines), fontsize=8, color="red" if tiny else "black", y=1.0, va="bottom")


def _row(fig, gs_row, images, label, sims=None):
    n = len(images)
    for j in range(n):
        ax = fig.add_subplot(gs_row[j])
        figlib.show(ax, images[j], None if sims is None else f"{sims[j]:.2f}", fontsize=6)
        if j == 0:
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)


def _sims(summary_csv: Path) -> np.ndarray:
    import pandas as pd

    df = pd.read_csv(summary_csv)
    return df[[c for c in df.columns if c.startswith("similarity_")][0]].to_numpy()


def _hist(ax, summary: dict, label: str) -> None:
    h = summary["histogram"]
    edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
    shares = ", ".join(f">{t}: {summary['shares_above'][t]:.2f}" for t in THRESHOLDS)
    ax.stairs(counts / max(1, counts.sum()), edges, label=f"{label} ({shares})", fill=False)


def attacks(
    root: Path,
    sdxl_dir: str,
    out_dir: str,
    stem: str,
    model_note: str,
    tiny: bool,
    n_show: int,
    t_attack: int,
    mask_fraction: float,
):
    """Figs. 1 and 4: inpainting and noise attacks, with each output's similarity to its original."""
    d = figlib.resolve(root, sdxl_dir)
    zip_of = lambda output: figlib.read_images(_file(d, "attack_zip", output=output))  # noqa: E731
    sims = lambda kind: _sims(_file(d, "attack_csv", kind=kind))  # noqa: E731
    orig = figlib.read_images(_file(d, "attack_images"))
    n = min(n_show, len(orig))
    summaries = {k: figlib.read_json(_file(d, "attack_json", kind=k)) for k in layout.SDXL_ATTACK_SCORES}
    rows = [
        ("original", orig, None),
        (f"masked ({mask_fraction:.0%} box)", zip_of("inpaint_masked"), None),
        ("inpainted", zip_of("inpaint_inpainted"), sims("inpaint_inpainted")),
        (f"noised to t={t_attack}", zip_of("noise_noised"), None),
        ("one-step x0", zip_of("noise_one_step"), sims("noise_one_step")),
        ("full denoising", zip_of("noise_full"), sims("noise_full")),
    ]
    fig = plt.figure(figsize=(max(0.9 * n + 2, 7), 0.95 * len(rows) + 2.4))
    gs = fig.add_gridspec(2, 1, height_ratios=[0.95 * len(rows), 2.0], hspace=0.25)
    top = gs[0].subgridspec(len(rows), n, hspace=0.4, wspace=0.05)
    for i, (label, images, sims) in enumerate(rows):
        _row(fig, [top[i, j] for j in range(n)], images[:n], label, None if sims is None else sims[:n])
    ax = fig.add_subplot(gs[1])
    for k, s in summaries.items():
        _hist(ax, s, k)
    ax.set_xlabel("similarity to the attacked image")
    ax.set_ylabel("share")
    ax.legend(fontsize=6)
    header(
        fig,
        "SDXL memorization attacks: inpainting (Fig. 1) and noise (Fig. 4)",
        model_note,
        {s["extractor"] for s in summaries.values()},
        tiny,
    )
    paths = figlib.save(fig, figlib.resolve(root, out_dir), stem)
    return summaries, paths


def generations(
    root: Path,
    sdxl_dir: str,
    out_dir: str,
    stem: str,
    model_note: str,
    tiny: bool,
    n_show: int,
    noise_levels: list[int],
    samplers: list[str],
):
    """Figs. 5-7: samples of the models fine-tuned at each t_n, early-stopped vs full-length."""
    d = figlib.resolve(root, sdxl_dir)
    train = figlib.read_images(_file(d, "train_images"))
    rows = [("training images\n(clean; the models saw\nlatents noised to t_n)", train)]
    for tn in noise_levels:
        for s in samplers:
            what = "early-stopped at t_n + x0 step" if s == "early" else "full-length to t=0"
            rows.append((f"t_n={tn}\n{what}", figlib.read_images(_file(d, "samples", tn=tn, sampler=s))))
    n = min([n_show] + [len(r[1]) for r in rows])
    fig = plt.figure(figsize=(max(0.9 * n + 2.5, 7), 0.95 * len(rows) + 0.8))
    gs = fig.add_gridspec(len(rows), n, hspace=0.3, wspace=0.05)
    for i, (label, images) in enumerate(rows):
        _row(fig, [gs[i, j] for j in range(n)], images[:n], label)
    header(fig, "SDXL LoRA fine-tuned on noisy data with the latent Tweedie loss (Figs. 5-7)", model_note, None, tiny)
    return figlib.save(fig, figlib.resolve(root, out_dir), stem)


def histograms(
    root: Path,
    sdxl_dir: str,
    out_dir: str,
    stem: str,
    model_note: str,
    tiny: bool,
    noise_levels: list[int],
    samplers: list[str],
):
    """Fig. 8: top-1 similarity of generations to the training set, per t_n and sampler."""
    import pandas as pd

    d = figlib.resolve(root, sdxl_dir)
    fig, axes = plt.subplots(1, len(samplers), figsize=(4.2 * len(samplers), 3.2), squeeze=False)
    records, extractors = [], set()
    for k, s in enumerate(samplers):
        ax = axes[0, k]
        for tn in noise_levels:
            summ = figlib.read_json(_file(d, "similarity_json", tn=tn, sampler=s))
            extractors.add(summ["extractor"])
            _hist(ax, summ, f"t_n={tn}")
            records.append(
                {
                    "t_n": tn,
                    "sampler": s,
                    "extractor": summ["extractor"],
                    "n": summ["n"],
                    **{f"share>{t}": summ["shares_above"][t] for t in THRESHOLDS},
                }
            )
        ax.set_title(f"sampler: {s}", fontsize=8)
        ax.set_xlabel("similarity to the nearest training image")
        ax.set_ylabel("share of samples")
        ax.legend(fontsize=6)
    header(fig, "Similarity of SDXL generations to the fine-tuning set (Fig. 8)", model_note, extractors, tiny)
    table = pd.DataFrame(records)
    return table, figlib.save(fig, figlib.resolve(root, out_dir), stem)

"""Run names of the workflow: a corruption name, plus `-naive` for the naive baseline on noisy data.

    clean, dust-p0.20, box-p0.40     one model per corruption (loss chosen by the corruption)
    noise-s0.20                      the Tweedie loss on noisy data (loss auto = tweedie)
    noise-s0.20-naive                the naive baseline on the same noisy data: the plain EDM loss
                                     (`ambient train --loss edm`), which learns to output noisy images

workflow/rules/common.smk and paper_figures/figlib.py build the same names from config entries
(tests check that the three agree).
"""
from __future__ import annotations

from .corruption import Corruption

NAIVE_SUFFIX = "-naive"
# config `loss` key of a corruption entry -> `ambient train --loss`
CONFIG_LOSSES = ("auto", "edm")


def run_name(corruption: Corruption | str, loss: str = "auto") -> str:
    """The run name of a model trained on `corruption` with `loss` (auto | edm; edm only for noise)."""
    corr = Corruption.from_name(corruption) if isinstance(corruption, str) else corruption
    if loss not in CONFIG_LOSSES:
        raise ValueError(f"loss {loss!r} is not one of {', '.join(CONFIG_LOSSES)}")
    if loss == "edm":
        if corr.kind != "noise":
            raise ValueError(f"loss edm (the naive baseline) is for noisy data only, not {corr.name}")
        return corr.name + NAIVE_SUFFIX
    return corr.name


def parse_run_name(name: str, delta: float = 0.0, seed: int = 0) -> tuple[Corruption, str]:
    """(corruption, loss) of a run name; loss is the `ambient train --loss` value (auto | edm)."""
    base, loss = name, "auto"
    if name.endswith(NAIVE_SUFFIX):
        base, loss = name[: -len(NAIVE_SUFFIX)], "edm"
    corr = Corruption.from_name(base, delta=delta, seed=seed)
    if loss == "edm" and corr.kind != "noise":
        raise ValueError(f"run name {name!r}: the {NAIVE_SUFFIX} suffix is for noisy data (noise-sS) only")
    return corr, loss


"""Run names back to what trained them: the inverse of ambient.layout.run_name (names are defined there)."""

from __future__ import annotations

from .corruption import Corruption
from .layout import NAIVE_SUFFIX


def parse_run_name(name: str, delta: float = 0.0, seed: int = 0) -> tuple[Corruption, str]:
    """(corruption, loss) of a run name; loss is the `ambient train --loss` value (auto | edm)."""
    base, loss = name, "auto"
    if name.endswith(NAIVE_SUFFIX):
        base, loss = name[: -len(NAIVE_SUFFIX)], "edm"
    corr = Corruption.from_name(base, delta=delta, seed=seed)
    if loss == "edm" and corr.kind != "noise":
        raise ValueError(f"run name {name!r}: the {NAIVE_SUFFIX} suffix is for noisy data (noise-sS) only")
    return corr, loss

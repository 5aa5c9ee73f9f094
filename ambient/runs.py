"""Run names back to what trained them: the inverse of ambient.layout.run_name (names are defined there)."""

from __future__ import annotations

from .corruption import Corruption
from .layout import CORRUPTED_KINDS, NAIVE_SUFFIX


def parse_run_name(name: str, delta: float = 0.0, seed: int = 0) -> tuple[Corruption, str]:
    """(corruption, loss) of a run name; loss is the `ambient train --loss` value (auto | edm).

    A naive baseline (dust-p0.50-naive, noise-s0.20-naive) is its corruption with loss edm; its
    further corruption is none whatever `delta` says (the plain EDM loss never draws one)."""
    base, loss = name, "auto"
    if name.endswith(NAIVE_SUFFIX):
        base, loss = name[: -len(NAIVE_SUFFIX)], "edm"
    corr = Corruption.from_name(base, delta=delta if loss == "auto" else 0.0, seed=seed)
    if loss == "edm" and corr.kind not in CORRUPTED_KINDS:
        raise ValueError(
            f"run name {name!r}: the {NAIVE_SUFFIX} suffix is for corrupted data ({', '.join(CORRUPTED_KINDS)}) only"
        )
    return corr, loss

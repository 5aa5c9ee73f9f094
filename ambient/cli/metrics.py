"""Metrics commands, one table from the per-model files: summarize (summary.csv, summary.json), claims."""

from __future__ import annotations

import argparse

from ..layout import ATTACK_KINDS, CLAIMS_CSV, SUMMARY_CSV
from .common import Command, declare_paths
from .common import register as _register


def _summarize(p: argparse.ArgumentParser) -> None:
    from ..eval.summary import cmd_summarize

    p.add_argument("--dataset", required=True, help="dataset name: the D of the result paths (ambient.layout)")
    p.add_argument("--root", default=".", help="the workflow directory the result paths start from")
    p.add_argument(
        "--corruptions",
        nargs="+",
        required=True,
        help="run names, e.g. clean gauss dust-p0.20 dust-p0.50-naive box-p0.40 noise-s0.20 noise-s0.20-naive",
    )
    p.add_argument("--similarity-extractor", default="pixel", help="X of neighbors_<X>.json")
    p.add_argument("--extractors", nargs="*", default=[], help="E of fd_<E>.json, one FD/KD pair each")
    p.add_argument("--attacks", nargs="*", default=[], choices=ATTACK_KINDS, help="K of attack_<K>.json")
    p.add_argument("--hf-energy", action="store_true", help="add the hf_* columns from hf_energy.json")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--metrics-json", default=None, help="also the numeric columns as JSON, {run: {column: value}}")
    declare_paths(p, inputs=["root"], outputs=["out", "metrics_json"])
    p.set_defaults(func=cmd_summarize)


def _claims(p: argparse.ArgumentParser) -> None:
    from ..eval.claims import CLAIMS, cmd_claims

    p.add_argument("--summary", default=SUMMARY_CSV, help="summary.csv (ambient.eval.summary)")
    p.add_argument("--out", default=CLAIMS_CSV, help="output CSV, one row per claim")
    p.add_argument("--ruler", default="filterbank", help="feature space of the quality ruler (column c2st_<x>_heldout)")
    p.add_argument(
        "--ruler-check",
        default=None,
        help="the ruler's disturbance test (ruler_check_<x>_<ref>.json); when it fails, the quality claims are n/a",
    )
    defaults = "; ".join(f"{c.id}: " + ", ".join(f"{k}={v:g}" for k, v in c.params.items()) for c in CLAIMS)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CLAIM.PARAM=VALUE",
        help=f"override a threshold or tolerance (repeatable). Thresholds: {defaults}",
    )
    declare_paths(p, inputs=["summary", "ruler_check"], outputs=["out"])
    p.set_defaults(func=cmd_claims)


COMMANDS = {
    "summarize": Command("one CSV row per model from the per-model metric files", _summarize),
    "claims": Command("one CSV row per claim of the papers: does it hold in this run?", _claims),
}


def register(sub, names=None) -> None:
    """Add the metrics commands to the `ambient` parser's sub-commands."""
    _register(sub, COMMANDS, names)

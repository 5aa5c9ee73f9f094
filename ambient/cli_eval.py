"""Evaluation commands (fid, neighbors, attack, fetch-weights): registered on the main parser."""
from __future__ import annotations


def add_eval_commands(sub) -> None:
    """Add the evaluation sub-commands to the `ambient` parser."""

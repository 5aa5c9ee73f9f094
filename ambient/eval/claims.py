"""`python -m ambient.eval.claims`: does this run reproduce what the papers claim? One row per claim.

Reads results/metrics/summary.csv (one row per model, ambient.eval.summary) and writes
results/metrics/claims.csv with the columns

    claim       short id (CLAIMS below)
    statement   what the paper says, one sentence
    source      paper and figure
    measured    the number(s) the verdict rests on, as text (which column, which runs)
    threshold   the test, as text (e.g. ">= 0.50")
    holds       yes | no | n/a (n/a: the runs or columns the claim needs are not in this run)
    note        why n/a, and anything left out (a run without the column, ...)

The thresholds are defined once, in CLAIMS; `--set CLAIM.PARAM=VALUE` overrides one for a run.
A claim that does not hold is a measurement, not an error: the exit status is 0 whenever
claims.csv was written. Torch-free: reads and writes CSV only.

Papers: Daras et al., Ambient Diffusion (NeurIPS 2023), and Daras, Dimakis, Daskalakis,
Consistent Diffusion Meets Tweedie (ICML 2024). Figure numbers as in the README's table.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import AUTO_LOSS, parse_run_name

COLUMNS = ["claim", "statement", "source", "measured", "threshold", "holds", "note"]
SHARE = "share_gt_0.95"  # the memorization share of every copy claim
AMBIENT = "Ambient Diffusion (NeurIPS 2023)"
TWEEDIE = "Consistent Diffusion Meets Tweedie (ICML 2024)"


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    source: str
    params: dict = field(default_factory=dict)  # thresholds and tolerances: the defaults of `--set`


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "clean_copies",
        "A diffusion model trained on the clean images copies its training set.",
        f"{AMBIENT}, Figs. 3 and 8",
        {"min_share": 0.50},
    ),
    Claim(
        "heavy_corruption_no_copies",
        "A model trained on heavily corrupted images (p >= 0.5) produces (almost) no copies.",
        f"{AMBIENT}, Figs. 3 and 8",
        {"min_p": 0.5, "max_share": 0.05},
    ),
    Claim(
        "copies_fall_with_p",
        "The share of memorized samples does not rise with the corruption level p.",
        f"{AMBIENT}, Fig. 8",
        {"tolerance": 0.02},
    ),
    Claim(
        "key_fails_heavy",
        "Even an attacker who holds a training image's mask recovers (almost) nothing from the models "
        "trained at p >= 0.5: handed image i's own training mask, they (almost) never return image i.",
        f"{AMBIENT}, Figs. 3 and 8 (memorization vs p), tested with this pipeline's mask-key attack",
        {"tolerance": 0.02, "min_p": 0.5, "max_extracted": 0.05},
    ),
    Claim(
        "quality_cost",
        "Training on corrupted data costs sample quality: the most corrupted model is farther from the "
        "data distribution (held-out KD) than the clean one.",
        f"{AMBIENT}, Table 1 (FID vs p)",
        {"n_std": 1.0},
    ),
    Claim(
        "quality_cost_rises_with_p",
        "The quality cost grows with the corruption level p (held-out KD non-decreasing in p).",
        f"{AMBIENT}, Table 1 (FID vs p)",
        {"n_std": 1.0},
    ),
    Claim(
        "tweedie_samples_clean",
        "A model trained on noisy data with the Tweedie loss generates clean samples, no noisier than the clean data.",
        f"{TWEEDIE}, Figs. 5-7",
        {"max_ratio": 1.25},
    ),
    Claim(
        "naive_reproduces_noise",
        "The naive baseline (plain diffusion loss on the noisy data) generates noisy samples.",
        f"{TWEEDIE}, Figs. 5-7",
        {"min_ratio": 0.5},
    ),
    Claim(
        "attacks_extract_clean",
        "Memorization attacks (inpainting a mostly erased training image) recover training images from "
        "the clean model.",
        f"{AMBIENT}, Figs. 1 and 4",
        {"min_extracted": 0.2},
    ),
    Claim(
        "attacks_fail_heavy",
        "The inpainting and noise attacks recover (almost) no training image from models trained at p >= 0.5.",
        f"{AMBIENT}, Figs. 1 and 4",
        {"min_p": 0.5, "max_extracted": 0.05},
    ),
)
CLAIM_IDS = tuple(c.id for c in CLAIMS)


class ClaimsError(ValueError):
    """A summary.csv this module cannot read (message names the file, row and column)."""


# ---------------------------------------------------------------- reading summary.csv


@dataclass
class Run:
    name: str  # run name: clean, dust-p0.20, noise-s0.40-naive
    kind: str
    level: float
    loss: str
    values: dict  # column -> float | None (empty, nan or not a number: None)

    def get(self, col: str) -> float | None:
        return self.values.get(col)


def _number(text: str | None) -> float | None:
    if text is None or not str(text).strip():
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def read_summary(path: str | Path) -> tuple[list[str], list[Run]]:
    """(columns, runs) of a summary.csv; kind/level/loss from their columns, else from the run name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found (make it with `snakemake {path}` or `python -m ambient.eval.summary`)"
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    name_col = "corruption" if "corruption" in columns else "model" if "model" in columns else None
    if name_col is None:
        raise ClaimsError(f"{path}: no `corruption` (run name) column; columns: {', '.join(columns) or 'none'}")
    runs, seen = [], set()
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        name = (row.get(name_col) or "").strip().rsplit("/", 1)[-1]
        try:
            parsed = parse_run_name(name)
        except ValueError:
            parsed = None
        kind = (row.get("kind") or "").strip() or (parsed[0] if parsed else "")
        if not kind:
            raise ClaimsError(f"{path}, line {i}: run {name!r} has no `kind` and its name is not a run name")
        level = _number(row.get("level"))
        if level is None:
            level = parsed[1] if parsed else 0.0
        loss = (row.get("loss") or "").strip() or ("edm" if parsed and parsed[2] else AUTO_LOSS.get(kind, ""))
        if name in seen:
            raise ClaimsError(f"{path}: two rows for run {name!r}")
        seen.add(name)
        values = {c: _number(row.get(c)) for c in columns}
        runs.append(Run(name, kind, level, loss, values))
    return columns, runs


# ---------------------------------------------------------------- evaluating the claims


@dataclass
class Result:
    measured: str = ""
    threshold: str = ""
    holds: str = "n/a"  # yes | no | n/a
    note: str = ""


def fmt3(v) -> str:
    """A number as text with 3 significant digits (no exponent from 1e-4 up); `-` when missing."""
    if v is None or v == "":
        return "-"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if x != x:  # nan
        return "-"
    x = float(f"{x:.3g}")  # rounded first: 999.6 -> 1000, shown as 1000
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:.0f}"
    if abs(x) < 1e-4:
        return f"{x:.2e}"
    return f"{x:#.3g}".rstrip(".")


_f = fmt3


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _na(reason: str, threshold: str = "", measured: str = "") -> Result:
    return Result(measured=measured, threshold=threshold, holds="n/a", note=reason)


def _dust(runs: list[Run]) -> list[Run]:
    return sorted((r for r in runs if r.kind == "dust"), key=lambda r: r.level)


def _clean(runs: list[Run]) -> Run | None:
    return next((r for r in runs if r.kind == "clean"), None)


def _missing(col: str, columns: list[str]) -> str:
    return f"summary.csv has no `{col}` column" if col not in columns else f"`{col}` is empty"


# Most perceptual first. Raw pixels come last: pixel-space KD mostly sees mean and contrast,
# and on the embedded default it was not monotone in p while every feature-based column was.
KD_PREFERENCE = ("kid_heldout", "kd_inception_heldout", "kd_dinov2_heldout", "kd_filterbank_heldout")


def kd_columns(columns: list[str]) -> tuple[str, str] | None:
    """(KD column, its std column) against the held-out split: the first of KD_PREFERENCE present
    (Inception, then DINOv2, then the filter bank), else the first kd_<x>_heldout column."""
    kd = next((c for c in KD_PREFERENCE if c in columns), None)
    kd = kd or next((c for c in columns if re.fullmatch(r"kd_.+_heldout", c)), None)
    return (kd, f"{kd}_std") if kd else None


def clean_copies(runs, columns, p) -> Result:
    t = f">= {p['min_share']:.2f}"
    clean = _clean(runs)
    if clean is None:
        return _na("no clean run in this config", t)
    v = clean.get(SHARE)
    if v is None:
        return _na(_missing(SHARE, columns) + " for clean", t)
    return Result(f"{SHARE} = {_f(v)} (clean)", t, _yes(v >= p["min_share"]))


def heavy_corruption_no_copies(runs, columns, p) -> Result:
    t = f"<= {p['max_share']:.2f}"
    heavy = [r for r in _dust(runs) if r.level >= p["min_p"]]
    if not heavy:
        return _na(f"no dust run with p >= {p['min_p']:g} in this config", t)
    r = heavy[-1]
    v = r.get(SHARE)
    if v is None:
        return _na(_missing(SHARE, columns) + f" for {r.name}", t)
    return Result(f"{SHARE} = {_f(v)} ({r.name})", t, _yes(v <= p["max_share"]))


def copies_fall_with_p(runs, columns, p) -> Result:
    tol = p["tolerance"]
    t = f"non-increasing in p (each step rises by <= {tol:.2f})"
    series = ([_clean(runs)] if _clean(runs) else []) + _dust(runs)
    notes = [f"{r.name}: no {SHARE}" for r in series if r.get(SHARE) is None]
    series = [r for r in series if r.get(SHARE) is not None]
    if len(series) < 2:
        return _na("needs clean and dust runs with a share (" + (", ".join(notes) or "fewer than two runs") + ")", t)
    seq = [r.get(SHARE) for r in series]
    measured = f"{SHARE} by p: " + ", ".join(f"p={r.level:g}: {_f(v)}" for r, v in zip(series, seq))
    if _clean(runs) is None:
        notes.append("no clean run (p = 0)")
    ok = all(b <= a + tol for a, b in zip(seq, seq[1:]))
    return Result(measured, t, _yes(ok), "; ".join(notes))


def key_fails_heavy(runs, columns, p) -> Result:
    """The key's bound at p >= min_p. Not a trend: with B drawn per step the key is A's own erasures,
    which at the smallest p are too few to name an image, so the share may rise before it falls
    (the note says where)."""
    col, tol = "key_extracted", p["tolerance"]
    t = f"<= {p['max_extracted']:.2f} for every dust run with p >= {p['min_p']:g}"
    dust = _dust(runs)
    notes = [f"{r.name}: no {col}" for r in dust if r.get(col) is None]
    series = [r for r in dust if r.get(col) is not None]
    heavy = [r for r in series if r.level >= p["min_p"]]
    if not heavy:
        return _na(
            f"needs a dust run with p >= {p['min_p']:g} and {col} (the key attack: evaluation.attacks)"
            + (f" ({'; '.join(notes)})" if notes else ""),
            t,
        )
    ok = all(r.get(col) <= p["max_extracted"] for r in heavy)
    rises = [f"p={a.level:g} to p={b.level:g}" for a, b in zip(series, series[1:]) if b.get(col) > a.get(col) + tol]
    if rises:
        notes.append("not monotone in p: rises from " + ", ".join(rises))
    measured = f"{col} by p: " + ", ".join(f"p={r.level:g}: {_f(r.get(col))}" for r in series)
    return Result(measured, t, _yes(ok), "; ".join(notes))


def _kd_series(runs, columns):
    cols = kd_columns(columns)
    if cols is None:
        return None, None, [], "summary.csv has no held-out KD column (kid_heldout or kd_<x>_heldout)"
    kd, std = cols
    series = ([_clean(runs)] if _clean(runs) else []) + _dust(runs)
    notes = [f"{r.name}: no {kd}" for r in series if r.get(kd) is None]
    if std not in columns:
        notes.append(f"no {std} column: std taken as 0")
    return kd, std, [r for r in series if r.get(kd) is not None], "; ".join(notes)


def _kd_text(kd, std, series) -> str:
    return f"{kd} by p: " + ", ".join(f"p={r.level:g}: {_f(r.get(kd))} ± {_f(r.get(std) or 0.0)}" for r in series)


def quality_cost(runs, columns, p) -> Result:
    n = p["n_std"]
    stds = "std(clean) + std(largest p)"
    t = "KD(largest p) - KD(clean) > " + (stds if n == 1 else f"{n:g} x ({stds})")
    kd, std, series, note = _kd_series(runs, columns)
    if kd is None:
        return _na(note, t)
    clean = next((r for r in series if r.kind == "clean"), None)
    dust = [r for r in series if r.kind == "dust"]
    if clean is None or not dust:
        return _na("needs the clean run and a dust run with " + kd + (f" ({note})" if note else ""), t)
    hi = dust[-1]
    gap = hi.get(kd) - clean.get(kd)
    noise = n * ((clean.get(std) or 0.0) + (hi.get(std) or 0.0))
    measured = f"{_kd_text(kd, std, series)}; difference {_f(gap)} vs {_f(noise)}"
    return Result(measured, t, _yes(gap > noise), note)


def quality_cost_rises_with_p(runs, columns, p) -> Result:
    n = p["n_std"]
    t = "each step in p: KD(next) >= KD(previous) - " + ("" if n == 1 else f"{n:g} x ") + "(their std sum)"
    kd, std, series, note = _kd_series(runs, columns)
    if kd is None:
        return _na(note, t)
    if sum(r.kind == "dust" for r in series) < 2:
        return _na(f"needs two or more dust runs with {kd}" + (f" ({note})" if note else ""), t)
    ok = all(
        b.get(kd) >= a.get(kd) - n * ((a.get(std) or 0.0) + (b.get(std) or 0.0)) for a, b in zip(series, series[1:])
    )
    return Result(_kd_text(kd, std, series), t, _yes(ok), note)


def _hf_ratio_claim(selected: list[Run], columns, ref: str, bound: float, upper: bool, what: str) -> Result:
    t = f"hf_samples {'<=' if upper else '>='} {bound:g} x {ref}"
    if not selected:
        return _na(f"no {what} run in this config", t)
    parts, notes, oks = [], [], []
    for r in selected:
        s, c = r.get("hf_samples"), r.get(ref)
        if s is None or c is None:
            notes.append(
                f"{r.name}: "
                + " and ".join(_missing(k, columns) for k, v in (("hf_samples", s), (ref, c)) if v is None)
            )
            continue
        oks.append(s <= bound * c if upper else s >= bound * c)
        parts.append(f"{r.name}: {_f(s)} vs {_f(c)} (ratio {_f(s / c) if c else '-'})")
    if not oks:
        return _na("; ".join(notes), t)
    return Result("hf_samples vs " + ref + ": " + "; ".join(parts), t, _yes(all(oks)), "; ".join(notes))


def tweedie_samples_clean(runs, columns, p) -> Result:
    sel = [r for r in runs if r.kind == "noise" and r.loss == "tweedie"]
    return _hf_ratio_claim(sel, columns, "hf_train_clean", p["max_ratio"], True, "Tweedie (noise, loss tweedie)")


def naive_reproduces_noise(runs, columns, p) -> Result:
    sel = [r for r in runs if r.kind == "noise" and r.loss == "edm"]
    return _hf_ratio_claim(sel, columns, "hf_train_noisy", p["min_ratio"], False, "naive (noise, loss edm)")


def attacks_extract_clean(runs, columns, p) -> Result:
    t = f">= {p['min_extracted']:.2f}"
    clean = _clean(runs)
    if clean is None:
        return _na("no clean run in this config", t)
    v = clean.get("inpaint_extracted")
    if v is None:
        return _na(_missing("inpaint_extracted", columns) + " for clean (attacks disabled?)", t)
    extra = [
        f"{c} = {_f(clean.get(c))}"
        for c in columns
        if re.fullmatch(r"inpaint_u\d+_extracted", c) and clean.get(c) is not None
    ]
    measured = f"inpaint_extracted = {_f(v)} (clean" + (f"; {', '.join(extra)}" if extra else "") + ")"
    return Result(measured, t, _yes(v >= p["min_extracted"]))


def attacks_fail_heavy(runs, columns, p) -> Result:
    cols = ("inpaint_extracted", "noise_extracted")
    t = f"{' and '.join(cols)} <= {p['max_extracted']:.2f}"
    heavy = [r for r in _dust(runs) if r.level >= p["min_p"]]
    if not heavy:
        return _na(f"no dust run with p >= {p['min_p']:g} in this config", t)
    parts, notes, oks = [], [], []
    for r in heavy:
        for c in cols:
            v = r.get(c)
            if v is None:
                notes.append(f"{r.name}: " + _missing(c, columns))
                continue
            oks.append(v <= p["max_extracted"])
            parts.append(f"{r.name} {c} = {_f(v)}")
    if not oks:
        return _na("; ".join(notes) + " (attacks disabled?)", t)
    return Result("; ".join(parts), t, _yes(all(oks)), "; ".join(notes))


CHECKS = {
    "clean_copies": clean_copies,
    "heavy_corruption_no_copies": heavy_corruption_no_copies,
    "copies_fall_with_p": copies_fall_with_p,
    "key_fails_heavy": key_fails_heavy,
    "quality_cost": quality_cost,
    "quality_cost_rises_with_p": quality_cost_rises_with_p,
    "tweedie_samples_clean": tweedie_samples_clean,
    "naive_reproduces_noise": naive_reproduces_noise,
    "attacks_extract_clean": attacks_extract_clean,
    "attacks_fail_heavy": attacks_fail_heavy,
}
assert set(CHECKS) == set(CLAIM_IDS)


def parse_overrides(items: list[str]) -> dict[str, dict[str, float]]:
    """`CLAIM.PARAM=VALUE` strings -> {claim: {param: value}}; unknown names raise, listing the valid ones."""
    out: dict[str, dict[str, float]] = {}
    by_id = {c.id: c for c in CLAIMS}
    for item in items:
        m = re.fullmatch(r"([a-z_0-9]+)\.([a-z_0-9]+)=(.+)", item.strip())
        if not m:
            raise ClaimsError(f"--set {item!r}: expected CLAIM.PARAM=VALUE, e.g. clean_copies.min_share=0.6")
        cid, param, value = m.groups()
        if cid not in by_id:
            raise ClaimsError(f"--set {item!r}: no claim {cid!r}; claims: {', '.join(CLAIM_IDS)}")
        if param not in by_id[cid].params:
            raise ClaimsError(
                f"--set {item!r}: claim {cid} has no parameter {param!r}; "
                f"it has {', '.join(by_id[cid].params) or 'none'}"
            )
        try:
            out.setdefault(cid, {})[param] = float(value)
        except ValueError:
            raise ClaimsError(f"--set {item!r}: {value!r} is not a number") from None
    return out


def evaluate(columns: list[str], runs: list[Run], overrides: dict | None = None) -> list[dict]:
    """One row (COLUMNS) per claim, in CLAIMS order."""
    rows = []
    for c in CLAIMS:
        params = {**c.params, **(overrides or {}).get(c.id, {})}
        r = CHECKS[c.id](runs, columns, params)
        rows.append(
            {
                "claim": c.id,
                "statement": c.statement,
                "source": c.source,
                "measured": r.measured,
                "threshold": r.threshold,
                "holds": r.holds,
                "note": r.note,
            }
        )
    return rows


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Atomically (a temporary file beside it, then a rename); torch-free, unlike ambient.utils."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cmd_claims(a) -> int:
    columns, runs = read_summary(a.summary)
    rows = evaluate(columns, runs, parse_overrides(a.set))
    write_csv(a.out, rows)
    counts = {k: sum(r["holds"] == k for r in rows) for k in ("yes", "no", "n/a")}
    print(
        f"wrote {a.out}: {len(rows)} claims from {len(runs)} runs of {a.summary} "
        f"({counts['yes']} hold, {counts['no']} do not, {counts['n/a']} n/a)"
    )
    for r in rows:
        extra = f" [{r['note']}]" if r["note"] else ""
        print(f"  {r['holds']:>3}  {r['claim']}: {r['measured'] or '-'} (threshold {r['threshold']}){extra}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m ambient.eval.claims`: `ambient claims`'s arguments (ambient.cli) at the top level."""
    from ..cli import standalone

    return standalone("claims", argv, "python -m ambient.eval.claims", __doc__)


if __name__ == "__main__":
    sys.exit(main())

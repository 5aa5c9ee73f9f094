"""ambient.eval.claims: the papers' claims against a summary.csv (synthetic files: holds, fails, n/a)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ambient.cli import main as cli_main
from ambient.eval import claims as C
from ambient.layout import share_column

RULER = "c2st_filterbank_heldout"


def run(name, kind, level, loss, share, c2st, inpaint, noise, hf, hf_noisy="", key=0.0, std=0.02):
    return {
        "model": f"faces24/{name}",
        "dataset": "faces24",
        "corruption": name,
        "kind": kind,
        "level": level,
        "loss": loss,
        "steps": 3000,
        "n_samples": 256,
        "extractor": "pixel",
        "sim_mean": 0.8,
        share_column(0.90): min(1.0, share + 0.1),
        C.SHARE: share,
        share_column(0.99): 0.0,
        "fd_filterbank_heldout": 1.0,
        "kd_filterbank_heldout": 0.01,
        "kd_filterbank_heldout_std": 0.001,
        RULER: c2st,
        f"{RULER}_std": std,
        "inpaint_u1_extracted": inpaint / 2,
        "inpaint_u5_extracted": inpaint,
        "inpaint_extracted": inpaint,
        "noise_extracted": noise,
        "key_extracted": key,
        "hf_samples": hf,
        "hf_train_clean": 0.023,
        "hf_train_noisy": hf_noisy,
    }


# The columns of the synthetic summaries: those run() writes (summary.py defines the real ones).
COLUMNS = list(run("clean", "clean", 0, "edm", 0.0, 0.5, 0.0, 0.0, 0.0))


def holding_runs():
    """Every claim holds (the finding is a finding)."""
    return [
        run("clean", "clean", 0, "edm", 0.672, 0.60, 0.68, 0.54, 0.017),
        run("dust-p0.20", "dust", 0.2, "ambient", 0.316, 0.70, 0.0, 0.0, 0.014, key=0.6),
        run("dust-p0.50", "dust", 0.5, "ambient", 0.0, 0.80, 0.0, 0.0, 0.014, key=0.0),
        run("dust-p0.50-naive", "dust", 0.5, "edm", 0.0, 0.95, 0.0, 0.0, 0.030),
        run("gauss", "gauss", 0, "gauss", 0.0, 0.97, 0.0, 0.0, 0.020),
        run("box-p0.40", "box", 0.4, "ambient", 0.07, 0.75, 0.0, 0.0, 0.015),
        run("noise-s0.40", "noise", 0.4, "tweedie", 0.0, 0.70, 0.0, 0.0, 0.012, 0.130),
        run("noise-s0.40-naive", "noise", 0.4, "edm", 0.0, 0.90, 0.0, 0.0, 0.086, 0.130),
    ]


def failing_runs():
    """Every claim fails: copies rise with p, no quality cost, ambient no better than its baselines,
    Tweedie noisy and no better than naive, naive smooth, attacks wrong."""
    return [
        run("clean", "clean", 0, "edm", 0.30, 0.96, 0.10, 0.0, 0.017),
        run("dust-p0.20", "dust", 0.2, "ambient", 0.10, 0.99, 0.0, 0.0, 0.014, key=0.1, std=0.005),
        run("dust-p0.50", "dust", 0.5, "ambient", 0.20, 0.90, 0.30, 0.20, 0.014, key=0.4, std=0.005),
        run("dust-p0.50-naive", "dust", 0.5, "edm", 0.0, 0.95, 0.0, 0.0, 0.030),
        run("gauss", "gauss", 0, "gauss", 0.0, 0.97, 0.0, 0.0, 0.020),
        run("noise-s0.40", "noise", 0.4, "tweedie", 0.0, 0.92, 0.0, 0.0, 0.040, 0.130),
        run("noise-s0.40-naive", "noise", 0.4, "edm", 0.0, 0.90, 0.0, 0.0, 0.030, 0.130),
    ]


def write_summary(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


PASSING_CHECK = {
    "extractor": "filterbank",
    "c2st_key": RULER,
    "c2st_consistent": True,
    "c2st_fails": [],
    "disturbances": {
        "noise": {"levels": [0, 0.1, 0.4], "c2st": [0.55, 0.75, 0.99], "c2st_rises": True},
        "blur": {"levels": [0, 1.0, 2.0], "c2st": [0.55, 0.97, 1.0], "c2st_rises": True},
    },
}


def claims_of(
    tmp_path: Path, rows: list[dict], columns: list[str] = COLUMNS, *extra: str, check: dict | None = PASSING_CHECK
) -> dict[str, dict]:
    summary = write_summary(tmp_path / "summary.csv", rows, columns)
    out = tmp_path / "metrics" / "claims.csv"
    if check is not None:
        (tmp_path / "ruler_check.json").write_text(json.dumps(check))
        extra = ("--ruler-check", str(tmp_path / "ruler_check.json"), *extra)
    assert cli_main(["claims", "--summary", str(summary), "--out", str(out), *extra]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == C.COLUMNS
        got = list(reader)
    assert [r["claim"] for r in got] == list(C.CLAIM_IDS)  # one row per claim, in the table's order
    assert all(r["statement"] and r["source"] and r["threshold"] for r in got)
    return {r["claim"]: r for r in got}


def test_claim_table_is_complete():
    assert len(C.CLAIMS) == 12 and len(set(C.CLAIM_IDS)) == 12 and set(C.CHECKS) == set(C.CLAIM_IDS)
    assert all(c.params and c.basis for c in C.CLAIMS)  # a threshold `--set` can override, and its basis
    logged = {e.claim for e in C.CLAIMS_LOG}
    assert {"key_peak", "quality_cost", "tweedie_samples_clean", "ambient_learns"} <= logged
    assert all(e.date and e.old and e.new and e.reason for e in C.CLAIMS_LOG)
    md = C.log_markdown()
    assert md.count("\n| 20") == len(C.CLAIMS_LOG) and "AFTER seeing the run" in md


def test_the_claims_log_doc_is_the_registry():
    assert (Path(__file__).parents[1] / "docs" / "claims-log.md").read_text() == C.log_markdown()


def test_every_claim_holds_on_a_run_that_reproduces_the_papers(tmp_path, capsys):
    got = claims_of(tmp_path, holding_runs())
    assert {k: r["holds"] for k, r in got.items()} == {k: "finding" if k == "key_peak" else "yes" for k in C.CLAIM_IDS}
    assert got["clean_copies"]["measured"] == "share_gt_0.95 = 0.672 (clean)"
    assert got["clean_copies"]["threshold"] == ">= 0.50"
    assert got["heavy_corruption_no_copies"]["measured"] == "share_gt_0.95 = 0 (dust-p0.50)"
    # the naive baseline on dust data is not an ambient dust model
    assert got["copies_fall_with_p"]["measured"] == "share_gt_0.95 by p: p=0: 0.672, p=0.2: 0.316, p=0.5: 0"
    assert got["quality_cost"]["measured"].startswith(f"{RULER} by p: p=0: 0.600 ± 0.0200")
    assert "dust-p0.50 0.800 ± 0.0200 vs dust-p0.50-naive 0.950 ± 0.0200: closer" in got["ambient_learns"]["measured"]
    assert "box-p0.40 0.750 ± 0.0200 vs gauss 0.970" in got["ambient_learns"]["measured"]
    assert "box-p0.40: no naive model at its p" in got["ambient_learns"]["note"]
    assert "noise-s0.40: 0.0120 vs 0.0230" in got["tweedie_samples_clean"]["measured"]
    assert "noise-s0.40 0.700 ± 0.0200 vs noise-s0.40-naive 0.900" in got["tweedie_samples_clean"]["measured"]
    assert "noise-s0.40-naive: 0.0860 vs 0.130" in got["naive_reproduces_noise"]["measured"]
    assert got["attacks_extract_clean"]["measured"] == (
        "inpaint_u1_extracted = 0.340, inpaint_u5_extracted = 0.680 (clean)"
    )
    assert got["key_peak"]["measured"] == "key_extracted by p: p=0.2: 0.600, p=0.5: 0"
    assert got["key_peak"]["note"] == "peak 0.600 at p=0.2"
    assert got["quality_cost"]["changed"].startswith("2026-12-03: held-out KD")
    out = capsys.readouterr().out
    assert "11 hold, 0 do not, 0 n/a, 1 findings" in out
    assert got["ruler_sees_damage"]["measured"] == (
        f"{RULER} by level: noise 0/0.1/0.4: 0.550 0.750 0.990; blur 0/1/2: 0.550 0.970 1.00"
    )


def test_every_claim_fails_and_the_exit_status_is_still_0(tmp_path, capsys):
    failing = {**PASSING_CHECK, "c2st_consistent": False, "c2st_fails": ["noise"]}
    failing["disturbances"] = {
        **failing["disturbances"],
        "noise": {**failing["disturbances"]["noise"], "c2st_rises": False},
    }
    got = claims_of(tmp_path, failing_runs(), check=failing)
    quality = {c.id for c in C.CLAIMS if c.quality}
    assert {k: r["holds"] for k, r in got.items()} == {
        k: "finding" if k == "key_peak" else "n/a" if k in quality else "no" for k in C.CLAIM_IDS
    }
    assert got["ruler_sees_damage"]["note"] == "extractor filterbank; fails: noise"
    # with a ruler that passes, the quality claims fail on their own numbers
    got = claims_of(tmp_path, failing_runs())
    assert {k: r["holds"] for k, r in got.items()} == {
        k: "finding" if k == "key_peak" else "yes" if k == "ruler_sees_damage" else "no" for k in C.CLAIM_IDS
    }
    assert "1 hold, 10 do not" in capsys.readouterr().out
    assert "rises from p=0.2 to p=0.5" in got["key_peak"]["note"]


def test_an_attack_claim_through_one_variant_says_so(tmp_path):
    rows = holding_runs()
    rows[0]["inpaint_u1_extracted"], rows[0]["inpaint_u5_extracted"] = 0.05, 0.75
    got = claims_of(tmp_path, rows)["attacks_extract_clean"]
    assert got["holds"] == "yes" and got["note"] == "passes through inpaint_u5_extracted only"
    rows[2]["inpaint_u1_extracted"] = 0.10  # one variant extracts from the p = 0.5 model: the claim fails
    got = claims_of(tmp_path, rows)["attacks_fail_heavy"]
    assert got["holds"] == "no" and "dust-p0.50 inpaint_u1_extracted = 0.100" in got["measured"]


def test_a_ruler_that_fails_its_disturbance_test_backs_no_claim(tmp_path):
    summary = write_summary(tmp_path / "summary.csv", holding_runs())
    check = tmp_path / "ruler_check.json"
    broken = {**PASSING_CHECK["disturbances"]["noise"], "c2st_rises": False}
    check.write_text(json.dumps({**PASSING_CHECK, "disturbances": {**PASSING_CHECK["disturbances"], "noise": broken}}))
    out = tmp_path / "claims.csv"
    assert cli_main(["claims", "--summary", str(summary), "--out", str(out), "--ruler-check", str(check)]) == 0
    got = {r["claim"]: r for r in csv.DictReader(open(out, newline="", encoding="utf-8"))}
    quality = {c.id for c in C.CLAIMS if c.quality}
    assert quality == {"quality_cost", "quality_cost_rises_with_p", "ambient_learns", "tweedie_samples_clean"}
    for cid in quality:
        assert got[cid]["holds"] == "n/a" and "fails its disturbance test (" in got[cid]["note"], cid
        assert "fails: noise" in got[cid]["note"], cid
    assert got["clean_copies"]["holds"] == "yes"
    check.write_text(json.dumps(PASSING_CHECK))
    assert cli_main(["claims", "--summary", str(summary), "--out", str(out), "--ruler-check", str(check)]) == 0
    got = {r["claim"]: r for r in csv.DictReader(open(out, newline="", encoding="utf-8"))}
    assert all(got[cid]["holds"] == "yes" for cid in quality)


def test_claims_without_their_runs_are_na_with_a_reason(tmp_path):
    only_clean = [run("clean", "clean", 0, "edm", 0.9, 0.6, 0.5, 0.5, 0.02)]
    got = claims_of(tmp_path, only_clean, check=None)
    assert got["clean_copies"]["holds"] == "yes" and got["attacks_extract_clean"]["holds"] == "yes"
    assert "no ruler check given" in got["ruler_sees_damage"]["note"]
    for cid in C.CLAIM_IDS:
        if cid not in ("clean_copies", "attacks_extract_clean"):
            assert got[cid]["holds"] == "n/a", cid
            assert got[cid]["note"], cid
    assert "no dust run with p >= 0.5" in got["heavy_corruption_no_copies"]["note"]
    assert "no Tweedie" in got["tweedie_samples_clean"]["note"]
    assert "naive" in got["naive_reproduces_noise"]["note"]
    assert "Gaussian baseline" in got["ambient_learns"]["note"]

    no_clean = [run("box-p0.40", "box", 0.4, "ambient", 0.1, 0.7, 0.0, 0.0, 0.02)]
    got = claims_of(tmp_path, no_clean, check=None)
    assert {r["holds"] for r in got.values()} == {"n/a"}
    assert "no clean run" in got["clean_copies"]["note"]
    # the Tweedie model without its naive baseline: the quality half cannot be tested
    rows = [r for r in holding_runs() if r["corruption"] != "noise-s0.40-naive"]
    got = claims_of(tmp_path, rows)["tweedie_samples_clean"]
    assert got["holds"] == "n/a" and "needs the naive baseline" in got["note"]


def test_missing_columns_are_na_naming_the_column(tmp_path):
    columns = [c for c in COLUMNS if "heldout" not in c and not c.startswith(("hf_", "inpaint", "noise_"))]
    got = claims_of(tmp_path, holding_runs(), columns)
    for cid in ("quality_cost", "quality_cost_rises_with_p", "ambient_learns"):
        assert got[cid]["holds"] == "n/a" and RULER in got[cid]["note"], got[cid]
    assert got["attacks_extract_clean"]["holds"] == "n/a"
    assert "no `inpaint_extracted` column" in got["attacks_extract_clean"]["note"]
    assert got["tweedie_samples_clean"]["holds"] == "n/a" and "hf_samples" in got["tweedie_samples_clean"]["note"]
    assert got["clean_copies"]["holds"] == "yes"

    # one attack column missing: the claim rests on the others, and says so; empty cells count as missing
    rows = holding_runs()
    rows[0]["hf_samples"] = ""
    columns = [c for c in COLUMNS if c != "noise_extracted"]
    got = claims_of(tmp_path, rows, columns)
    assert (
        got["attacks_fail_heavy"]["holds"] == "yes" and "noise_extracted" not in got["attacks_fail_heavy"]["measured"]
    )
    assert got["tweedie_samples_clean"]["holds"] == "yes"


def test_tolerances_and_std(tmp_path):
    rows = holding_runs()
    rows[1]["share_gt_0.95"], rows[2]["share_gt_0.95"] = 0.30, 0.315  # +0.015: within the 0.02 tolerance
    rows[2][RULER] = 0.67  # below p=0.2's 0.70 but within their std sum 0.04
    got = claims_of(tmp_path, rows)
    assert got["copies_fall_with_p"]["holds"] == "yes" and got["quality_cost_rises_with_p"]["holds"] == "yes"
    rows[2]["share_gt_0.95"] = 0.33  # +0.03
    rows[2][RULER] = 0.65
    got = claims_of(tmp_path, rows)
    assert got["copies_fall_with_p"]["holds"] == "no" and got["quality_cost_rises_with_p"]["holds"] == "no"
    assert got["heavy_corruption_no_copies"]["holds"] == "no"

    # the gap must exceed the runs' std combined
    rows = holding_runs()
    rows[0][RULER], rows[0][f"{RULER}_std"] = 0.77, 0.02  # 0.80 - 0.77 = 0.03 < 0.04
    got = claims_of(tmp_path, rows)
    assert got["quality_cost"]["holds"] == "no" and "difference 0.0300 vs 0.0400" in got["quality_cost"]["measured"]
    rows = holding_runs()
    rows[2][RULER] = 0.92  # the p = 0.5 model within the spread of its naive baseline (0.95): not learnt
    got = claims_of(tmp_path, rows)["ambient_learns"]
    assert got["holds"] == "no" and "vs dust-p0.50-naive 0.950 ± 0.0200: not closer" in got["measured"]
    # fewer than two dust runs: the monotone claim has nothing to order
    got = claims_of(tmp_path, [r for r in holding_runs() if r["corruption"] != "dust-p0.20"])
    assert got["quality_cost_rises_with_p"]["holds"] == "n/a" and got["quality_cost"]["holds"] == "yes"


def test_thresholds_can_be_overridden(tmp_path):
    got = claims_of(
        tmp_path,
        holding_runs(),
        COLUMNS,
        "--set",
        "clean_copies.min_share=0.7",
        "--set",
        "tweedie_samples_clean.max_ratio=0.5",
    )
    assert got["clean_copies"]["holds"] == "no" and got["clean_copies"]["threshold"] == ">= 0.70"
    assert got["tweedie_samples_clean"]["holds"] == "no"
    assert got["heavy_corruption_no_copies"]["holds"] == "yes"
    assert C.CLAIMS[1].params == {"min_share": 0.50}  # the table itself is untouched


@pytest.mark.parametrize(
    "bad, message",
    [
        ("clean_copies.nope=1", "has no parameter 'nope'"),
        ("nope.min_share=1", "no claim 'nope'"),
        ("clean_copies.min_share=x", "is not a number"),
        ("clean_copies", "expected CLAIM.PARAM=VALUE"),
    ],
)
def test_bad_override_is_a_one_line_error(tmp_path, capsys, bad, message):
    summary = write_summary(tmp_path / "summary.csv", holding_runs())
    assert cli_main(["claims", "--summary", str(summary), "--out", str(tmp_path / "c.csv"), "--set", bad]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.csv").exists()


def test_missing_summary_names_the_file_and_the_command(tmp_path, capsys):
    assert cli_main(["claims", "--summary", str(tmp_path / "summary.csv"), "--out", str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'summary.csv'}: not found" in err and "snakemake" in err


def test_run_names_alone_give_kind_level_and_loss(tmp_path):
    """An older summary.csv without kind/level/loss columns: read from the run names."""
    rows = holding_runs()
    columns = [c for c in COLUMNS if c not in ("kind", "level", "loss")]
    _, runs = C.read_summary(write_summary(tmp_path / "s.csv", rows, columns))
    assert [(r.kind, r.level, r.loss) for r in runs] == [
        ("clean", 0.0, "edm"),
        ("dust", 0.2, "ambient"),
        ("dust", 0.5, "ambient"),
        ("dust", 0.5, "edm"),
        ("gauss", 0.0, "gauss"),
        ("box", 0.4, "ambient"),
        ("noise", 0.4, "tweedie"),
        ("noise", 0.4, "edm"),
    ]
    with pytest.raises(C.ClaimsError, match="two rows for run 'clean'"):
        C.read_summary(write_summary(tmp_path / "s.csv", [rows[0], rows[0]]))


def test_importable_without_torch():
    code = (
        "import sys, ambient.eval.claims, ambient.pipeline.readme_tables; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_ruler_row_recomputes_its_verdict_from_the_levels(tmp_path):
    """With the stds recorded, ruler_sees_damage decides from the numbers, not from the check's own flag."""
    dip = {"levels": [0, 0.1, 0.4], "c2st": [0.55, 0.80, 0.70], "c2st_std": [0.02, 0.02, 0.02], "c2st_rises": True}
    flat = {"levels": [0, 0.1, 0.4], "c2st": [0.55, 0.56, 0.57], "c2st_std": [0.02, 0.02, 0.02], "c2st_rises": True}
    rising = {"levels": [0, 0.1, 0.4], "c2st": [0.55, 0.54, 0.90], "c2st_std": [0.02, 0.02, 0.02], "c2st_rises": False}
    for disturbance, verdict in ((dip, "no"), (flat, "no"), (rising, "yes")):
        check = {**PASSING_CHECK, "disturbances": {"noise": disturbance}}
        got = claims_of(tmp_path, holding_runs(), COLUMNS, check=check)
        assert got["ruler_sees_damage"]["holds"] == verdict, disturbance
        assert (got["ambient_learns"]["holds"] == "n/a") == (verdict == "no")

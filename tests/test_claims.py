"""ambient.eval.claims: the papers' claims against a summary.csv (synthetic files: holds, fails, n/a)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from ambient.eval import claims as C

COLUMNS = [
    "model",
    "dataset",
    "corruption",
    "kind",
    "level",
    "loss",
    "steps",
    "n_samples",
    "extractor",
    "sim_mean",
    "share_gt_0.90",
    "share_gt_0.95",
    "share_gt_0.99",
    "fd_filterbank_heldout",
    "kd_filterbank_heldout",
    "kd_filterbank_heldout_std",
    "fd_pixel_heldout",
    "kd_pixel_heldout",
    "kd_pixel_heldout_std",
    "inpaint_u1_extracted",
    "inpaint_u5_extracted",
    "inpaint_extracted",
    "noise_extracted",
    "key_extracted",
    "hf_samples",
    "hf_train_clean",
    "hf_train_noisy",
]


def run(name, kind, level, loss, share, kd, inpaint, noise, hf, hf_noisy="", key=0.0):
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
        "share_gt_0.90": min(1.0, share + 0.1),
        "share_gt_0.95": share,
        "share_gt_0.99": 0.0,
        "fd_filterbank_heldout": kd * 30,
        "kd_filterbank_heldout": kd,
        "kd_filterbank_heldout_std": 0.001,
        "fd_pixel_heldout": 1.0,
        "kd_pixel_heldout": 0.5,
        "kd_pixel_heldout_std": 0.01,
        "inpaint_u1_extracted": inpaint / 2,
        "inpaint_u5_extracted": inpaint,
        "inpaint_extracted": inpaint,
        "noise_extracted": noise,
        "key_extracted": key,
        "hf_samples": hf,
        "hf_train_clean": 0.023,
        "hf_train_noisy": hf_noisy,
    }


def holding_runs():
    """The README's run: every claim holds."""
    return [
        run("clean", "clean", 0, "edm", 0.672, 0.0007, 0.68, 0.54, 0.017),
        run("dust-p0.20", "dust", 0.2, "ambient", 0.316, 0.0185, 0.0, 0.0, 0.014, key=0.6),
        run("dust-p0.50", "dust", 0.5, "ambient", 0.0, 0.0348, 0.0, 0.0, 0.014, key=0.0),
        run("box-p0.40", "box", 0.4, "ambient", 0.07, 0.0137, 0.0, 0.0, 0.015),
        run("noise-s0.40", "noise", 0.4, "tweedie", 0.0, 0.0049, 0.0, 0.0, 0.012, 0.130),
        run("noise-s0.40-naive", "noise", 0.4, "edm", 0.0, 0.0092, 0.0, 0.0, 0.086, 0.130),
    ]


def failing_runs():
    """Every claim fails: copies rise with p, quality does not pay, Tweedie noisy, naive smooth, attacks wrong."""
    return [
        run("clean", "clean", 0, "edm", 0.30, 0.0300, 0.10, 0.0, 0.017),
        run("dust-p0.20", "dust", 0.2, "ambient", 0.10, 0.0400, 0.0, 0.0, 0.014, key=0.1),
        run("dust-p0.50", "dust", 0.5, "ambient", 0.20, 0.0100, 0.30, 0.20, 0.014, key=0.4),
        run("noise-s0.40", "noise", 0.4, "tweedie", 0.0, 0.0049, 0.0, 0.0, 0.040, 0.130),
        run("noise-s0.40-naive", "noise", 0.4, "edm", 0.0, 0.0092, 0.0, 0.0, 0.030, 0.130),
    ]


def write_summary(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def claims_of(tmp_path: Path, rows: list[dict], columns: list[str] = COLUMNS, *extra: str) -> dict[str, dict]:
    summary = write_summary(tmp_path / "summary.csv", rows, columns)
    out = tmp_path / "metrics" / "claims.csv"
    assert C.main(["--summary", str(summary), "--out", str(out), *extra]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == C.COLUMNS
        got = list(reader)
    assert [r["claim"] for r in got] == list(C.CLAIM_IDS)  # one row per claim, in the table's order
    assert all(r["statement"] and r["source"] and r["threshold"] for r in got)
    return {r["claim"]: r for r in got}


def test_claim_table_is_complete():
    assert len(C.CLAIMS) == 10 and len(set(C.CLAIM_IDS)) == 10 and set(C.CHECKS) == set(C.CLAIM_IDS)
    assert all(c.params for c in C.CLAIMS)  # every claim has a threshold `--set` can override


def test_every_claim_holds_on_the_readme_run(tmp_path, capsys):
    got = claims_of(tmp_path, holding_runs())
    assert {k: r["holds"] for k, r in got.items()} == {k: "yes" for k in C.CLAIM_IDS}
    assert got["clean_copies"]["measured"] == "share_gt_0.95 = 0.672 (clean)"
    assert got["clean_copies"]["threshold"] == ">= 0.50"
    assert got["heavy_corruption_no_copies"]["measured"] == "share_gt_0.95 = 0 (dust-p0.50)"
    assert got["copies_fall_with_p"]["measured"] == "share_gt_0.95 by p: p=0: 0.672, p=0.2: 0.316, p=0.5: 0"
    assert got["quality_cost"]["measured"].startswith("kd_filterbank_heldout by p: p=0: 0.000700 ± 0.00100")
    assert "noise-s0.40: 0.0120 vs 0.0230" in got["tweedie_samples_clean"]["measured"]
    assert "noise-s0.40-naive: 0.0860 vs 0.130" in got["naive_reproduces_noise"]["measured"]
    assert "inpaint_u1_extracted = 0.340" in got["attacks_extract_clean"]["measured"]
    out = capsys.readouterr().out
    assert got["key_fails_heavy"]["measured"] == "key_extracted by p: p=0.2: 0.600, p=0.5: 0"
    assert "10 hold, 0 do not, 0 n/a" in out
    assert sum(line.startswith("  yes  ") for line in out.splitlines()) == 10  # one line per claim


def test_every_claim_fails_and_the_exit_status_is_still_0(tmp_path, capsys):
    got = claims_of(tmp_path, failing_runs())
    assert {k: r["holds"] for k, r in got.items()} == {k: "no" for k in C.CLAIM_IDS}
    assert "0 hold, 10 do not" in capsys.readouterr().out


def test_claims_without_their_runs_are_na_with_a_reason(tmp_path):
    only_clean = [run("clean", "clean", 0, "edm", 0.9, 0.001, 0.5, 0.5, 0.02)]
    got = claims_of(tmp_path, only_clean)
    assert got["clean_copies"]["holds"] == "yes" and got["attacks_extract_clean"]["holds"] == "yes"
    for cid in C.CLAIM_IDS:
        if cid not in ("clean_copies", "attacks_extract_clean"):
            assert got[cid]["holds"] == "n/a", cid
            assert got[cid]["note"], cid
    assert "no dust run with p >= 0.5" in got["heavy_corruption_no_copies"]["note"]
    assert "no Tweedie" in got["tweedie_samples_clean"]["note"]
    assert "naive" in got["naive_reproduces_noise"]["note"]

    no_clean = [run("box-p0.40", "box", 0.4, "ambient", 0.1, 0.01, 0.0, 0.0, 0.02)]
    got = claims_of(tmp_path, no_clean)
    assert {r["holds"] for r in got.values()} == {"n/a"}
    assert "no clean run" in got["clean_copies"]["note"]


def test_missing_columns_are_na_naming_the_column(tmp_path):
    columns = [c for c in COLUMNS if "heldout" not in c and not c.startswith(("hf_", "inpaint", "noise_"))]
    got = claims_of(tmp_path, holding_runs(), columns)
    for cid in ("quality_cost", "quality_cost_rises_with_p"):
        assert got[cid]["holds"] == "n/a" and "held-out KD" in got[cid]["note"], got[cid]
    assert got["attacks_extract_clean"]["holds"] == "n/a"
    assert "no `inpaint_extracted` column" in got["attacks_extract_clean"]["note"]
    assert got["tweedie_samples_clean"]["holds"] == "n/a" and "hf_samples" in got["tweedie_samples_clean"]["note"]
    assert got["clean_copies"]["holds"] == "yes"

    # one attack column missing: the claim rests on the other, and says so; empty cells count as missing
    rows = holding_runs()
    rows[0]["hf_samples"] = ""
    columns = [c for c in COLUMNS if c != "noise_extracted"]
    got = claims_of(tmp_path, rows, columns)
    assert got["attacks_fail_heavy"]["holds"] == "yes" and "noise_extracted" in got["attacks_fail_heavy"]["note"]
    assert got["tweedie_samples_clean"]["holds"] == "yes"


def test_tolerances_and_std(tmp_path):
    rows = holding_runs()
    rows[1]["share_gt_0.95"], rows[2]["share_gt_0.95"] = 0.30, 0.315  # +0.015: within the 0.02 tolerance
    rows[2]["kd_filterbank_heldout"] = 0.0175  # below p=0.2's 0.0185 but within their std sum 0.002
    got = claims_of(tmp_path, rows)
    assert got["copies_fall_with_p"]["holds"] == "yes" and got["quality_cost_rises_with_p"]["holds"] == "yes"
    rows[2]["share_gt_0.95"] = 0.33  # +0.03
    rows[2]["kd_filterbank_heldout"] = 0.0150
    got = claims_of(tmp_path, rows)
    assert got["copies_fall_with_p"]["holds"] == "no" and got["quality_cost_rises_with_p"]["holds"] == "no"
    assert got["heavy_corruption_no_copies"]["holds"] == "no"

    # the gap must exceed the runs' std combined
    rows = holding_runs()
    rows[0]["kd_filterbank_heldout"], rows[0]["kd_filterbank_heldout_std"] = 0.030, 0.004
    rows[2]["kd_filterbank_heldout_std"] = 0.002  # 0.0348 - 0.030 = 0.0048 < 0.006
    got = claims_of(tmp_path, rows)
    assert got["quality_cost"]["holds"] == "no" and "difference 0.00480 vs 0.00600" in got["quality_cost"]["measured"]
    # fewer than two dust runs: the monotone claim has nothing to order
    got = claims_of(tmp_path, [r for r in holding_runs() if r["corruption"] != "dust-p0.20"])
    assert got["quality_cost_rises_with_p"]["holds"] == "n/a" and got["quality_cost"]["holds"] == "yes"
    assert got["key_fails_heavy"]["holds"] == "yes"  # the p = 0.5 run is still there
    got = claims_of(tmp_path, [r for r in holding_runs() if r["corruption"] != "dust-p0.50"])
    assert got["key_fails_heavy"]["holds"] == "n/a" and "p >= 0.5" in got["key_fails_heavy"]["note"]

    # the mask key: a bound at p >= 0.5; a rise at smaller p is noted, not failed
    rows = holding_runs()
    rows[1]["key_extracted"], rows[2]["key_extracted"] = 0.03, 0.045  # +0.015, and below 0.05
    got = claims_of(tmp_path, rows)["key_fails_heavy"]
    assert got["holds"] == "yes" and got["note"] == ""
    rows[1]["key_extracted"], rows[2]["key_extracted"] = 0.6, 0.07  # falls, but 0.07 > 0.05 at p = 0.5
    assert claims_of(tmp_path, rows)["key_fails_heavy"]["holds"] == "no"
    rows[1]["key_extracted"], rows[2]["key_extracted"] = 0.0, 0.03  # below the bound, rises by 0.03
    got = claims_of(tmp_path, rows)["key_fails_heavy"]
    assert got["holds"] == "yes" and got["note"] == "not monotone in p: rises from p=0.2 to p=0.5"


def test_kid_is_preferred_to_the_offline_extractors(tmp_path):
    rows = holding_runs()
    for r in rows:
        r["kid_heldout"], r["kid_heldout_std"], r["fid_heldout"] = 0.01, 0.001, 5.0  # flat: no quality cost
    got = claims_of(tmp_path, rows, [*COLUMNS, "fid_heldout", "kid_heldout", "kid_heldout_std"])
    assert got["quality_cost"]["measured"].startswith("kid_heldout by p:")
    assert got["quality_cost"]["holds"] == "no"
    # feature-based before raw pixels, whatever the column order; an unknown extractor still counts
    assert C.kd_columns(["kd_pixel_heldout_std", "kd_pixel_heldout", "kd_filterbank_heldout"]) == (
        "kd_filterbank_heldout",
        "kd_filterbank_heldout_std",
    )
    assert C.kd_columns(["kd_pixel_heldout", "kd_dinov2_heldout", "kd_filterbank_heldout"])[0] == "kd_dinov2_heldout"
    assert C.kd_columns(["kd_pixel_heldout", "kd_mine_heldout"])[0] == "kd_pixel_heldout"
    assert C.kd_columns(["fd_pixel"]) is None


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
    assert C.CLAIMS[0].params == {"min_share": 0.50}  # the table itself is untouched


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
    assert C.main(["--summary", str(summary), "--out", str(tmp_path / "c.csv"), "--set", bad]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.csv").exists()


def test_missing_summary_names_the_file_and_the_command(tmp_path, capsys):
    assert C.main(["--summary", str(tmp_path / "summary.csv"), "--out", str(tmp_path / "c.csv")]) == 2
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

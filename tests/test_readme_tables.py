"""ambient.pipeline.readme_tables: the generated blocks of README.md and docs/*.md, and those blocks
against the recorded run.

The blocks are rendered from synthetic files into a temporary README (and docs/ beside it);
`--check` passes after a write and fails after a hand edit, for a block in no file, and for a
block in two places. Two tests compare the repository's blocks with the run that dvc.lock records
(results/ is not in git: DVC holds it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from test_claims import holding_runs, write_summary

from ambient.cli import main as cli_main
from ambient.pipeline import readme_tables as RT

REPO = Path(__file__).resolve().parents[1]
SUMMARY, CLAIMS = "results/metrics/summary.csv", "results/metrics/claims.csv"

BENCH = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"  # Snakemake's header
    "{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t1\n"
)


BENCH_JSON = {
    "threads": 2,
    "date": "2026-11-28",
    "cpu": "Test CPU",
    "gemm[fp32] GFLOP/s": 200.0,
    "gemm[bf16] GFLOP/s": 400.0,
    "train step GFLOP": 26.8,
    "sample 256 GFLOP": 2500.0,
    "train[plain] img/s": 100.0,
    "train[plain] GFLOP/s": 83.75,
    "train[plain] of fp32 peak": 0.41875,
    "train[bf16] img/s": 150.0,
    "train[bf16] GFLOP/s": 125.6,
    "train[bf16] of bf16 peak": 0.314,
    "sample[bf16] 256 s": 10.0,
    "sample[bf16] GFLOP/s": 250.0,
    "sample[bf16] of bf16 peak": 0.625,
}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def project(tmp_path):
    """A README with the three blocks' markers, summary.csv, claims.csv and benchmark files."""
    metrics = tmp_path / "results" / "metrics"
    metrics.mkdir(parents=True)
    write_summary(metrics / "summary.csv", holding_runs())
    assert cli_main(["claims", "--summary", str(metrics / "summary.csv"), "--out", str(metrics / "claims.csv")]) == 0
    for rel, s, rss in [
        ("faces24/clean/train.tsv", 843.2, 612.5),
        ("faces24/dust-p0.50/train.tsv", 402.1, 520),
        ("faces24/clean/neighbors_pixel.tsv", 5.5, "NA"),
        ("faces24/ref_pixel.tsv", 2.0, 300),
        ("claims.tsv", 0.4, 30.1),
    ]:
        p = tmp_path / "benchmarks" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(BENCH.format(s=s, rss=rss))
    (tmp_path / "benchmarks" / "bench.json").write_text(json.dumps(BENCH_JSON))
    readme = tmp_path / "README.md"
    readme.write_text(
        "# title\n\nHand-written text stays.\n\n"
        + "".join(f"{RT.begin_marker(b)}\nplaceholder\n{RT.end_marker(b)}\n\nbetween\n\n" for b in RT.BLOCKS)
        + "the end\n",
        encoding="utf-8",
    )
    return tmp_path


def tables(project: Path, *args: str) -> int:
    return RT.main(
        [
            "--readme",
            str(project / "README.md"),
            "--summary",
            str(project / SUMMARY),
            "--claims",
            str(project / CLAIMS),
            "--benchmarks",
            str(project / "benchmarks"),
            *args,
        ]
    )


def test_write_then_check_then_hand_edit(project, capsys):
    readme = project / "README.md"
    assert tables(project, "--check") == 1  # placeholders differ
    assert readme.read_text().count("placeholder") == len(RT.BLOCKS)  # --check writes nothing
    assert tables(project) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# title\n\nHand-written text stays.\n\n") and text.endswith("the end\n")
    assert text.count("between") == len(RT.BLOCKS) and "placeholder" not in text
    capsys.readouterr()
    assert tables(project, "--check") == 0
    assert "agree with the files" in capsys.readouterr().out

    # results: labels, 3 significant digits, held-out columns named, provenance
    body = RT.find_blocks(text)["results"]
    assert f"<!-- source: {SUMMARY} md5={md5(project / SUMMARY)} -->" in body
    assert "Dataset `faces24`, 256 samples per model" in body and "held-out split" in body
    assert "extractor `filterbank` (columns `kd_filterbank_heldout`, `fd_filterbank_heldout`)" in body
    assert (
        "| model | steps | share > 0.95 | share > 0.90 | mean top-1 sim | C2ST ± std (ruler) | held-out KD ± std | "
        "held-out FD | "
        "inpaint extracted U=1 | inpaint extracted U=5 | noise extracted | mask-key extracted | HF energy of samples |"
    ) in body
    assert (
        "| clean | 3000 | 0.672 | 0.772 | 0.800 | 0.600 ± 0.0200 | 0.0100 ± 0.00100 | 1.00 | 0.340 | 0.680 | 0.540 | 0 "
        "| 0.0170 |" in body
    )
    assert "Mask key: sampling from noise with a training image's own training mask" in body
    labels = ("| ambient dust, p=0.20 |", "| ambient box, p=0.40 |", "| noisy sigma_n=0.40, Tweedie (ours) |")
    for label in (*labels, "| noisy sigma_n=0.40, naive (EDM loss) |", "| naive dust p=0.50 (EDM loss) |"):
        assert label in body, label

    claims = RT.find_blocks(text)["claims"]
    assert f"<!-- source: {CLAIMS} md5={md5(project / CLAIMS)} -->" in claims
    assert "10 of 11 claims hold here (0 do not, 1 n/a" in claims and claims.count("| yes |") == 10
    assert "1 finding reported untested" in claims and "| changed (claims log) |" in claims

    timings = RT.find_blocks(text)["timings"]
    assert "files=5 md5=" in timings
    rule_rows = [line for line in timings.splitlines() if line.startswith("| `") and "tsv" not in line]
    assert rule_rows[0] == "| `train` | 2 | 1250 | 612 |" and rule_rows[-1] == "| `claims` | 1 | 0.400 | 30.1 |"
    assert [r.split("|")[1].strip() for r in rule_rows] == ["`train`", "`neighbors_pixel`", "`ref_pixel`", "`claims`"]
    assert "| `faces24/clean/train.tsv` | 843 | 612 |" in timings
    assert "| `faces24/clean/neighbors_pixel.tsv` | 5.50 | - |" in timings

    speed = RT.find_blocks(text)["speed"]
    assert "`make bench` on Test CPU, 2 threads" in speed and "GEMM peak 200 GFLOP/s fp32, 400 GFLOP/s bf16" in speed
    assert "| training step `bf16` | 150 img/s | 1.50x | 126 | 31% of bf16 |" in speed
    assert "| sampling `bf16` | 10.0 s for 256 samples | - | 250 | 62% of bf16 |" in speed

    # a hand edit of one number: --check names the block and exits 1; a rewrite restores it
    readme.write_text(text.replace("| clean | 3000 | 0.672 |", "| clean | 3000 | 0.700 |"), encoding="utf-8")
    capsys.readouterr()
    assert tables(project, "--check") == 1
    err = capsys.readouterr().err
    assert "block `results` differs" in err and "0.700" in err and "block `claims`" not in err
    assert tables(project) == 0 and readme.read_text(encoding="utf-8") == text


def test_check_fails_when_the_source_file_changes(project, capsys):
    assert tables(project) == 0
    rows = holding_runs()
    rows[0]["share_gt_0.95"] = 0.5
    write_summary(project / SUMMARY, rows)
    assert tables(project, "--check") == 1
    assert "block `results` differs" in capsys.readouterr().err


def test_missing_source_is_one_line_naming_file_and_command(project, capsys):
    (project / CLAIMS).unlink()
    (project / "benchmarks" / "bench.json").unlink()  # optional: skipped with a note of its own
    assert tables(project, "--check") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "block speed skipped" in err[0] and len(err) == 2
    err = err[1]
    assert f"{project / CLAIMS}: not found" in err and "snakemake results/metrics/claims.csv" in err


def test_timings_without_benchmarks(project, capsys):
    assert tables(project) == 0
    text = (project / "README.md").read_text(encoding="utf-8")
    for p in sorted((project / "benchmarks").rglob("*.tsv")):
        p.unlink()
    assert tables(project, "--check") == 0  # benchmarks are not versioned: skipped, with a note
    assert "block timings skipped" in capsys.readouterr().err
    assert tables(project, "--check", "--blocks", "timings") == 2  # asked for by name: an error
    assert "no benchmark files" in capsys.readouterr().err
    assert (project / "README.md").read_text(encoding="utf-8") == text


def test_readme_without_markers_says_which_lines_to_add(project, capsys):
    (project / "README.md").write_text("# nothing generated\n")
    assert tables(project) == 2
    err = capsys.readouterr().err
    assert RT.begin_marker("results") in err and RT.end_marker("timings") in err
    (project / "README.md").write_text(f"{RT.begin_marker('results')}\n{RT.end_marker('results')}\n")
    assert tables(project, "--blocks", "results", "claims") == 2
    assert "no markers for block(s) claims" in capsys.readouterr().err
    assert tables(project, "--blocks", "results") == 0


def test_block_sources_and_rule_names():
    text = (
        f"{RT.begin_marker('results')}\n<!-- source: results/metrics/summary.csv md5={'a' * 32} -->\n"
        f"{RT.end_marker('results')}\n<!-- BEGIN claims -->\n<!-- source: x.csv md5={'b' * 32} -->\n"
        "<!-- END claims -->\n"
    )
    assert RT.block_sources(text) == {
        "results": {"results/metrics/summary.csv": "a" * 32},
        "claims": {"x.csv": "b" * 32},
    }
    assert RT.rule_of(Path("faces24/clean/train.tsv")) == "train"
    assert RT.rule_of(Path("faces24/noise-s0.40-naive/attack_inpaint.tsv")) == "attack_inpaint"
    assert RT.rule_of(Path("faces24/train/clean.tsv")) == "train"  # a {dataset}/{rule}/{run} layout
    assert RT.rule_of(Path("faces24/ref_pixel.tsv")) == "ref_pixel" and RT.rule_of(Path("claims.tsv")) == "claims"


def test_extended_benchmark_format_names_the_rule(tmp_path):
    p = tmp_path / "fd_pixel.tsv"
    p.write_text("s\th:m:s\tmax_rss\tjobid\trule_name\n3.0\t0:00:03\tNA\t7\tfid\n5.0\t0:00:05\t40.5\t7\tfid\n")
    assert RT.read_benchmark(p) == (4.0, 40.5, "fid")  # repeats: mean time, largest peak
    p.write_text("s\th:m:s\tmax_rss\n2.5\t0:00:02\t10\n")
    assert RT.read_benchmark(p) == (2.5, 10.0, None)


# ---------------------------------------------------------------- README.md against the recorded run


def _lock_md5() -> dict[str, str]:
    """out path -> md5 that dvc.lock records."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    return {
        o["path"]: o["md5"] for stage in lock.get("stages", {}).values() for o in stage.get("outs", []) if "md5" in o
    }


# The blocks' provenance in README.md and docs/*.md (each block is in one of them).
README_SOURCES = {
    name: src
    for f in RT.doc_files(REPO / "README.md")
    for name, src in RT.block_sources(f.read_text(encoding="utf-8")).items()
}


def test_readme_numbers_come_from_the_recorded_run():
    """The md5 in README.md's blocks is the md5 dvc.lock records for summary.csv (and claims.csv)."""
    lock = _lock_md5()
    assert SUMMARY in lock, "dvc.lock records no results/metrics/summary.csv"
    assert README_SOURCES["results"] == {SUMMARY: lock[SUMMARY]}, (
        "README.md's results block was not generated from the summary.csv dvc.lock records"
    )
    if CLAIMS in lock or "claims" in README_SOURCES:
        assert CLAIMS in lock, "README.md has a claims block, but dvc.lock records no claims.csv"
        assert README_SOURCES.get("claims") == {CLAIMS: lock[CLAIMS]}, (
            "README.md's claims block was not generated from the claims.csv dvc.lock records"
        )


def test_readme_check_passes_on_the_recorded_files(capsys):
    """Where the recorded files are here (`dvc pull metrics`), the README is what they generate."""
    lock = _lock_md5()
    blocks = [
        b
        for b, path in (("results", SUMMARY), ("claims", CLAIMS))
        if b in README_SOURCES and (REPO / path).is_file() and md5(REPO / path) == lock.get(path)
    ]
    if "results" not in blocks:
        pytest.skip(f"{SUMMARY} of the recorded run is not here (`dvc pull metrics` brings it)")
    rc = RT.main(
        [
            "--readme",
            str(REPO / "README.md"),
            "--summary",
            str(REPO / SUMMARY),
            "--claims",
            str(REPO / CLAIMS),
            "--check",
            "--blocks",
            *blocks,
        ]
    )
    assert rc == 0, capsys.readouterr().err


def test_timings_name_the_bound_of_the_run(project):
    """benchmarks/critical_path.json (written by `make reproduce`) adds the run's two bounds."""
    assert tables(project) == 0
    before = RT.find_blocks((project / "README.md").read_text())["timings"]
    report = {
        "jobs": 87,
        "cores": 2,
        "wall_s": 2340.0,
        "job_s": 4680.0,
        "throughput_bound_s": 2340.0,
        "longest_chain_s": 702.0,
    }
    (project / "benchmarks" / "critical_path.json").write_text(json.dumps(report))
    assert tables(project) == 0
    timings = RT.find_blocks((project / "README.md").read_text())["timings"]
    assert timings.split("md5=")[1][:32] != before.split("md5=")[1][:32]  # the provenance covers the file
    assert "bound the run at 39.0 min, and its longest dependency chain at 11.7 min" in timings
    assert "bound by its total compute" in timings


# ---------------------------------------------------------------- blocks in docs/*.md


def _move_to_docs(project: Path, names=("timings", "speed"), page="speed.md") -> Path:
    """Move the blocks `names` from the README into docs/<page> (as the repository keeps them)."""
    readme = project / "README.md"
    text = readme.read_text(encoding="utf-8")
    moved = []
    for name in names:
        block = f"{RT.begin_marker(name)}\nplaceholder\n{RT.end_marker(name)}\n"
        assert block in text
        text = text.replace(block, "")
        moved.append(block)
    readme.write_text(text, encoding="utf-8")
    (project / "docs").mkdir(exist_ok=True)
    doc = project / "docs" / page
    doc.write_text("# Page\n\nText stays.\n\n" + "\nbetween\n\n".join(moved) + "\nthe end\n", encoding="utf-8")
    return doc


def test_blocks_are_written_into_the_docs_page_that_holds_them(project, capsys):
    doc = _move_to_docs(project)
    (project / "docs" / "other.md").write_text("# No blocks here\n", encoding="utf-8")
    assert tables(project, "--check") == 1
    assert tables(project) == 0
    assert "timings (docs/speed.md)" in capsys.readouterr().out
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Page\n\nText stays.\n\n") and text.endswith("the end\n")
    assert set(RT.find_blocks(text)) == {"timings", "speed"}
    assert "GEMM peak 200 GFLOP/s fp32" in RT.find_blocks(text)["speed"]
    # provenance paths stay relative to the README's folder (what dvc.lock and the tests compare)
    assert "<!-- source: benchmarks/bench.json md5=" in text and "<!-- source: benchmarks/ files=5" in text
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert set(RT.find_blocks(readme)) == {"results", "claims"}
    assert (project / "docs" / "other.md").read_text() == "# No blocks here\n"
    # the claims log is written beside them (docs/ exists), and then --check passes
    assert (project / "docs" / "claims-log.md").is_file()
    capsys.readouterr()
    assert tables(project, "--check") == 0
    assert "agree with the files" in capsys.readouterr().out

    # a hand edit in docs/: --check names the file and the block; a rewrite restores it
    doc.write_text(text.replace("GEMM peak 200 GFLOP/s", "GEMM peak 999 GFLOP/s"), encoding="utf-8")
    assert tables(project, "--check") == 1
    err = capsys.readouterr().err
    assert "docs/speed.md: block `speed` differs" in err and "999" in err
    assert tables(project, "--check", "--blocks", "results", "claims") == 0  # only those compared
    assert tables(project) == 0 and doc.read_text(encoding="utf-8") == text


def test_the_claims_link_is_relative_to_the_file_that_holds_it(project):
    _move_to_docs(project, names=("claims",), page="claims.md")
    assert tables(project) == 0
    body = RT.find_blocks((project / "docs" / "claims.md").read_text(encoding="utf-8"))["claims"]
    assert "[docs/claims-log.md](claims-log.md)" in body
    assert f"<!-- source: {CLAIMS} md5=" in body
    # in the README the same link reads from the README's folder
    readme_claims = RT.render_claims(project / CLAIMS, project / "README.md")
    assert "[docs/claims-log.md](docs/claims-log.md)" in readme_claims


def test_a_block_in_no_file_fails_the_check(project, capsys):
    readme = project / "README.md"
    text = readme.read_text(encoding="utf-8")
    readme.write_text(text.replace(f"{RT.begin_marker('speed')}\nplaceholder\n{RT.end_marker('speed')}\n", ""))
    assert tables(project) == 0  # writing: the others are written, the missing one reported
    err = capsys.readouterr().err
    assert "block speed: no markers in README.md or docs/*.md, not written" in err and RT.begin_marker("speed") in err
    assert tables(project, "--check") == 1
    out, err = capsys.readouterr()
    assert "block speed: no markers in README.md or docs/*.md;" in err and "agree with the files" not in out
    assert tables(project, "--check", "--blocks", "results", "claims", "timings") == 0  # not asked for
    assert tables(project, "--check", "--blocks", "speed") == 2  # asked for by name: an error, as before
    assert "no markers for block(s) speed" in capsys.readouterr().err


def test_a_block_in_two_places_is_an_error(project, capsys):
    readme = project / "README.md"
    before = readme.read_text(encoding="utf-8")
    (project / "docs").mkdir()
    (project / "docs" / "speed.md").write_text(f"{RT.begin_marker('speed')}\nx\n{RT.end_marker('speed')}\n")
    for args in ((), ("--check",)):
        assert tables(project, *args) == 2
        err = capsys.readouterr().err
        assert "block speed appears 2 times (README.md, docs/speed.md)" in err
    assert readme.read_text(encoding="utf-8") == before  # nothing written
    (project / "docs" / "speed.md").unlink()
    readme.write_text(before + f"{RT.begin_marker('results')}\nagain\n{RT.end_marker('results')}\n")
    assert tables(project, "--check") == 2
    assert "block results appears 2 times (README.md, README.md)" in capsys.readouterr().err


def test_an_unknown_block_in_docs_is_an_error(project, capsys):
    (project / "docs").mkdir()
    (project / "docs" / "x.md").write_text("<!-- BEGIN nonsense -->\n<!-- END nonsense -->\n")
    assert tables(project, "--check") == 2
    assert "docs/x.md: unknown generated block(s) nonsense" in capsys.readouterr().err


def test_the_claims_log_never_counts_as_a_page_with_blocks(project):
    (project / "docs").mkdir()
    (project / "docs" / "claims-log.md").write_text("old\n")
    (project / "docs" / "a.md").write_text("# a\n")
    assert RT.doc_files(project / "README.md") == [project / "README.md", project / "docs" / "a.md"]

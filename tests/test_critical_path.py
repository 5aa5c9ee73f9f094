"""ambient.pipeline.critical_path: jobs, runs and chains from Snakemake's per-file metadata records.

The records are written as Snakemake writes them (one JSON file per output, named by the output's
urlsafe base64 path, several outputs of one job sharing rule, hash and end time), for a small
DAG whose chains are known by construction.
"""

from __future__ import annotations

import base64
import json

import pytest

from ambient.pipeline import critical_path as CP


def write_record(root, output, rule, job_hash, start, end, inputs=(), incomplete=False):
    name = base64.urlsafe_b64encode(output.encode()).decode()
    record = {
        "rule": rule,
        "input": list(inputs),
        "job_hash": job_hash,
        "starttime": start,
        "endtime": end,
        "incomplete": incomplete,
    }
    (root / name).write_text(json.dumps(record))


@pytest.fixture
def metadata(tmp_path):
    """prepare (0-2) feeds a long train A (2-100) and a short train B (2-50); B's sample (50-60)
    and A's sample (100-110) feed one summary (110-111). An earlier run's job sits an hour before."""
    root = tmp_path / "metadata"
    root.mkdir()
    write_record(root, "old/output.txt", "old", 1, -3600.0, -3500.0)
    write_record(root, "data/train.zip", "prepare", 2, 0.0, 2.0)
    write_record(root, "data/heldout.zip", "prepare", 2, 0.000003, 2.0)
    write_record(root, "a/model.pt", "train", 3, 2.0, 100.0, ["data/train.zip"])
    write_record(root, "b/model.pt", "train", 4, 2.0, 50.0, ["data/train.zip"])
    write_record(root, "b/samples.zip", "sample", 5, 50.0, 60.0, ["b/model.pt"])
    write_record(root, "a/samples.zip", "sample", 6, 100.0, 110.0, ["a/model.pt"])
    write_record(
        root, "summary.csv", "summary", 7, 110.0, 111.0, ["a/samples.zip", "b/samples.zip", "data/heldout.zip"]
    )
    write_record(root, "torn.txt", "train", 8, 5.0, 6.0, incomplete=True)
    return root


def test_records_of_one_job_are_one_job(metadata):
    jobs = CP.load_jobs(metadata)
    prepare = [j for j in jobs if j.rule == "prepare"]
    assert len(prepare) == 1 and sorted(prepare[0].outputs) == ["data/heldout.zip", "data/train.zip"]
    assert prepare[0].start == 0.0 and prepare[0].seconds == 2.0
    assert "torn.txt" not in {o for j in jobs for o in j.outputs}  # incomplete: no time on record


def test_last_run_drops_an_earlier_run(metadata):
    jobs = CP.last_run(CP.load_jobs(metadata))
    assert [j.rule for j in jobs][0] == "prepare" and "old" not in {j.rule for j in jobs}
    assert len(CP.last_run(CP.load_jobs(metadata), gap_s=1e6)) == len(CP.load_jobs(metadata))


def test_chains_and_bounds(metadata):
    report = CP.analyse(CP.last_run(CP.load_jobs(metadata)), cores=2)
    assert report["jobs"] == 6
    assert report["wall_s"] == pytest.approx(111.0)
    assert report["job_s"] == pytest.approx(2 + 98 + 48 + 10 + 10 + 1)
    assert report["throughput_bound_s"] == pytest.approx(169 / 2)
    assert report["longest_chain_s"] == pytest.approx(2 + 98 + 10 + 1)
    assert [j["job"].split(" ->")[0] for j in report["longest_chain"]] == ["prepare", "train", "sample", "summary"]
    blocking = [j["job"] for j in report["blocking_chain"]]
    assert blocking[1].startswith("train -> a/model.pt") and blocking[-1].startswith("summary")
    assert list(report["job_s_by_rule"])[0] == "train"
    text = CP.format_report(report)
    assert "throughput bound" in text and "a/model.pt" in text


def test_cli_writes_json_and_names_a_missing_folder(metadata, tmp_path, capsys):
    out = tmp_path / "cp.json"
    assert CP.main(["--metadata", str(metadata), "--cores", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["longest_chain_s"] == pytest.approx(111.0)
    assert CP.main(["--metadata", str(tmp_path / "nope"), "--cores", "2"]) == 1
    assert "nope" in capsys.readouterr().err

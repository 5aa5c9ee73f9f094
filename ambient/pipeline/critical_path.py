"""`python -m ambient.pipeline.critical_path`: where a Snakemake run's wall time went.

Reads the start and end time that Snakemake records for every output file in
`.snakemake/metadata/` (one JSON record per file, named by the file's urlsafe base64 path) and
groups the records into jobs. Of the last run (the last stretch of time in which some job was
always running), it prints:

    wall              first start to last end
    job-seconds       the sum of the jobs' durations
    throughput bound  job-seconds / cores: no schedule on this many cores is faster
    longest chain     the dependency chain with the largest summed duration: no number of cores
                      is faster
    the blocking chain, job by job: from the last job back through the input it waited for last

If the wall time is near the throughput bound, only less compute helps; if it is near the longest
chain, only a shorter chain (or more parallelism inside its jobs) helps. Torch-free; no Snakemake
import (the metadata are plain JSON).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import finite_float

RUN_GAP_S = 60.0  # a pause this long with no job running separates two runs


@dataclass
class Job:
    rule: str
    start: float
    end: float
    outputs: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def label(self) -> str:
        return f"{self.rule} -> {self.outputs[0]}" + (f" (+{len(self.outputs) - 1})" if len(self.outputs) > 1 else "")


def _decode_name(relative: Path) -> str | None:
    # long names are split into 255-byte directory levels; joined, they are one base64 string
    text = "".join(relative.parts)
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def load_jobs(metadata_dir: str | os.PathLike) -> list[Job]:
    """Every job on record: output records with the same rule, job hash and end time are one job."""
    root = Path(metadata_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} does not exist: run the workflow first (`make reproduce`), "
            "or point --metadata at a run's .snakemake/metadata"
        )
    jobs: dict[tuple, Job] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = _decode_name(path.relative_to(root))
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a record torn by a killed run says nothing about time
        start, end = record.get("starttime"), record.get("endtime")
        if name is None or start is None or end is None or record.get("incomplete"):
            continue
        # one job's outputs share its rule, hash and end; their start times differ by microseconds
        key = (record.get("rule"), record.get("job_hash"), end)
        job = jobs.setdefault(
            key, Job(record.get("rule") or "?", float(start), float(end), inputs=list(record.get("input") or []))
        )
        job.start = min(job.start, float(start))
        job.outputs.append(name)
    return sorted(jobs.values(), key=lambda j: (j.start, j.end))


def last_run(jobs: list[Job], gap_s: float = RUN_GAP_S) -> list[Job]:
    """The jobs of the last stretch of time without a pause of `gap_s` with no job running."""
    if not jobs:
        return []
    first = 0
    busy_until = jobs[0].end
    for i, job in enumerate(jobs[1:], start=1):
        if job.start - busy_until > gap_s:
            first = i
        busy_until = max(busy_until, job.end)
    return jobs[first:]


def _producers(jobs: list[Job]) -> dict[int, list[int]]:
    made_by = {out: i for i, job in enumerate(jobs) for out in job.outputs}
    return {
        i: sorted({made_by[f] for f in job.inputs if f in made_by and made_by[f] != i}) for i, job in enumerate(jobs)
    }


def longest_chain(jobs: list[Job]) -> tuple[float, list[Job]]:
    """The dependency chain of largest summed duration (jobs sorted by start: producers first)."""
    producers = _producers(jobs)
    best: dict[int, tuple[float, int | None]] = {}
    for i, job in enumerate(jobs):
        before = max(((best[p][0], p) for p in producers[i] if p in best), default=(0.0, None))
        best[i] = (before[0] + job.seconds, before[1])
    if not best:
        return 0.0, []
    i = max(best, key=lambda k: best[k][0])
    total, chain = best[i][0], []
    while i is not None:
        chain.append(jobs[i])
        i = best[i][1]
    return total, chain[::-1]


def blocking_chain(jobs: list[Job]) -> list[Job]:
    """From the job that ended last, back through the producer each job waited for last."""
    if not jobs:
        return []
    producers = _producers(jobs)
    i = max(range(len(jobs)), key=lambda k: jobs[k].end)
    chain = [i]
    while producers[i]:
        i = max(producers[i], key=lambda k: jobs[k].end)
        chain.append(i)
    return [jobs[k] for k in chain[::-1]]


def analyse(jobs: list[Job], cores: int) -> dict:
    if cores < 1:
        raise ValueError(f"cores={cores} must be >= 1")
    if not jobs:
        return {"jobs": 0}
    start, end = min(j.start for j in jobs), max(j.end for j in jobs)
    busy = sum(j.seconds for j in jobs)
    chain_s, chain = longest_chain(jobs)
    by_rule: dict[str, float] = {}
    for job in jobs:
        by_rule[job.rule] = by_rule.get(job.rule, 0.0) + job.seconds
    return {
        "jobs": len(jobs),
        "cores": cores,
        "wall_s": end - start,
        "job_s": busy,
        "throughput_bound_s": busy / cores,
        "longest_chain_s": chain_s,
        "longest_chain": [{"job": j.label, "s": round(j.seconds, 2)} for j in chain],
        "blocking_chain": [
            {"job": j.label, "start_s": round(j.start - start, 2), "s": round(j.seconds, 2)}
            for j in blocking_chain(jobs)
        ],
        "job_s_by_rule": dict(sorted(((r, round(s, 2)) for r, s in by_rule.items()), key=lambda kv: -kv[1])),
    }


def format_report(report: dict) -> str:
    if not report.get("jobs"):
        return "no finished jobs on record"
    m = lambda s: f"{s / 60:.1f} min"  # noqa: E731
    lines = [
        f"{report['jobs']} jobs on {report['cores']} cores",
        f"wall               {m(report['wall_s'])}",
        f"job-seconds        {report['job_s']:.0f} s",
        f"throughput bound   {m(report['throughput_bound_s'])}  (job-seconds / cores)",
        f"longest chain      {m(report['longest_chain_s'])}",
        "",
        "job-seconds by rule:",
    ]
    lines += [f"  {rule:<28} {s:8.1f} s  {s / report['job_s']:5.1%}" for rule, s in report["job_s_by_rule"].items()]
    lines += ["", "blocking chain (start after the first job, duration):"]
    lines += [f"  {j['start_s']:8.1f} s  {j['s']:8.1f} s  {j['job']}" for j in report["blocking_chain"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ambient.pipeline.critical_path", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--metadata", default=".snakemake/metadata", help="Snakemake's per-file records")
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count() or 1, help="cores the run had (default: this machine's)"
    )
    parser.add_argument("--gap", type=finite_float, default=RUN_GAP_S, help="idle seconds that separate two runs")
    parser.add_argument("--json", help="also write the report to this JSON file")
    args = parser.parse_args(argv)
    try:
        report = analyse(last_run(load_jobs(args.metadata), args.gap), args.cores)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json:
        from ..paths import check_writable  # torch-free

        check_writable(args.json)
        tmp = Path(args.json).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

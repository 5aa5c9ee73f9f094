"""Stand-ins for the SLURM commands that snakemake-executor-plugin-slurm calls, for the tests.

`install(bin_dir, state_dir)` writes one small shell script per command (sbatch, sacct, squeue,
scancel, scontrol, sinfo, sacctmgr, sshare, srun) that calls this file. The stand-ins record every
call (state_dir/calls.jsonl: command and argv) and run each submitted job on this machine, in the
background, with the environment SLURM gives a job (SLURM_JOB_ID, SLURM_CPUS_PER_TASK). Job states
(RUNNING, COMPLETED, FAILED, TIMEOUT) come from the job's own exit status.

Two switches, by environment variable:
  FAKE_SLURM_FAIL=1                  no job runs: each is recorded and reported FAILED at once
  FAKE_SLURM_KILL=RULE:GLOB          the first job of RULE is killed (state TIMEOUT, as at a --time
                                     limit) as soon as a file matching GLOB exists in the workdir
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("sbatch", "sacct", "squeue", "scancel", "scontrol", "sinfo", "sacctmgr", "sshare", "srun")


def install(bin_dir: Path, state_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for cmd in COMMANDS:
        p = bin_dir / cmd
        p.write_text(
            f'#!/bin/sh\nFAKE_SLURM_DIR="{state_dir}" exec "{sys.executable}" "{Path(__file__).resolve()}" {cmd} "$@"\n'
        )
        p.chmod(0o755)


def calls(state_dir: Path) -> list[dict]:
    path = state_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _state() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


def _record(cmd: str, argv: list[str], **extra) -> None:
    with open(_state() / "calls.jsonl", "a") as f:
        f.write(json.dumps({"cmd": cmd, "argv": argv, **extra}) + "\n")


def _option(argv: list[str], *names: str) -> str | None:
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def _job(job_id: str) -> dict:
    return json.loads((_state() / "jobs" / f"{job_id}.json").read_text())


def _save(job: dict) -> None:
    path = _state() / "jobs" / f"{job['id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    os.replace(tmp, path)


def sbatch(argv: list[str]) -> int:
    jobs = _state() / "jobs"
    jobs.mkdir(exist_ok=True)
    job_id = str(1000 + len(list(jobs.glob("*.json"))))
    command = _option(argv, "--wrap")
    if argv and argv[-1] == "/dev/stdin":
        command = sys.stdin.read()
    comment = _option(argv, "--comment") or ""
    rule = comment.split("_wildcards_")[0].removeprefix("rule_")
    job = {
        "id": job_id,
        "name": _option(argv, "--job-name", "-J"),
        "rule": rule,
        "state": "PENDING",
        "output": (_option(argv, "--output", "-o") or "slurm-%j.out").replace("%j", job_id),
        "cpus": _option(argv, "--cpus-per-task", "-c") or "1",
        "command": command,
        "cwd": _option(argv, "-D", "--chdir") or os.getcwd(),
    }
    _record("sbatch", argv, id=job_id, rule=rule)
    if os.environ.get("FAKE_SLURM_FAIL"):
        job["state"] = "FAILED"
        _save(job)
    else:
        _save(job)
        subprocess.Popen(
            [sys.executable, __file__, "_run", job_id],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    print(job_id)
    return 0


def _run(job_id: str) -> int:
    """The job itself, detached from sbatch: run, watch (FAKE_SLURM_KILL), record the end state."""
    job = _job(job_id)
    Path(job["output"]).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id, "SLURM_CPUS_PER_TASK": job["cpus"]}
    with open(job["output"], "w") as log:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", job["command"]],
            cwd=job["cwd"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    job.update(state="RUNNING", pid=proc.pid)
    _save(job)
    kill = os.environ.get("FAKE_SLURM_KILL", "")
    rule, _, pattern = kill.partition(":")
    marker = _state() / f"killed-{rule}"
    watch = bool(kill) and rule == job["rule"] and not marker.exists()
    killed = False
    while proc.poll() is None:
        found = glob.glob(os.path.join(job["cwd"], pattern)) if watch and not killed else []
        if found:
            st = os.stat(found[0])  # what the job had written when it was killed
            marker.write_text(
                json.dumps({"job": job_id, "file": found[0], "inode": st.st_ino, "mtime_ns": st.st_mtime_ns})
            )
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    job["state"] = "TIMEOUT" if killed else ("COMPLETED" if proc.returncode == 0 else "FAILED")
    job["returncode"] = proc.returncode
    _save(job)
    return 0


def _status(argv: list[str], cmd: str) -> int:
    name = _option(argv, "--name")
    _record(cmd, argv)
    for path in sorted((_state() / "jobs").glob("*.json")) if (_state() / "jobs").is_dir() else []:
        job = json.loads(path.read_text())
        if name is None or job["name"] == name:
            print(f"{job['id']}|{job['state']}")
    return 0


def scancel(argv: list[str]) -> int:
    _record("scancel", argv)
    for job_id in (a for a in argv if a.isdigit()):
        job = _job(job_id)
        if job.get("pid") and job["state"] == "RUNNING":
            try:
                os.killpg(job["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
    return 0


def srun(argv: list[str]) -> int:
    """Inside a job: drop srun's own options and run the step here."""
    _record("srun", argv)
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        rest.pop(0)
    os.execvp(rest[0], rest)


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "_run":
        return _run(args[0])
    if cmd == "sbatch":
        return sbatch(args)
    if cmd in ("sacct", "squeue"):
        return _status(args, cmd)
    if cmd == "scancel":
        return scancel(args)
    if cmd == "srun":
        return srun(args)
    _record(cmd, args)
    if cmd == "scontrol":
        print("MinJobAge               = 300 sec")
    elif cmd in ("sacctmgr", "sshare"):
        print(os.environ.get("FAKE_SLURM_ACCOUNTS", "your_account"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

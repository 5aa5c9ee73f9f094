"""ambient.pipeline.gpu_slots: concurrent GPU jobs on one machine get distinct devices (faked device count)."""

from __future__ import annotations

import os
import subprocess
import sys

SHOW = "import os, time; print(os.environ.get('CUDA_VISIBLE_DEVICES', '-')); time.sleep({})"


def wrapper(tmp_path, gpus, sleep=0.0, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update(AMBIENT_NUM_GPUS="2", AMBIENT_GPU_LOCK_DIR=str(tmp_path / "locks"), **(extra_env or {}))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ambient.pipeline.gpu_slots",
            "--gpus",
            str(gpus),
            "--timeout",
            "20",
            "--",
            sys.executable,
            "-c",
            SHOW.format(sleep),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(p):
    out, err = p.communicate(timeout=60)
    return p.returncode, out.strip(), err


def test_concurrent_jobs_get_distinct_devices_and_release_them(tmp_path):
    a, b = wrapper(tmp_path, 1, sleep=1.5), wrapper(tmp_path, 1, sleep=1.5)
    ra, rb = result(a), result(b)
    assert ra[0] == rb[0] == 0, (ra, rb)
    assert {ra[1], rb[1]} == {"0", "1"}
    c = wrapper(tmp_path, 2)  # both released when the jobs ended
    assert result(c)[:2] == (0, "0,1")


def test_a_job_waits_for_busy_devices(tmp_path):
    a = wrapper(tmp_path, 2, sleep=1.5)
    import time

    time.sleep(0.5)
    b = wrapper(tmp_path, 1)
    assert result(a)[:2] == (0, "0,1") and result(b)[:2] == (0, "0")


def test_passthrough_without_gpus_or_when_pinned(tmp_path):
    assert result(wrapper(tmp_path, 0))[:2] == (0, "-")
    assert result(wrapper(tmp_path, 1, extra_env={"CUDA_VISIBLE_DEVICES": "3"}))[:2] == (0, "3")
    assert result(wrapper(tmp_path, 1, extra_env={"SLURM_JOB_ID": "42"}))[:2] == (0, "-")
    rc, _, err = result(wrapper(tmp_path, 3))
    assert rc == 2 and "needs 3 GPUs" in err

"""Give a job its own GPUs on a machine shared by several jobs:
`python -m ambient.pipeline.gpu_slots --gpus N -- CMD ...`.

Snakemake caps the number of GPUs in use (`--resources gpu=N`) but does not say which device a
job gets: without this every job would use cuda:0. The wrapper takes N free devices, each guarded
by an exclusive `flock` on LOCK_DIR/gpu<i>.lock, sets CUDA_VISIBLE_DEVICES to them and replaces
itself with CMD (exec). The lock files stay open in CMD (and its children, e.g. torchrun's
workers), so the devices are released when the job ends, however it ends (a crash or a kill
included: the kernel drops the locks).

Nothing is done (CMD runs as is) when N is 0, or when the scheduler already chose the devices:
CUDA_VISIBLE_DEVICES is set, or the job runs under SLURM (SLURM_JOB_ID). The number of devices is
$AMBIENT_NUM_GPUS, else torch.cuda.device_count(); LOCK_DIR is $AMBIENT_GPU_LOCK_DIR, else
/tmp/ambient-gpu-locks-<uid> (shared by every workflow of the user on this machine).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from pathlib import Path

from ..settings import finite_float


def device_count() -> int:
    env = os.environ.get("AMBIENT_NUM_GPUS")
    if env:
        return int(env)
    import torch

    return torch.cuda.device_count()


def lock_dir() -> Path:
    return Path(os.environ.get("AMBIENT_GPU_LOCK_DIR") or f"/tmp/ambient-gpu-locks-{os.getuid()}")


def scheduler_pinned() -> bool:
    return "CUDA_VISIBLE_DEVICES" in os.environ or "SLURM_JOB_ID" in os.environ


def acquire(
    n: int, total: int, directory: Path, timeout: float | None = None, poll: float = 2.0
) -> tuple[list[int], list[int]]:
    """Lock n of the devices 0..total-1: (device ids, open lock fds). Waits while fewer are free."""
    if n > total:
        raise RuntimeError(f"the job needs {n} GPUs but this machine has {total}")
    directory.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        ids, fds = [], []
        for i in range(total):
            fd = os.open(directory / f"gpu{i}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            ids.append(i)
            fds.append(fd)
            if len(ids) == n:
                return ids, fds
        for fd in fds:
            os.close(fd)  # closing drops the lock: never hold part of a request while waiting
        if timeout is not None and time.monotonic() - start > timeout:
            raise RuntimeError(f"no {n} free GPUs among {total} after {timeout:.0f} s (locks in {directory})")
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m ambient.pipeline.gpu_slots --gpus N [--timeout S] -- CMD [ARGS...]", file=sys.stderr)
        return 2
    k = argv.index("--")
    parser = argparse.ArgumentParser(
        prog="python -m ambient.pipeline.gpu_slots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--timeout", type=finite_float, default=None, help="give up after S seconds (default: wait)")
    a = parser.parse_args(argv[:k])
    cmd = argv[k + 1 :]
    if not cmd:
        parser.error("no command after --")
    if a.gpus > 0 and not scheduler_pinned():
        try:
            ids, fds = acquire(a.gpus, device_count(), lock_dir(), a.timeout)
        except RuntimeError as e:
            print(f"ambient gpu_slots: error: {e}", file=sys.stderr)
            return 2
        for fd in fds:
            os.set_inheritable(fd, True)  # the locks live as long as CMD and its children
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
    os.execvp(cmd[0], cmd)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())

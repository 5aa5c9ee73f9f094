"""`ambient pull` verifies what it pulled (issue 28): a corrupted object of the remote or of the local
cache is named with its workspace file, cache object and remote object and the commands that
recover; an unknown stage is named before any remote is contacted; the temporary files of killed
writes neither dirty `dvc status` nor survive a pull.

A tiny recorded run: a copy of the repository (its dvc.yaml, .dvc/config, .dvcignore) whose phase
directories hold a few small files, recorded with `dvc commit --force` (what `make record` does),
pushed to the default remote (the folder beside the checkout), then cloned by a consumer.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from ambient.pipeline import integrity as I
from ambient.pipeline import pull as P
from tests.test_dvc import GIT, REPO, STAGES, _dvc_checkout, copy_repo, dvc, git_commit, py, run

DATASET_ZIP = "data/tiny.zip"
SUMMARY_CSV = "results/metrics/summary.csv"
FILES = {
    "data/tiny-heldout.zip": b"PK-not-a-zip" * 30,
    "results/models/clean/model.pt": b"weights" * 50,
    "results/samples/clean/samples.npz": b"samples" * 50,
    "results/evaluation/clean/fid.json": b'{"fid": 1.0}\n',
    SUMMARY_CSV: b"corruption,fid\nclean,1.0\n",
    "results/metrics/summary.json": b'[{"fid": 1.0}]\n',
    "results/metrics/claims.csv": b"claim,ok\n",
    "results/figures/fig.png": b"\x89PNG" + bytes(range(256)),
}


def _write_zip(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("00000.png", bytes(range(256)) * 40)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """root/{producer, ambient-dvc-remote}: the producer checkout (its cache is the good copy) and its remote."""
    root = tmp_path_factory.mktemp("verify")
    prod = copy_repo(root / "producer")
    _write_zip(prod / DATASET_ZIP)
    for rel, content in FILES.items():
        (prod / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_zip(prod / rel) if content is None else (prod / rel).write_bytes(content)
    run(prod, *GIT, "init", "-q")
    dvc(prod, "commit", "--force", "-q")
    git_commit(prod, "tiny recorded run")
    dvc(prod, "push", "-q")
    return root


@pytest.fixture
def world(recorded, tmp_path) -> tuple[Path, Path, Path]:
    """(producer, remote, consumer), copies of the recorded ones for this test alone."""
    shutil.copytree(recorded, tmp_path, dirs_exist_ok=True, symlinks=True)
    prod, remote = tmp_path / "producer", tmp_path / "ambient-dvc-remote"
    run(tmp_path, "git", "clone", "-q", prod, tmp_path / "consumer")
    return prod, remote, tmp_path / "consumer"


def oid_of(repo: Path, rel: str) -> str:
    """The md5 dvc.lock (and a .dir manifest) records for a pulled file."""
    for spec in yaml.safe_load((repo / "dvc.lock").read_text())["stages"].values():
        for out in spec["outs"]:
            if out["path"] == rel:
                return out["md5"]
            if rel.startswith(out["path"] + "/"):
                manifest = I.object_path(repo / ".dvc" / "cache", out["md5"])
                entries = __import__("json").loads(manifest.read_text())
                return next(e["md5"] for e in entries if f"{out['path']}/{e['relpath']}" == rel)
    raise KeyError(rel)


def flip_byte(path: Path) -> None:
    """One bit of the middle byte, the file's mode and mtime kept (as bit rot would)."""
    st = path.stat()
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    os.chmod(path, st.st_mode)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def pull_error(cwd: Path, *targets: str) -> str:
    with pytest.raises(P.PullError) as e:
        P.pull(list(targets), cwd=cwd, log=lambda *_: None)
    return str(e.value)


def recovery(message: str) -> list[str]:
    """The `rm -f ...` of the message's last line (before `&& ambient pull`)."""
    last = message.strip().splitlines()[-1].strip()
    assert last.endswith("ambient pull"), message
    return shlex.split(last.split(" && ")[0]) if " && " in last else []


def assert_pulled(cons: Path) -> None:
    P.pull([], cwd=cons, log=lambda *_: None)
    with zipfile.ZipFile(cons / DATASET_ZIP) as zf:
        assert zf.testzip() is None  # every member's CRC
    assert (cons / SUMMARY_CSV).read_bytes() == FILES[SUMMARY_CSV]


def test_default_remote_verifies_downloads():
    from configobj import ConfigObj

    assert ConfigObj(str(REPO / ".dvc" / "config"))['remote "local"']["verify"] == "true"
    docs = (REPO / "docs" / "dvc.md").read_text()
    assert "dvc remote modify s3 verify true" in docs and "dvc remote modify gcs verify true" in docs


@pytest.mark.parametrize("rel", [DATASET_ZIP, SUMMARY_CSV], ids=["in-a-directory-out", "a-file-out"])
def test_corrupt_remote_object_is_named_and_recovers_after_a_re_push(world, rel):
    prod, remote, cons = world
    oid = oid_of(prod, rel)
    bad_object = I.object_path(remote, oid)
    flip_byte(bad_object)
    message = pull_error(cons)
    assert f"{rel}: missing in the workspace" in message, message
    assert str(I.object_path(cons / ".dvc" / "cache", oid)) in message
    assert f"remote 'local' object {bad_object}: corrupt" in message
    step = re.search(r"`(rm -f [^`]*)`, then `dvc push -r local` there", message)
    assert step and str(bad_object) in step[1], message
    # the recovery the message prints: the remote's object deleted and pushed again from a good copy
    run(remote, *shlex.split(step[1]))
    dvc(prod, "push", "-r", "local", "-q")
    if doomed := recovery(message)[2:]:
        run(cons, "rm", "-f", *doomed)
    assert_pulled(cons)


def test_corrupt_cache_object_is_named_and_recovers(world):
    """The remote is fine; the consumer's cache object has rotted: DVC checks it out and `dvc status`
    is clean, the pull's own hashes are not."""
    prod, remote, cons = world
    assert_pulled(cons)
    oid = oid_of(prod, DATASET_ZIP)
    cached = I.object_path(cons / ".dvc" / "cache", oid)
    flip_byte(cached)
    (cons / DATASET_ZIP).unlink()
    dvc(cons, "checkout", "-q")  # DVC restores the rotten bytes from its cache
    assert dvc(cons, "status", "--json").stdout.strip() == "{}"  # and sees nothing wrong
    message = pull_error(cons)
    assert f"{DATASET_ZIP}: corrupt (md5 " in message and f"dvc.lock says md5 {oid}" in message
    assert f"cache object {cached}: corrupt" in message
    assert f"remote 'local' object {I.object_path(remote, oid)}: ok" in message, message
    assert recovery(message) == ["rm", "-f", str(cached), DATASET_ZIP]
    run(cons, *recovery(message))
    assert_pulled(cons)


def test_unknown_stage_is_named_before_the_remote(tmp_path):
    repo = _dvc_checkout(tmp_path, str(tmp_path / "nowhere"))  # a missing remote: never reached
    r = py(repo, "-m", "ambient.pipeline.pull", "bogus_stage", check=False)
    assert r.returncode == 3, r.stderr
    assert "unknown DVC stage or output: bogus_stage" in r.stderr and "remote" not in r.stderr, r.stderr
    assert all(f"  {stage}: " in r.stderr for stage in STAGES), r.stderr
    assert I.check_targets(["models", "dvc.yaml:figures", "results/models/clean", "results"], repo) == []


def test_temp_files_of_killed_writes_do_not_dirty_dvc_status_and_are_removed(world):
    prod, _, _ = world
    assert dvc(prod, "status", "--json").stdout.strip() == "{}"
    leftovers = [
        prod / "results/models/clean/.model.pt.k3j2l1.tmp",  # ambient.utils.atomic_path
        prod / "results/metrics/.summary.csv.a8b7c6.tmp",
        prod / "data/.tiny.zip.x1y2.extracting/00000.png",  # pipeline/download.py's extraction folder
    ]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    assert dvc(prod, "status", "--json").stdout.strip() == "{}"
    ignored = (REPO / ".dvcignore").read_text().splitlines()
    assert all(pat in ignored or pat + "/" in ignored for pat in I.TEMP_PATTERNS)
    assert I.temp_files(prod) == sorted([leftovers[0], leftovers[1], leftovers[2].parent])
    assert "--clean-temp" in (REPO / "Makefile").read_text().split("\nrecord:")[1].split("\n\n")[0]
    r = py(prod, "-m", "ambient.pipeline.integrity", "--clean-temp")
    assert not any(p.exists() for p in leftovers) and "results/models/clean/.model.pt.k3j2l1.tmp" in r.stderr
    assert dvc(prod, "status", "--json").stdout.strip() == "{}"


def test_pull_removes_temp_files_first(world):
    _, _, cons = world
    leftover = cons / "results/samples/clean/.samples.npz.q9.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    said = []
    P.pull([], cwd=cons, log=said.append)
    assert not leftover.exists() and any(str(leftover) in s for s in said), said


def test_targets_verify_only_their_outs(world):
    prod, remote, cons = world
    flip_byte(I.object_path(remote, oid_of(prod, DATASET_ZIP)))
    P.pull(["metrics"], cwd=cons, log=lambda *_: None)  # the corrupt dataset is not asked for
    assert (cons / SUMMARY_CSV).is_file() and not (cons / DATASET_ZIP).exists()
    assert DATASET_ZIP in pull_error(cons, "datasets")


def test_an_empty_remote_is_blamed_as_a_remote(world):
    """Nothing of dvc.lock in the remote (the wrong folder): the remote's line, not a list of objects."""
    _, remote, cons = world
    shutil.rmtree(remote / "files")
    message = pull_error(cons)
    assert "could not pull from DVC remote 'local'" in message and "do not match dvc.lock" not in message, message

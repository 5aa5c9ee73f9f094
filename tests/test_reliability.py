"""Issue 11: a run directory is never mislabelled or shared, bad inputs get one clear line,
identical runs write identical bytes."""

import os
import stat
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_NET_ARGS, run_cli
from test_training import _cfg, _Evil
from test_training import _states_equal as _same

from ambient.checkpoints import list_checkpoints, load_checkpoint
from ambient.training import train
from ambient.utils import atomic_path, run_dir_lock

# ---------------------------------------------------------------- a shorter run never returns a longer one


def test_a_shorter_run_in_a_longer_runs_directory_is_trained_to_its_own_step(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=8), tmp_path / "long", progress=False)
    train(_cfg(tiny_dataset, steps=4), tmp_path / "ref", progress=False)
    # the 4-step run resumes from the long run's step-4 checkpoint, not from its step 8
    out = train(_cfg(tiny_dataset, steps=4), tmp_path / "long", tmp_path / "m4.pt", progress=False)
    got, ref = load_checkpoint(out), load_checkpoint(tmp_path / "ref" / "model.pt")
    assert got["step"] == 4 and got["config"]["steps"] == 4
    assert _same(got["ema"], ref["ema"]) and _same(got["model"], ref["model"])
    # and the longer run's checkpoints are still there for the longer label
    assert "checkpoint-0000008.pt" in [p.name for p in list_checkpoints(tmp_path / "long")]


def test_a_shorter_run_without_an_earlier_checkpoint_starts_afresh(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=8, checkpoint_every=8), tmp_path / "long", progress=False)
    train(_cfg(tiny_dataset, steps=3, checkpoint_every=8), tmp_path / "ref", progress=False)
    out = train(_cfg(tiny_dataset, steps=3, checkpoint_every=8), tmp_path / "long", tmp_path / "m3.pt", progress=False)
    got, ref = load_checkpoint(out), load_checkpoint(tmp_path / "ref" / "model.pt")
    assert got["step"] == 3 and _same(got["ema"], ref["ema"])


def test_resume_with_other_settings_names_every_differing_key(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError) as e:
        train(_cfg(tiny_dataset, steps=4, lr=0.5, ema_decay=0.9), tmp_path, progress=False)
    assert "lr=" in str(e.value) and "ema_decay=" in str(e.value) and "--run-dir" in str(e.value)
    train(
        _cfg(tiny_dataset, steps=4, log_every=2, checkpoint_every=4), tmp_path, progress=False
    )  # bookkeeping may change


# ---------------------------------------------------------------- one writer per run directory


def test_a_second_writer_on_a_run_directory_is_refused(tmp_path):
    with run_dir_lock(tmp_path):
        with pytest.raises(RuntimeError, match="another process is training"):
            with run_dir_lock(tmp_path):
                pass
    with run_dir_lock(tmp_path):  # released
        pass


def test_two_train_processes_on_one_run_directory(tiny_dataset, tmp_path):
    args = [
        "train",
        "--dataset",
        tiny_dataset,
        "--corruption",
        "clean",
        "--steps",
        400,
        "--batch-size",
        4,
        "--checkpoint-every",
        50,
        "--threads",
        1,
        "--device",
        "cpu",
        "--quiet",
        *TINY_NET_ARGS,
        "--run-dir",
        tmp_path / "run",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "ambient", *map(str, args)], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 120
    while not (tmp_path / "run" / "train_log.jsonl").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the first process ended before the second could start: make it longer"
    second = run_cli([*args[:-1], tmp_path / "run", "--seed", 1])
    assert second.returncode == 2 and "another process is training" in second.stderr, second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"]["seed"] == 0


# ---------------------------------------------------------------- nonsense settings


@pytest.mark.parametrize(
    "flag,value,words",
    [
        ("--consistency-weight", "-1", "consistency_weight"),
        ("--ema-decay", "2", "ema_decay"),
        ("--warmup-steps", "-5", "warmup_steps"),
        ("--attn-resolutions", "99", "attn_resolutions"),
        ("--threads", "0", "threads"),
        ("--log-every", "0", "log_every"),
        ("--lr", "0", "lr"),
        ("--steps", "0", "steps"),
        ("--grad-clip", "-1", "grad_clip"),
    ],
)
def test_train_refuses_nonsense_in_one_line(tiny_dataset, tmp_path, flag, value, words):
    r = run_cli(
        [
            "train",
            "--dataset",
            tiny_dataset,
            "--corruption",
            "clean",
            "--steps",
            2,
            "--batch-size",
            4,
            "--run-dir",
            tmp_path / "run",
            "--quiet",
            *TINY_NET_ARGS,
            flag,
            value,
        ]
    )
    assert r.returncode == 2, r.stderr
    named = words in r.stderr or f"{flag} {value}" in r.stderr  # the setting, or the flag as typed
    assert named and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not list_checkpoints(tmp_path / "run")


@pytest.mark.parametrize(
    "key,value",
    [
        ("consistency_weight", -1.0),
        ("ema_decay", 2.0),
        ("warmup_steps", -5),
        ("log_every", 0),
        ("lr", 0.0),
        ("grad_clip", -1.0),
        ("steps", 0),
        ("formulation", "other"),
        ("keep_checkpoints", 0),
    ],
)
def test_the_training_config_is_the_one_place_settings_are_checked(tiny_dataset, key, value):
    """The Snakemake rules and the CLI both build a TrainConfig: one check, one message naming the key."""
    with pytest.raises(ValueError, match=key):
        _cfg(tiny_dataset, **{key: value})


def test_consistency_weight_belongs_to_the_tweedie_loss(tiny_dataset):
    with pytest.raises(ValueError, match="Tweedie"):
        _cfg(tiny_dataset, consistency_weight=0.1)


def test_unwritable_out_fails_before_training(tiny_dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="file"):
        train(_cfg(tiny_dataset), tmp_path / "run", blocker / "model.pt", progress=False)
    assert not list_checkpoints(tmp_path / "run")


# ---------------------------------------------------------------- torn logs, stale temporaries


def test_a_torn_last_log_line_and_stale_temporaries_do_not_block_resume(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=4), tmp_path, progress=False)
    log = tmp_path / "train_log.jsonl"
    log.write_text(log.read_text() + '{"step": 5, "lo')
    (tmp_path / ".checkpoint-0000006.pt.abc.tmp").write_bytes(b"half")
    train(_cfg(tiny_dataset, steps=6), tmp_path, progress=False)
    lines = log.read_text().splitlines()
    assert [int(line.split(":")[1].split(",")[0]) for line in lines] == [1, 2, 3, 4, 5, 6]
    assert not list(tmp_path.glob(".checkpoint-*.tmp"))


def test_a_broken_middle_log_line_is_named(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, steps=4), tmp_path, progress=False)
    log = tmp_path / "train_log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="train_log.jsonl: line 2"):
        train(_cfg(tiny_dataset, steps=6), tmp_path, progress=False)


# ---------------------------------------------------------------- identical runs, identical bytes


def test_identical_trainings_write_identical_checkpoint_bytes(tiny_dataset, tmp_path):
    a = train(_cfg(tiny_dataset, steps=2), tmp_path / "a", progress=False)
    b = train(_cfg(tiny_dataset, steps=2), tmp_path / "b", progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "checkpoint-0000002.pt").read_bytes() == (
        tmp_path / "b" / "checkpoint-0000002.pt"
    ).read_bytes()


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o644


# ---------------------------------------------------------------- prepare: every number checked, 0 is 0


@pytest.mark.parametrize(
    "args,words",
    [
        (["--num-images", "-2"], "--num-images -2"),
        (["--num-images", "0"], "--num-images 0"),
        (["--resolution", "0"], "--resolution 0"),
        (["--heldout-images", "-1"], "--heldout-images -1"),
    ],
)
def test_prepare_refuses_nonsense_numbers(tmp_path, args, words):
    r = run_cli(["prepare", "--out", tmp_path / "d.zip", *args])
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "d.zip").exists()


def _folder(tmp_path, sizes):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.new("RGB", (size, size), (i * 40, 90, 200)).save(folder / f"{i}.png")
    return folder


def test_prepare_folder_with_zero_images_and_tiny_sources(tmp_path):
    folder = _folder(tmp_path, [16, 16, 16])
    r = run_cli(
        [
            "prepare",
            "--source",
            "folder",
            "--folder",
            folder,
            "--resolution",
            "8",
            "--num-images",
            "0",
            "--out",
            tmp_path / "d.zip",
        ]
    )
    assert r.returncode == 2 and "--num-images 0" in r.stderr and "Traceback" not in r.stderr, r.stderr
    (folder / "tiny.png").unlink(missing_ok=True)
    from PIL import Image

    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    r = run_cli(["prepare", "--source", "folder", "--folder", folder, "--resolution", "8", "--out", tmp_path / "d.zip"])
    assert r.returncode == 2 and "tiny.png" in r.stderr and "too small" in r.stderr, r.stderr


# ---------------------------------------------------------------- prepared zips: checked, members named


def _rezip(src, dst, drop=(), replace=None):
    import zipfile

    with zipfile.ZipFile(src) as zf:
        entries = {n: zf.read(n) for n in zf.namelist() if n not in drop}
    entries.update(replace or {})
    with zipfile.ZipFile(dst, "w") as zf:
        for n, d in entries.items():
            zf.writestr(n, d)


def test_prepared_zips_are_checked_and_their_members_named(tmp_path):
    import io
    import json

    from PIL import Image

    from ambient.data import embedded_faces, read_image_zip, write_image_zip

    images, ids = embedded_faces(3, 8)
    write_image_zip(tmp_path / "a.zip", images, ids)
    _rezip(tmp_path / "a.zip", tmp_path / "plain.zip", drop=("dataset.json",))
    with pytest.raises(ValueError, match="plain.zip: no dataset.json"):
        read_image_zip(tmp_path / "plain.zip")
    assert read_image_zip(tmp_path / "plain.zip", allow_plain=True).images.shape == (3, 1, 8, 8)

    # a junk member, and a member of the wrong size, with the manifest's sha256 made to match
    import zipfile

    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        manifest = json.loads(zf.read("dataset.json"))
    buf = io.BytesIO()
    Image.new("L", (5, 5)).save(buf, format="PNG")
    for name, payload, words in [
        ("junk.zip", b"not a png", "000001.png is not a readable image"),
        ("size.zip", buf.getvalue(), "000001.png is uint8 1x5x5"),
    ]:
        import hashlib

        m = json.loads(json.dumps(manifest))
        m["images"][1]["sha256"] = hashlib.sha256(payload).hexdigest()
        _rezip(
            tmp_path / "a.zip", tmp_path / name, replace={"000001.png": payload, "dataset.json": json.dumps(m).encode()}
        )
        with pytest.raises(ValueError) as e:
            read_image_zip(tmp_path / name)
        assert name in str(e.value) and words in str(e.value), str(e.value)


# ---------------------------------------------------------------- checkpoints: one line naming the file


def test_a_checkpoint_that_does_not_fit_its_config_is_one_line(tiny_dataset, tmp_path):
    from ambient.checkpoints import load_model

    out = train(_cfg(tiny_dataset, steps=2), tmp_path / "run", progress=False)
    state = load_checkpoint(out)
    state["config"]["network"]["base_channels"] = 16
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(ValueError) as e:
        load_model(tmp_path / "mixed.pt")
    assert "mixed.pt" in str(e.value) and "do not fit" in str(e.value) and len(str(e.value).splitlines()) == 1
    del state["info"]
    torch.save(state, tmp_path / "noinfo.pt")
    with pytest.raises(ValueError, match="noinfo.pt: an incomplete ambient checkpoint .no info"):
        load_model(tmp_path / "noinfo.pt")


def test_the_refusal_of_pickled_code_is_one_short_line_per_command(tiny_dataset, tmp_path):
    torch.save({"format": "ambient-checkpoint/1", "payload": _Evil()}, tmp_path / "evil.pt")
    r = run_cli(["sample", "--checkpoint", tmp_path / "evil.pt", "--out", tmp_path / "s.zip", "--quiet"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "evil.pt" in r.stderr and "code could run" in r.stderr and "resume" not in r.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint-0000002.pt").write_bytes((tmp_path / "evil.pt").read_bytes())
    r = run_cli(
        [
            "train",
            "--dataset",
            tiny_dataset,
            "--steps",
            4,
            "--batch-size",
            4,
            "--quiet",
            *TINY_NET_ARGS,
            "--run-dir",
            run,
        ]
    )
    assert r.returncode == 2 and "checkpoint-0000002.pt" in r.stderr and "delete it to resume" in r.stderr, r.stderr


# ---------------------------------------------------------------- sample: errors before the work


@pytest.mark.parametrize("flag,value", [("--num", "0"), ("--batch-size", "0"), ("--steps", "0"), ("--threads", "0")])
def test_sample_refuses_nonsense_before_loading(tmp_path, flag, value):
    r = run_cli(["sample", "--checkpoint", tmp_path / "missing.pt", "--out", tmp_path / "s.zip", flag, value])
    assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------- the schema and the dataclass agree

TRAINING_BAD = [
    ("ema_decay", 1.0),
    ("ema_decay", -0.1),
    ("warmup_steps", -5),
    ("lr", 0.0),
    ("grad_clip", -1.0),
    ("consistency_weight", -1.0),
    ("log_every", 0),
    ("steps", 0),
    ("batch_size", 0),
    ("seed", -1),
    ("checkpoint_every", 0),
    ("formulation", "other"),
    ("precision", "fp16"),
]


@pytest.mark.parametrize("key,value", TRAINING_BAD)
def test_the_workflow_schema_refuses_what_the_training_config_refuses(tiny_dataset, key, value):
    """The Snakemake config is refused before any job for the same settings a TrainConfig refuses."""
    from snakemake.exceptions import WorkflowError
    from test_workflow import REPO, load_common, smoke_config

    cfg = smoke_config()
    cfg["training"][key] = value
    with pytest.raises(WorkflowError, match=f"training.{key}"):
        load_common()["validate_config"](cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    with pytest.raises(ValueError, match=key):
        _cfg(tiny_dataset, **{key: value})


def test_debug_switch_shows_the_traceback_and_bugs_always_do(tmp_path, monkeypatch):
    """A user error is one line; AMBIENT_DEBUG=1 or `ambient --debug` shows its traceback; an error
    that is no user error (a bug) always shows its traceback."""
    import argparse

    from ambient.entry import run_command

    def user_error(a):
        raise FileNotFoundError("x.zip: not found")

    def bug(a):
        return {}["missing"]

    monkeypatch.delenv("AMBIENT_DEBUG", raising=False)
    assert run_command(argparse.Namespace(func=user_error), "t") == 2
    monkeypatch.setenv("AMBIENT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run_command(argparse.Namespace(func=user_error), "t")
    monkeypatch.delenv("AMBIENT_DEBUG")
    with pytest.raises(FileNotFoundError):
        run_command(argparse.Namespace(func=user_error, debug=True), "t")
    with pytest.raises(KeyError):
        run_command(argparse.Namespace(func=bug), "t")
    r = run_cli(["--debug", "sample", "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "s.zip"])
    assert r.returncode != 0 and "Traceback" in r.stderr, r.stderr


def test_training_log_has_progress_lines_and_the_resume_line_under_quiet(tiny_dataset, tmp_path):
    args = [
        "train",
        "--dataset",
        tiny_dataset,
        "--steps",
        4,
        "--batch-size",
        4,
        "--log-every",
        2,
        "--checkpoint-every",
        2,
        "--base-channels",
        8,
        "--channel-mult",
        1,
        "--num-blocks",
        1,
        "--attn-resolutions",
        "--device",
        "cpu",
        "--threads",
        1,
        "--quiet",
        "--run-dir",
        tmp_path / "run",
    ]
    r = run_cli([*args, "--out", tmp_path / "a.pt"])
    assert r.returncode == 0 and "step 2/4 loss" in r.stdout and "step 4/4 loss" in r.stdout, r.stdout + r.stderr
    r = run_cli([*args[:4], 6, *args[5:], "--out", tmp_path / "b.pt"])
    assert r.returncode == 0 and "resuming from" in r.stdout and "step 6/6 loss" in r.stdout, r.stdout + r.stderr

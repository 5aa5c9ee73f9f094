"""Issue 28: no command writes an output over one of its inputs or over another of its outputs, and
every output path is checked before any work (ambient.paths.check_paths, via entry.check_arguments).

Most cases run the real parser and entry.run_command with the command's work replaced by a function
that fails the test: a refusal must come before it. Two run the command line in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import re

import pytest
from conftest import run_cli

from ambient.cli import build_parser, command_names
from ambient.entry import run_command
from ambient.layout import SDXL_ATTACK_PARTS


def _no_work(a):
    raise AssertionError("the command's work ran: the refusal must come before it")


def refused(argv: list[str], capsys) -> str:
    """Parse `ambient ARGV`, run it with its work replaced by _no_work: exit 2, the error line back."""
    argv = [str(x) for x in argv]
    args = build_parser([argv[0]]).parse_args(argv)
    args.func = _no_work
    assert run_command(args, argv[0]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ambient {argv[0]}: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def files(tmp_path):
    """Existing input files (their bytes compared after) and a folder, under tmp_path."""
    for name in ("ds.zip", "m.pt", "s.zip", "r.npz", "summary.csv", "check.json", "adapter.pt", "model.json"):
        (tmp_path / name).write_bytes(b"input " + name.encode())
    (tmp_path / "folder").mkdir()
    return tmp_path


def _snapshot(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


# (command line with {t} for tmp_path, the options named in the error): an output equal to an input
# or to another output. Every command that writes a file has one.
SAME = [
    ("train --dataset {t}/ds.zip --run-dir {t}/run --out {t}/ds.zip", "--out", "--dataset"),
    ("train --dataset {t}/run/model.pt --run-dir {t}/run", "--out (default)", "--dataset"),
    ("train --dataset {t}/ds.zip --run-dir {t}/ds.zip", "--run-dir", "--dataset"),
    ("train --dataset {t}/ds.zip --run-dir {t}/run --out {t}/run", "--run-dir", "--out"),
    ("sample --checkpoint {t}/m.pt --out {t}/m.pt", "--out", "--checkpoint"),
    ("attack --kind noise --checkpoint {t}/m.pt --train {t}/ds.zip --out {t}/m.pt", "--out", "--checkpoint"),
    (
        "attack --kind noise --checkpoint {t}/m.pt --train {t}/ds.zip --out {t}/a.json --gallery {t}/ds.zip",
        "--gallery",
        "--train",
    ),
    (
        "attack --kind noise --checkpoint {t}/m.pt --train {t}/ds.zip --out {t}/a.json --csv {t}/x --gallery {t}/x",
        "--gallery",
        "--csv",
    ),
    ("neighbors --samples {t}/s.zip --train {t}/ds.zip --out {t}/n.json --csv {t}/ds.zip", "--csv", "--train"),
    ("neighbors --samples {t}/s.zip --train {t}/ds.zip --out {t}/n.json --png {t}/n.json", "--png", "--out"),
    ("neighbors --samples {t}/n.csv --train {t}/ds.zip --out {t}/n.json", "--csv (default)", "--samples"),
    ("prepare --heldout-images 2 --heldout-out {t}/p.zip --out {t}/p.zip", "--heldout-out", "--out"),
    ("prepare --source folder --folder {t}/folder --out {t}/folder", "--out", "--folder"),
    ("download-dataset --source celeba --out {t}/d.zip --heldout-out {t}/d.zip", "--heldout-out", "--out"),
    ("download-dataset --source celeba --raw-dir {t}/d.zip --out {t}/d.zip", "--raw-dir", "--out"),
    ("claims --summary {t}/summary.csv --out {t}/summary.csv", "--out", "--summary"),
    ("claims --summary {t}/summary.csv --ruler-check {t}/check.json --out {t}/check.json", "--out", "--ruler-check"),
    ("summarize --dataset d --corruptions clean --out {t}/x.csv --metrics-json {t}/x.csv", "--metrics-json", "--out"),
    ("ref-stats --images {t}/ds.zip --out {t}/ds.zip", "--out", "--images"),
    ("fid --samples {t}/s.zip --ref {t}/r.npz --out {t}/r.npz", "--out", "--ref"),
    ("extractor-check --images {t}/ds.zip --ref {t}/r.npz --out {t}/ds.zip", "--out", "--images"),
    ("hf-energy --samples {t}/s.zip --train {t}/ds.zip --out {t}/s.zip", "--out", "--samples"),
    ("readme-tables --readme {t}/summary.csv --summary {t}/summary.csv", "--readme", "--summary"),
    ("sdxl-tiny-models --out-dir {t}/tiny --ref {t}/tiny", "--out-dir", "--ref"),
    ("sdxl-locate --model-path {t}/folder --ref {t}/folder", "--ref", "--model-path"),
    ("sdxl-prepare --source folder --folder {t}/folder --resolution 8 --out {t}/folder", "--out", "--folder"),
    ("sdxl-train --model {t}/model.json --dataset {t}/ds.zip --run-dir {t}/run --out {t}/ds.zip", "--out", "--dataset"),
    ("sdxl-generate --model {t}/model.json --adapter {t}/adapter.pt --out {t}/adapter.pt", "--out", "--adapter"),
    (
        "sdxl-score --images {t}/s.zip --reference {t}/ds.zip --mode pairs --out-json {t}/x --out-csv {t}/ds.zip",
        "--out-csv",
        "--reference",
    ),
    (
        "sdxl-score --images {t}/s.zip --reference {t}/ds.zip --mode pairs --out-json {t}/x --out-csv {t}/x",
        "--out-csv",
        "--out-json",
    ),
]
SAME += [
    (
        f"sdxl-attack-{k} --model {{t}}/model.json --images {{t}}/o/{k}_{p}.zip --out-dir {{t}}/o",
        f"--out-dir's {k}_{p}.zip",
        "--images",
    )
    for k, parts in SDXL_ATTACK_PARTS.items()
    for p in parts[:1]
]


@pytest.mark.parametrize("line, output, other", SAME, ids=[s[0].split()[0] + f"-{i}" for i, s in enumerate(SAME)])
def test_an_output_over_an_input_or_another_output_is_refused_before_the_work(files, capsys, line, output, other):
    (files / "run").mkdir()
    (files / "o").mkdir()
    (files / "n.csv").write_bytes(b"samples named like the default csv")
    (files / "run" / "model.pt").write_bytes(b"a dataset named like the default model")
    (files / "o" / "noise_noised.zip").write_bytes(b"images named like an attack output")
    (files / "o" / "inpaint_masked.zip").write_bytes(b"images named like an attack output")
    before = _snapshot(files)
    err = refused(line.format(t=files).split(), capsys)
    assert re.search(rf"{re.escape(output)} \S+ is the same (file|path) as {re.escape(other)}: choose another", err), (
        err
    )
    assert _snapshot(files) == before  # nothing written, nothing touched


def test_every_command_that_writes_has_a_case_above():
    tested = {s[0].split()[0] for s in SAME}
    # pull writes through dvc; schema rewrites its one file in place; fetch-weights writes a folder (below)
    assert set(command_names()) - {"pull", "schema", "fetch-weights"} <= tested


# ---------------------------------------------------------------- the output itself


# (command line, the file output) for the checks of one output: a folder, empty, read-only
ONE_OUTPUT = [
    ("sample --checkpoint {t}/m.pt", "--out"),
    ("train --dataset {t}/ds.zip --run-dir {t}/run", "--out"),
    ("neighbors --samples {t}/s.zip --train {t}/ds.zip --out {t}/n.json", "--csv"),
    ("neighbors --samples {t}/s.zip --train {t}/ds.zip --out {t}/n.json", "--gallery"),
    ("attack --kind noise --checkpoint {t}/m.pt --train {t}/ds.zip --out {t}/a.json", "--csv"),
    ("attack --kind noise --checkpoint {t}/m.pt --train {t}/ds.zip --out {t}/a.json", "--gallery"),
    ("prepare --heldout-images 2 --out {t}/p.zip", "--heldout-out"),
    ("claims --summary {t}/summary.csv", "--out"),
    ("summarize --dataset d --corruptions clean --out {t}/x.csv", "--metrics-json"),
    ("fid --samples {t}/s.zip --ref {t}/r.npz", "--out"),
    ("sdxl-score --images {t}/s.zip --reference {t}/ds.zip --mode pairs --out-json {t}/x.json", "--out-csv"),
]
IDS = [f"{line.split()[0]}{opt}" for line, opt in ONE_OUTPUT]


def _run_with(files, capsys, line, option, value):
    before = _snapshot(files)
    err = refused([*line.format(t=files).split(), option, str(value)], capsys)
    assert _snapshot(files) == before  # no file written or touched (a new one would be a new key)
    return err


@pytest.mark.parametrize("line, option", ONE_OUTPUT, ids=IDS)
def test_an_existing_folder_as_an_output_is_refused(files, capsys, line, option):
    assert f"{option} {files / 'folder'}: is a folder" in _run_with(files, capsys, line, option, files / "folder")


@pytest.mark.parametrize("line, option", ONE_OUTPUT, ids=IDS)
def test_an_empty_output_is_refused(files, capsys, line, option):
    assert f"{option} is empty" in _run_with(files, capsys, line, option, "")


@pytest.mark.parametrize("line, option", ONE_OUTPUT, ids=IDS)
def test_a_read_only_output_is_refused_before_the_work(files, capsys, line, option):
    ro = files / "folder" / "read-only.out"
    ro.write_bytes(b"protected")
    ro.chmod(0o444)  # no write bit: refused even for root, who may write anything
    assert f"{option} {ro}: is read-only" in _run_with(files, capsys, line, option, ro)
    assert ro.read_bytes() == b"protected"


@pytest.mark.parametrize("line, option", ONE_OUTPUT[:3], ids=IDS[:3])
def test_an_output_under_a_file_is_refused(files, capsys, line, option):
    assert "cannot create its folder" in _run_with(files, capsys, line, option, files / "m.pt" / "x")


def test_a_symlink_to_an_input_is_the_input(files, capsys):
    (files / "link.zip").symlink_to(files / "ds.zip")
    err = refused(["ref-stats", "--images", files / "ds.zip", "--out", files / "link.zip"], capsys)
    assert "is the same file as --images" in err


def test_a_hard_link_to_an_input_is_the_input(files, capsys):
    os.link(files / "m.pt", files / "hard.pt")
    assert "is the same file as --checkpoint" in refused(
        ["sample", "--checkpoint", files / "m.pt", "--out", files / "hard.pt"], capsys
    )


@pytest.mark.parametrize("option, line", [("--run-dir", "train --dataset {t}/ds.zip"), ("--dest", "fetch-weights")])
def test_an_output_folder_that_is_a_file_is_refused(files, capsys, option, line):
    err = refused([*line.format(t=files).split(), option, files / "m.pt"], capsys)
    assert f"{option} {files / 'm.pt'}" in err and ("is a file" in err or "same path" in err)


def test_an_input_inside_the_run_folder_is_kept_when_nothing_is_written_over_it(files, capsys):
    """A run folder may hold its dataset; only the files the command writes there may not be inputs."""
    (files / "run").mkdir()
    (files / "run" / "ds.zip").write_bytes(b"data")
    args = build_parser(["train"]).parse_args(
        ["train", "--dataset", str(files / "run/ds.zip"), "--run-dir", str(files / "run")]
    )
    ran = []
    args.func = ran.append
    assert run_command(args, "train") == 0 and ran


# ---------------------------------------------------------------- every path option declared


OUTPUT_LIKE = re.compile(r"(^|_)(out|csv|gallery|json|png|npz|dir|dest|ref|readme|file|adapter|checkpoint)$")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _declared() -> dict:
    return {n: p.get_default("path_roles") for n, p in _subparsers().items() if p.get_default("path_roles")}


def test_every_path_option_is_declared():
    """A command that gains an output (or any option named like a path) without declaring it fails here."""
    parsers = _subparsers()
    assert set(parsers) == set(command_names())
    for name, p in parsers.items():
        roles = p.get_default("path_roles")
        dests = {a.dest for a in p._actions if a.option_strings and a.nargs != 0}
        pathlike = {d for d in dests if OUTPUT_LIKE.search(d)}
        if name == "pull":  # DVC targets: dvc writes, not ambient
            assert not pathlike and roles is None
            continue
        assert roles is not None, f"{name}: declare its path options (ambient.paths.declare_paths)"
        assert pathlike <= roles.dests(), f"{name}: undeclared path options {sorted(pathlike - roles.dests())}"
        assert roles.dests() <= dests, f"{name}: declares options it has not: {sorted(roles.dests() - dests)}"


# ---------------------------------------------------------------- the command line, end to end


def test_train_never_replaces_its_dataset(tiny_dataset, tmp_path):
    data = tmp_path / "ds.zip"
    data.write_bytes(tiny_dataset.read_bytes())
    mtime = data.stat().st_mtime_ns
    r = run_cli(["train", "--dataset", data, "--run-dir", tmp_path / "run", "--out", data, "--steps", "1"])
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        f"ambient train: error: --out {data} is the same file as --dataset: choose another output path"
    )
    assert data.read_bytes() == tiny_dataset.read_bytes() and data.stat().st_mtime_ns == mtime
    assert not (tmp_path / "run").exists()


def test_sample_never_replaces_its_checkpoint(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not even a checkpoint: refused before it is read")
    r = run_cli(["sample", "--checkpoint", ckpt, "--out", ckpt, "--device", "cpu"])
    assert r.returncode == 2 and "--out" in r.stderr and "same file as --checkpoint" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and ckpt.read_bytes().startswith(b"not even")

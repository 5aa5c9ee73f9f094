"""Paper-scale configs (config/paper-*.yaml), the SLURM profile and the download command, all
without a GPU or the network: schema validation, dry runs whose job table is parsed for every
job's resources and shell command, the CI guard of the download rule, and `ambient download-dataset`
on a local fake archive."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli
from PIL import Image
from test_workflow import REPO, copy_workflow, load_common, snakemake, train_settings

PAPER_CONFIGS = ("config/paper-celeba.yaml", "config/paper-ffhq.yaml")
GPU_RULES = {"train", "sample", "attack", "neighbors", "ref_stats", "fid", "ruler_check"}


def slurm_plugin_installed() -> bool:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return False
    return True


def parse_jobs(text: str) -> list[dict]:
    """The job blocks of `snakemake -n` output: rule, threads, resources (dict), shell command."""
    jobs, cur = [], None
    for line in text.splitlines():
        head = line.strip()
        # a job of a group job (`group:` under the SLURM profile) is printed indented by 4
        if line.startswith(("rule ", "localrule ", "    rule ", "    localrule ")) and head.endswith(":"):
            cur = {"rule": head.split()[1][:-1], "threads": 1, "resources": {}, "shell": ""}
            jobs.append(cur)
        elif cur is None:
            continue
        elif head.startswith("threads:"):
            cur["threads"] = int(head.split(":", 1)[1])
        elif head.startswith("resources:"):
            for item in head.split(":", 1)[1].split(", "):
                k, _, v = item.strip().partition("=")
                cur["resources"][k] = v
        elif head.startswith("Shell command:"):
            cur["shell"] = head.split(":", 1)[1].strip()
        elif head.startswith("wildcards:"):
            cur["wildcards"] = head.split(":", 1)[1].strip()
    return jobs


def dry_run(wd: Path, *args) -> list[dict]:
    r = snakemake(wd, "-n", "--cores", "64", *args, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    jobs = parse_jobs(r.stdout + r.stderr)
    assert jobs, r.stdout[-2000:]
    return jobs


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("paper") / "wf")


@pytest.mark.parametrize("path", PAPER_CONFIGS)
def test_paper_configs_are_valid(path):
    common = load_common()
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = yaml.safe_load((REPO / path).read_text())
    merged = {
        **base,
        **{
            k: ({**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v)
            for k, v in cfg.items()
        },
    }
    common["validate_config"](merged, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert merged["dataset"]["source"] in ("celeba", "ffhq")
    assert merged["training"]["precision"] == "bf16" and merged["device"] == "cuda"
    assert merged["network"] == {
        "base_channels": 128,
        "channel_mult": [1, 2, 2, 2],
        "num_blocks": 4,
        "attn_resolutions": [16],
        "dropout": merged["network"]["dropout"],
    }
    assert merged["training"]["batch_size"] == 256 and merged["training"]["lr"] == 2e-4
    assert merged["training"]["steps"] * merged["training"]["batch_size"] == 200_000_000
    assert {"inception", "dinov2_vitl14"} <= set(merged["evaluation"]["extractors"])


def test_paper_celeba_dry_run(wd):
    jobs = dry_run(wd, "--configfile", "config/paper-celeba.yaml")
    rules = [j["rule"] for j in jobs]
    assert rules.count("download_dataset") == 1 and "prepare_dataset" not in rules and "fetch_weights" in rules
    trains = {j["wildcards"].split("corruption=")[1]: j for j in jobs if j["rule"] == "train"}
    assert sorted(trains) == ["clean", "dust-p0.20", "dust-p0.40", "dust-p0.60", "dust-p0.80"]
    for name, j in trains.items():
        assert j["resources"]["gpu"] == "1"
        assert j["shell"].startswith(
            '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus 1 -- "$AMBIENT_PYTHON" -m ambient train'
        )
        assert "--device cuda" in j["shell"]
        settings = train_settings(j["shell"] + " ", name)
        training, network = settings["training"], settings["network"]
        assert training["precision"] == "bf16"
        assert (training["steps"], training["batch_size"], training["lr"]) == (781250, 256, 0.0002)
        assert network == {
            **network,
            "base_channels": 128,
            "channel_mult": [1, 2, 2, 2],
            "num_blocks": 4,
            "attn_resolutions": [16],
        }
        assert ("--delta 0.1" in j["shell"]) == (name != "clean")
    dl = next(j for j in jobs if j["rule"] == "download_dataset")
    assert (
        "-m ambient download-dataset --source celeba --raw-dir data/raw --resolution 64 --seed 0 "
        "--num-images 3000 --heldout-out data/celeba64-3k-heldout.zip --heldout-images 20000 "
        "--out data/celeba64-3k.zip"
    ) in dl["shell"]
    # quality is scored against images outside the training subset
    refs = [j for j in jobs if j["rule"] == "ref_stats"]
    assert refs and all("--images data/celeba64-3k-heldout.zip" in j["shell"] for j in refs)
    assert all("--ref-name heldout" in j["shell"] for j in jobs if j["rule"] == "fid")
    nb = [j for j in jobs if j["rule"] == "neighbors"]
    assert len(nb) == 5 and all("--extractor dinov2_vitg14 --fallback none" in j["shell"] for j in nb)
    assert all(j["resources"]["gpu"] == "1" for j in nb)


def test_paper_ffhq_dry_run_has_noise_runs_and_naive(wd):
    jobs = dry_run(wd, "--configfile", "config/paper-ffhq.yaml")
    trains = {j["wildcards"].split("corruption=")[1]: j["shell"] for j in jobs if j["rule"] == "train"}
    assert sorted(trains) == ["clean", "noise-s0.05", "noise-s0.10", "noise-s0.20", "noise-s0.20-naive"]
    assert "--corruption noise-s0.20 --delta 0.0 --loss edm " in trains["noise-s0.20-naive"]
    assert "--corruption noise-s0.10 --delta 0.0 --settings " in trains["noise-s0.10"]
    assert train_settings(trains["noise-s0.10"] + " ", "noise-s0.10")["training"]["consistency_weight"] == 0.1
    assert train_settings(trains["clean"] + " ", "clean")["training"]["xflip"] is True
    rules = [j["rule"] for j in jobs]
    assert {"fig5_noise_generations", "fig6_noise_histograms", "download_dataset"} <= set(rules)
    dl = next(j for j in jobs if j["rule"] == "download_dataset")
    assert (
        "--source ffhq" in dl["shell"]
        and "--num-images 60000 --heldout-out data/ffhq64-heldout.zip --out" in dl["shell"]
    )
    # trained with consistency: also sampled full-length
    assert {j["wildcards"] for j in jobs if j["rule"] == "sample_full"} == {
        f"dataset=ffhq64, corruption=noise-s{s}" for s in ("0.05", "0.10", "0.20")
    }


def test_multi_gpu_training_uses_torchrun(wd):
    (wd / "gpus4.yaml").write_text(yaml.safe_dump({"resources": {"train_gpu": 4}}))
    jobs = dry_run(wd, "--configfile", "config/paper-celeba.yaml", "gpus4.yaml")
    for j in (j for j in jobs if j["rule"] == "train"):
        assert j["resources"]["gpu"] == "4"
        assert j["shell"].startswith(
            '"$AMBIENT_PYTHON" -m ambient.pipeline.gpu_slots --gpus 4 -- "$AMBIENT_PYTHON" '
            "-m torch.distributed.run --standalone --nproc_per_node=4 -m ambient train "
        )
        assert "--device cuda --threads 2 " in j["shell"]  # 8 threads over 4 processes
    assert all(j["resources"]["gpu"] == "1" for j in jobs if j["rule"] == "sample")


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_slurm_profile_gives_every_job_its_resources(wd, config):
    """`snakemake --profile profiles/slurm -n`: account, partition (GPU rules on the GPU partition),
    runtime, memory, threads and GPUs of every job, as the config says."""
    cfg = yaml.safe_load((REPO / config).read_text())
    args = ["--profile", "profiles/slurm", "--workflow-profile", "none", "--configfile", config]
    # the profile names executor: slurm; the plugin (a dev dependency) validates every option of it
    assert slurm_plugin_installed(), "snakemake-executor-plugin-slurm is missing: pip install -e '.[dev]'"
    jobs = dry_run(wd, *args)
    step = {
        "train": "train",
        "sample": "sample",
        "prepare_dataset": "prepare",
        "download_dataset": "prepare",
        "neighbors": "evaluate",
        "ref_stats": "evaluate",
        "fid": "evaluate",
        "ruler_check": "evaluate",
        "attack": "evaluate",
        "hf_energy": "evaluate",
        "summary": "figures",
    }
    seen = set()
    for j in jobs:
        rule, res = j["rule"], j["resources"]
        if rule == "all":
            continue
        seen.add(rule)
        assert res["slurm_account"] == "YOUR_ACCOUNT", j
        want = "YOUR_GPU_PARTITION" if rule in GPU_RULES else "YOUR_CPU_PARTITION"
        assert res["slurm_partition"] == want, j
        s = step.get(rule, "figures" if rule.startswith(("fig", "tradeoff", "sample_grids")) else None)
        if s is not None:
            assert int(res["runtime"]) == cfg["resources"]["runtime"][s], j
            assert int(res["mem_mb"]) == cfg["resources"]["mem_mb"][s], j
        if rule in ("train", "sample", "attack", "neighbors", "ref_stats", "fid", "ruler_check"):
            assert res.get("gpu") == "1" and j["threads"] == cfg["threads_per_job"], j
        elif rule in ("download_dataset", "hf_energy", "summary"):
            assert res.get("gpu", "0") == "0" and j["threads"] == 1, j
    assert {"train", "sample", "attack", "neighbors", "fid", "ruler_check", "download_dataset", "fetch_weights"} <= seen


def test_downloads_are_localrules_and_profile_keys():
    snakefile = (REPO / "Snakefile").read_text()
    local = snakefile.split("localrules:", 1)[1].split("rule all:", 1)[0]
    assert "fetch_weights" in local and "download_dataset" in local
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())
    assert prof["executor"] == "slurm"
    assert {"slurm_account", "slurm_partition", "runtime", "mem_mb"} <= set(prof["default-resources"])
    assert set(prof["set-resources"]) == GPU_RULES


def test_download_rule_refuses_under_ci(wd):
    """The paper configs' download never runs in CI (CI=true): the job fails at once, no network."""
    env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "data/celeba64-3k.zip",
            "--cores",
            "1",
            "--configfile",
            "config/paper-celeba.yaml",
        ],
        cwd=wd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0
    assert "refusing to download under CI" in (wd / "logs" / "celeba64-3k" / "download.log").read_text()
    assert not (wd / "data" / "celeba64-3k.zip").exists() and not (wd / "data" / "raw").exists()


# ---------------------------------------------------------------- ambient download-dataset


def _fake_ffhq_zip(path: Path, n: int = 5) -> None:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, format="PNG")
            zf.writestr(f"thumbnails128x128/00000/{i:05d}.png", buf.getvalue())


def test_download_dataset_from_a_local_archive(tmp_path):
    from ambient.data import read_image_zip

    archive = tmp_path / "thumbnails128x128.zip"
    _fake_ffhq_zip(archive)
    out = tmp_path / "ffhq16.zip"
    cmd = [
        sys.executable,
        "-m",
        "ambient",
        "download-dataset",
        "--source",
        "ffhq",
        "--raw-dir",
        str(tmp_path / "raw"),
        "--resolution",
        "16",
        "--num-images",
        "3",
        "--seed",
        "1",
        "--url",
        archive.as_uri(),
        "--out",
        str(out),
        "--heldout-out",
        str(tmp_path / "held.zip"),
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    held = read_image_zip(tmp_path / "held.zip")  # the images outside the training subset, all of them
    assert held.manifest["split"] == "heldout" and len(held) == 2
    assert sorted(held.manifest["subset_indices"] + read_image_zip(out).manifest["subset_indices"]) == list(range(5))
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["num_images"] == 3 and info["source"] == "ffhq" and info["seed"] == 1
    ds = read_image_zip(out)
    assert ds.images.shape == (3, 3, 16, 16) and ds.manifest["seed"] == 1
    assert ds.manifest["subset_indices"] == sorted(np.random.default_rng(1).choice(5, 3, replace=False).tolist())
    r = run_cli(["download-dataset", "--list"], timeout=60)
    assert r.returncode == 0 and "celeba" in r.stdout and "ffhq" in r.stdout
    r = run_cli(
        ["download-dataset", "--source", "ffhq", "--raw-dir", tmp_path / "raw2", "--out", tmp_path / "x.zip"],
        env={"AMBIENT_FFHQ_URL": ""},
        timeout=60,
    )
    assert r.returncode == 2 and "error" in r.stderr  # FFHQ has no default url


def test_download_dataset_registers_on_a_parser():
    import argparse

    from ambient.cli.data import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["download-dataset", "--source", "celeba", "--out", "x.zip"])
    assert a.source == "celeba" and a.raw_dir == "data/raw" and a.resolution == 64 and callable(a.func)


# ---------------------------------------------------------------- the SLURM profile, submitted for real


def _slurm_run(wd: Path, bin_dir: Path, *args, env_extra=None, timeout=600):
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",
        **(env_extra or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "profiles/slurm",
        "--workflow-profile",
        "none",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "5",
        *map(str, args),
    ]
    return subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_slurm_profile_submits_through_the_plugin_and_a_killed_training_resumes(tmp_path):
    """profiles/slurm through the pinned snakemake-executor-plugin-slurm, against stand-in sbatch,
    sacct, srun, ... (tests/fake_slurm.py) that record their arguments and run each job here: every
    option is accepted, each job's sbatch carries the account, partition, --time, --mem and
    --cpus-per-task of the config, and a training killed mid-way (as at its --time limit) is
    resubmitted and resumes from its checkpoint instead of starting again."""
    import fake_slurm

    wd = copy_workflow(tmp_path / "wf")
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    fake_slurm.install(bin_dir, state)
    from test_workflow import _merged, default_config, smoke_config

    cfg = _merged(default_config(), smoke_config())  # what --configfile config/smoke.yaml gives
    target = "results/models/smoke8/clean/model.pt"
    r = _slurm_run(
        wd,
        bin_dir,
        target,
        "--configfile",
        "config/smoke.yaml",  # --configfile takes the rest
        env_extra={"FAKE_SLURM_KILL": "train:results/models/smoke8/clean/train/checkpoint-*.pt"},
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    subs = [c for c in fake_slurm.calls(state) if c["cmd"] == "sbatch"]
    assert [c["rule"] for c in subs] == ["prepare_dataset", "train", "train"], subs
    step = {"prepare_dataset": "prepare", "train": "train"}
    for c in subs:
        argv = " ".join(c["argv"])
        want = "YOUR_GPU_PARTITION" if c["rule"] in GPU_RULES else "YOUR_CPU_PARTITION"
        assert " -A YOUR_ACCOUNT " in argv and f" -p {want} " in argv, argv
        assert f" -t {cfg['resources']['runtime'][step[c['rule']]]} " in argv, argv
        assert f" --mem {cfg['resources']['mem_mb'][step[c['rule']]]} " in argv, argv
        assert f"--cpus-per-task={cfg['threads_per_job'] if c['rule'] == 'train' else 1}" in argv, argv
        assert "--gpus" not in argv  # the smoke config asks for no GPU
    assert "--attempt 2" in " ".join(subs[2]["argv"])  # the retry of the killed training
    # the retry resumed: the checkpoint the killed job had written is the same file, untouched
    killed = json.loads((state / "killed-train").read_text())
    st = os.stat(killed["file"])
    assert (st.st_ino, st.st_mtime_ns) == (killed["inode"], killed["mtime_ns"])
    steps = [json.loads(line)["step"] for line in (wd / "results/models/smoke8/clean/train/train_log.jsonl").open()]
    assert steps == sorted(set(steps)) and steps[-1] == cfg["training"]["steps"]
    assert (wd / target).is_file()


@pytest.mark.slow
def test_slurm_profile_gpu_and_memory_reach_sbatch_and_only_training_retries(tmp_path):
    """A GPU config: the training job's sbatch asks for --gpus=N and --mem as the profile's comments
    say; a failing training is submitted 1 + retries times (its rule's `retries: 2`)."""
    import fake_slurm

    wd = copy_workflow(tmp_path / "wf")
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    fake_slurm.install(bin_dir, state)
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "data/smoke8.zip", "--cores", "1", "--configfile", "config/smoke.yaml"],
        cwd=wd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wd / "gpu.yaml").write_text(
        yaml.safe_dump({"device": "auto", "resources": {"gpu": 1, "mem_mb": {"train": 64000}}})
    )
    r = _slurm_run(
        wd,
        bin_dir,
        "results/models/smoke8/clean/model.pt",
        "--configfile",
        "config/smoke.yaml",
        "gpu.yaml",
        env_extra={"FAKE_SLURM_FAIL": "1"},
    )
    assert r.returncode != 0
    subs = [c for c in fake_slurm.calls(state) if c["cmd"] == "sbatch"]
    assert [c["rule"] for c in subs] == ["train"] * 3, (r.stdout + r.stderr)[-4000:]
    for c in subs:
        argv = " ".join(c["argv"])
        assert " --gpus=1" in argv and " --mem 64000 " in argv and " -p YOUR_GPU_PARTITION " in argv, argv


@pytest.mark.slow
def test_slurm_profile_groups_the_short_evaluation_jobs(tmp_path):
    """`group: "evaluate"` with the profile's group-components: the five short evaluation jobs of a
    model (two ref_stats, two fid, one neighbors) reach the cluster in fewer sbatch calls than jobs,
    each a group submission, and all their outputs are written."""
    import fake_slurm

    wd = copy_workflow(tmp_path / "wf")
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    fake_slurm.install(bin_dir, state)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "results/samples/smoke8/clean/samples.zip",
            "--cores",
            "2",
            "--configfile",
            "config/smoke.yaml",
        ],
        cwd=wd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    targets = [
        "results/evaluation/smoke8/clean/fd_pixel.json",
        "results/evaluation/smoke8/clean/fd_filterbank.json",
        "results/evaluation/smoke8/clean/neighbors_pixel.json",
    ]
    r = _slurm_run(wd, bin_dir, *targets, "--configfile", "config/smoke.yaml")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    subs = [c for c in fake_slurm.calls(state) if c["cmd"] == "sbatch"]
    # three connected pieces (ref_stats -> fid per extractor, and neighbors) <= evaluate=4: one sbatch
    assert len(subs) == 1 and subs[0]["rule"].startswith("evaluate"), subs
    for t in targets:
        assert (wd / t).is_file(), t

"""The SDXL branch (issue 13) on tiny random-weight models: LoRA training with the latent Tweedie loss,
exact resume after kill -9, the early-stopped sampler, both attacks, range errors, the missing-model
error, the DAG of config/paper-sdxl.yaml, and (slow) the smoke config end to end.
The Gaussian-toy minimiser test of the latent Tweedie loss is in tests/test_latent_tweedie.py."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from conftest import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL_ID = "stabilityai/stable-diffusion-xl-base-1.0"
SDXL_FIGURES = ("sdxl_fig1_4_attacks", "sdxl_fig5_7_generations", "sdxl_fig8_similarity_histograms")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny pipeline folder and an 8-image 64x64 RGB dataset zip."""
    from ambient.latent.tiny import build_tiny_pipeline

    d = tmp_path_factory.mktemp("sdxl")
    model = build_tiny_pipeline(d / "tiny", seed=0)
    r = run_cli(["sdxl-prepare", "--resolution", "64", "--num-images", "8", "--out", d / "data.zip"])
    assert r.returncode == 0, r.stderr
    return model, d / "data.zip"


@pytest.fixture(scope="module")
def sdxl(tiny):
    from ambient.latent.models import SDXL

    torch.set_num_threads(1)
    return SDXL(tiny[0], "cpu")


def _train_args(model, data, run_dir, out, steps=4):
    return [
        "sdxl-train",
        "--model",
        model,
        "--dataset",
        data,
        "--t-n",
        "100",
        "--steps",
        str(steps),
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--run-dir",
        run_dir,
        "--out",
        out,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
    ]


def test_tiny_models_load_with_the_same_code_as_real_ones(tiny, sdxl):
    from ambient.latent.models import describe_model

    assert describe_model(tiny[0])["tiny"]
    assert sdxl.vae_factor == 2 and sdxl.T == 1000
    assert sdxl.unet.config.addition_embed_type == "text_time"
    from ambient.latent.tweedie import ddpm_alphas_cumprod

    torch.testing.assert_close(sdxl.alphas_cumprod, ddpm_alphas_cumprod(), rtol=1e-5, atol=1e-6)
    from ambient.data import read_image_zip

    z = sdxl.encode(read_image_zip(tiny[1]).images[:2])
    assert z.shape == (2, 4, 32, 32)
    assert sdxl.decode(z).shape == (2, 3, 64, 64)


def test_kill_and_resume_is_exact_and_only_lora_changes(tiny, tmp_path, sdxl):
    from ambient.cli import main

    model, data = tiny
    # the uninterrupted run in this process (1 thread, as the subprocesses), the killed + resumed one in two
    assert main(list(map(str, _train_args(model, data, tmp_path / "one", tmp_path / "one.pt")))) == 0
    killed = run_cli(_train_args(model, data, tmp_path / "two", tmp_path / "two.pt"), env={"AMBIENT_KILL_AT_STEP": "2"})
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "two.pt").exists() and (tmp_path / "two" / "checkpoint-0000002.pt").is_file()
    resumed = run_cli(_train_args(model, data, tmp_path / "two", tmp_path / "two.pt"))
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "one.pt", weights_only=True)
    b = torch.load(tmp_path / "two.pt", weights_only=True)
    assert a["lora"].keys() == b["lora"].keys()
    for k in a["lora"]:
        assert torch.equal(a["lora"][k], b["lora"][k]), k
    logs = [(tmp_path / d / "train_log.jsonl").read_text() for d in ("one", "two")]
    assert logs[0] == logs[1] or [ln.split('"s"')[0] for ln in logs[0].splitlines()] == [
        ln.split('"s"')[0] for ln in logs[1].splitlines()
    ]
    # the adapter file holds LoRA tensors only; the base weights are untouched, LoRA B moved from its zero init
    assert all("lora_" in k for k in a["lora"])
    ckpt = torch.load(tmp_path / "one" / "checkpoint-0000004.pt", weights_only=True)
    assert set(ckpt) >= {"lora", "optimizer", "step", "rng"} and ckpt["step"] == 4
    from ambient.latent.lora import load_finetuned

    m, _ = load_finetuned(model, tmp_path / "one.pt")
    base = dict(sdxl.unet.named_parameters())
    changed_lora = 0
    for name, p in m.unet.named_parameters():
        if "lora_" in name:
            changed_lora += int("lora_B" in name and bool(p.abs().sum() > 0))
            continue
        torch.testing.assert_close(p, base[name.replace(".base_layer", "")], rtol=0, atol=0)
    assert changed_lora > 0


def test_training_with_the_consistency_term_changes_only_lora_and_moves_the_loss(tiny, tmp_path, sdxl):
    """consistency_weight > 0 (the official consistency_coeff): the same draws of the Tweedie term plus
    the consistency term below t_n, so the logged loss differs from the weight-0 run; base weights stay."""
    from ambient.cli import main
    from ambient.latent.lora import load_finetuned

    model, data = tiny
    for name, extra in (("plain", []), ("consistent", ["--consistency-weight", "1.0"])):
        args = _train_args(model, data, tmp_path / name, tmp_path / f"{name}.pt", steps=2) + extra
        assert main(list(map(str, args))) == 0
    losses = {
        n: [json.loads(ln)["loss"] for ln in (tmp_path / n / "train_log.jsonl").read_text().splitlines()]
        for n in ("plain", "consistent")
    }
    assert losses["plain"][0] != losses["consistent"][0] and all(map(math.isfinite, losses["consistent"]))
    assert torch.load(tmp_path / "consistent.pt", weights_only=True)["config"]["consistency_weight"] == 1.0
    m, _ = load_finetuned(model, tmp_path / "consistent.pt")
    base = dict(sdxl.unet.named_parameters())
    for name, p in m.unet.named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(p, base[name.replace(".base_layer", "")], rtol=0, atol=0)


def test_early_stopped_and_full_sampler_shapes(sdxl):
    from ambient.latent.generate import generate
    from ambient.latent.tweedie import ddim_from

    cond = sdxl.condition("a photo of a face", 64)
    early = generate(sdxl, cond, 3, 64, seed=0, num_steps=2, stop_t=100, batch_size=2)
    full = generate(sdxl, cond, 3, 64, seed=0, num_steps=2, stop_t=0, batch_size=3)
    assert early.shape == full.shape == (3, 3, 64, 64) and early.dtype == np.uint8
    assert not np.array_equal(early, full)
    # DDIM from an intermediate start (the noise attack's): handed the exact noise of x_t, every step
    # stays on x0's trajectory and returns x0; the batch size does not change the samples
    g = torch.Generator().manual_seed(0)
    x0, e = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    a = sdxl.alphas_cumprod[500].item()
    x_t = a**0.5 * x0 + (1 - a) ** 0.5 * e
    torch.testing.assert_close(ddim_from(lambda x, t: e, x_t, sdxl.alphas_cumprod, 500, 5, 0), x0, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="stop_t=600 <= start_t=500"):
        ddim_from(lambda x, t: e, x_t, sdxl.alphas_cumprod, 500, 5, 600)
    again = generate(sdxl, cond, 3, 64, seed=0, num_steps=2, stop_t=100, batch_size=3)
    np.testing.assert_array_equal(early, again)


def test_attacks_run_with_expected_shapes(sdxl, tiny):
    from ambient.data import read_image_zip
    from ambient.latent.attacks import box_mask, inpaint_attack, noise_attack

    images = read_image_zip(tiny[1]).images[:2]
    out = noise_attack(sdxl, images, sdxl.condition("", 64), t_attack=900, num_steps=2, seed=0)
    assert set(out) == {"noised", "one_step", "full"}
    assert all(v.shape == (2, 3, 64, 64) and v.dtype == np.uint8 for v in out.values())
    ip = inpaint_attack(sdxl, images, "", fraction=0.5, num_steps=2, seed=0)
    assert ip["inpainted"].shape == ip["masked"].shape == (2, 3, 64, 64)
    m = box_mask(64, 0.25)
    assert (m > 0).mean() == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_mask_fraction_out_of_range_is_a_clear_error(fraction):
    from ambient.latent.attacks import box_mask

    with pytest.raises(ValueError, match=rf"mask_fraction={fraction} must lie in \(0, 1\)"):
        box_mask(64, fraction)


def test_noise_levels_out_of_range_are_clear_errors(sdxl, tiny, tmp_path, capsys):
    from ambient.cli import main
    from ambient.latent.attacks import noise_attack
    from ambient.latent.generate import generate

    images = np.zeros((1, 3, 64, 64), np.uint8)
    for t in (1000, -1, 12.5):
        with pytest.raises(ValueError, match=r"t_attack=.* must be an integer timestep in \[0, 1000\)"):
            noise_attack(sdxl, images, sdxl.condition("", 64), t_attack=t, num_steps=1)
    with pytest.raises(ValueError, match="stop_t=999"):
        generate(sdxl, sdxl.condition("", 64), 1, 64, stop_t=999)
    capsys.readouterr()
    assert (
        main(
            [
                "sdxl-attack-inpaint",
                "--model",
                str(tiny[0]),
                "--images",
                str(tiny[1]),
                "--fraction",
                "1.2",
                "--out-dir",
                str(tmp_path / "attack"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "mask_fraction=1.2 must lie in (0, 1)" in capsys.readouterr().err
    assert (
        main(
            [
                "sdxl-train",
                "--model",
                str(tiny[0]),
                "--dataset",
                str(tiny[1]),
                "--t-n",
                "999",
                "--steps",
                "1",
                "--run-dir",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "x.pt"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "t_n=999" in capsys.readouterr().err


def test_missing_model_fails_before_any_work_naming_it(tmp_path, capsys):
    from ambient.cli import main

    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    r = run_cli(["sdxl-locate", "--model-id", MODEL_ID, "--ref", tmp_path / "m.json"], env=env)
    assert r.returncode == 2
    assert MODEL_ID in r.stderr and f"huggingface-cli download {MODEL_ID}" in r.stderr, r.stderr
    assert not (tmp_path / "m.json").exists()
    assert main(["sdxl-generate", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s.zip")]) == 2
    assert "model_index.json missing" in capsys.readouterr().err


def _snakemake(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_paper_sdxl_dry_run_lists_every_sdxl_job_and_no_pixel_job():
    r = _snakemake("-n", "--forceall", "--cores", "1", "--quiet", "rules", "--configfile", "config/paper-sdxl.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    cfg = yaml.safe_load((REPO / "config/paper-sdxl.yaml").read_text())["sdxl"]
    levels, samplers = len(cfg["noise_levels"]), 2
    expected = {
        "sdxl_locate_model": 1,
        "sdxl_prepare": 2,
        "sdxl_train": levels,
        "sdxl_generate": levels * samplers,
        "sdxl_score_generations": levels * samplers,
        "sdxl_attack_noise": 1,
        "sdxl_attack_inpaint": 1,
        "sdxl_score_attack": 3,
        "sdxl_fig1_4_attacks": 1,
        "sdxl_fig5_7_generations": 1,
        "sdxl_fig8_similarity_histograms": 1,
        "all": 1,
    }
    for rule, count in expected.items():
        assert re.search(rf"^{rule}\s+{count}$", out, re.M), f"{rule} x{count} not planned:\n{out}"
    assert re.search(rf"^total\s+{sum(expected.values())}$", out, re.M), out
    assert "sdxl_tiny_models" not in out and not re.search(r"^(train|sample|prepare_dataset)\s", out, re.M)
    # the default config (no `sdxl:`) plans no SDXL job
    r = _snakemake("-n", "--forceall", "--cores", "1", "--quiet", "rules")
    assert r.returncode == 0 and "sdxl" not in r.stdout + r.stderr, r.stdout + r.stderr


def _sdxl_config(path):
    """common.smk + sdxl_common.smk in one namespace (plain Python), and the merged config of `path`."""
    from test_workflow import _merged, load_common

    ns = load_common()
    exec(compile((REPO / "workflow/rules/sdxl_common.smk").read_text(), "sdxl_common.smk", "exec"), ns)
    ns["config"] = _merged(
        yaml.safe_load((REPO / "config/config.yaml").read_text()), yaml.safe_load((REPO / path).read_text())
    )
    return ns


@pytest.mark.parametrize("path", ["config/sdxl-smoke.yaml", "config/paper-sdxl.yaml"])
def test_sdxl_configs_are_valid_and_switch_the_pixel_branch_off(path):
    ns = _sdxl_config(path)
    cfg = ns["config"]
    ns["validate_config"](cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert cfg["pixel"] is False and cfg["sdxl"]["training"]["grad_clip"] == 1.0  # defaults filled in
    ns["sdxl_check_config"]()
    assert ns["pixel_targets"]() == [] and ns["sdxl_enabled"]()


def test_sdxl_config_errors_name_the_key():
    from snakemake.exceptions import WorkflowError

    for key, value, where in [
        ("attack", {"mask_fraction": 1.5}, r"sdxl\.attack\.mask_fraction"),
        ("noise_levels", [100, 1000], r"sdxl\.noise_levels\[1\]"),
        ("attack", {"t_attack": 1000}, r"sdxl\.attack\.t_attack"),
    ]:
        ns = _sdxl_config("config/sdxl-smoke.yaml")
        s = ns["config"]["sdxl"]
        s[key] = {**s[key], **value} if isinstance(value, dict) else value
        with pytest.raises(WorkflowError, match=where):
            ns["validate_config"](ns["config"], str(REPO / "workflow/schemas/config.schema.yaml"))
    ns = _sdxl_config("config/paper-sdxl.yaml")
    ns["validate_config"](ns["config"], str(REPO / "workflow/schemas/config.schema.yaml"))
    ns["config"]["sdxl"]["model"] = {"tiny": False, "id": None, "path": None}
    with pytest.raises(WorkflowError, match=r"sdxl\.model"):
        ns["sdxl_check_config"]()


def test_sdxl_env_mirrors_the_sdxl_extra():
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = {Requirement(r).name: str(Requirement(r).specifier) for r in project["optional-dependencies"]["sdxl"]}
    dev = {Requirement(r).name: str(Requirement(r).specifier) for r in project["optional-dependencies"]["dev"]}
    assert all(dev.get(k) == v for k, v in extra.items())
    env = yaml.safe_load((REPO / "workflow/envs/sdxl.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    ours = {
        Requirement(r).name: str(Requirement(r).specifier)
        for r in project["dependencies"] + project["optional-dependencies"]["sdxl"]
    }
    assert {Requirement(r).name: str(Requirement(r).specifier) for r in pip} == ours


def test_sdxl_notebooks_have_a_parameters_cell():
    """The SDXL figures of the figure table; their folders come from the rule (None by hand: the layout's)."""
    import nbformat

    from ambient import layout

    assert [f.stem for f in layout.SDXL.figures] == list(SDXL_FIGURES)
    for name in SDXL_FIGURES:
        nb = nbformat.read(REPO / "paper_figures" / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "root = None" in tagged[0].source and "model_note" in tagged[0].source
        assert "sdxl_dir = None" in tagged[0].source and "out_dir = None" in tagged[0].source
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_sdxl_figlib_defaults_to_the_layouts_folders():
    sys.path.insert(0, str(REPO / "paper_figures"))
    try:
        import sdxl_figlib
    finally:
        sys.path.remove(str(REPO / "paper_figures"))
    assert sdxl_figlib.default_dirs(REPO, None, None) == ("results/sdxl/smoke", "results/figures/sdxl/smoke")
    assert sdxl_figlib.default_dirs(REPO, "a", "b") == ("a", "b")
    assert sdxl_figlib.THRESHOLDS == ("0.90", "0.95", "0.99")


@pytest.mark.slow
def test_sdxl_smoke_runs_end_to_end_and_renders_its_figures(tmp_path):
    """config/sdxl-smoke.yaml in a copy of the workflow: every SDXL job on tiny random models."""
    import json
    import shutil
    import time

    wd = tmp_path / "wf"
    wd.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.pyc")
    for name in ("Snakefile", "workflow", "config", "paper_figures", "profiles", "environment.yml", "ambient"):
        src = REPO / name
        (shutil.copytree(src, wd / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, wd / name))
    t0 = time.perf_counter()
    r = _snakemake("--cores", "2", "--configfile", "config/sdxl-smoke.yaml", cwd=wd)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    figs = wd / "results/figures/sdxl/smoke"
    for stem in SDXL_FIGURES:
        for ext in ("png", "pdf"):
            assert (figs / f"{stem}.{ext}").stat().st_size > 0
        nb = (figs / "notebooks" / f"{stem}.ipynb").read_text()
        assert "RANDOM-WEIGHT TINY MODELS" in nb
    s = json.loads((wd / "results/sdxl/smoke/tn100/similarity_early.json").read_text())
    assert s["extractor_requested"] == "dinov2_vitg14" and s["extractor"] == "pixel" and not s["is_dinov2"]
    assert not (wd / "results/metrics").exists()  # pixel: false: no pixel job ran
    print(f"sdxl smoke wall time: {wall:.0f} s")
    # the report shows each SDXL figure with its caption: the notebook's first markdown cell (figure.rst)
    r = _snakemake("--configfile", "config/sdxl-smoke.yaml", "--report", "results/report.html", cwd=wd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads(
        re.search(r"var results = (\{.*?\});\s*</script>", (wd / "results/report.html").read_text(), re.S)[1]
    )
    for stem in SDXL_FIGURES:
        entry = results[f"results/figures/sdxl/smoke/{stem}.png"]
        assert "<strong>SDXL Fig" in entry["caption"] and len(entry["caption"]) > 200, entry["caption"]

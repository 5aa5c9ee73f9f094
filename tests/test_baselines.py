"""The two baselines beside the models they frame: the naive dust model (the unmasked network and the
plain EDM loss on the dusty images as stored) and the Gaussian model (the mean and covariance of the
training images, sampled through its exact denoiser)."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
import torch
from conftest import TINY_NET, TINY_NET_ARGS, run_cli
from test_workflow import copy_workflow, snakemake

from ambient import layout
from ambient.checkpoints import TrainConfig, load_checkpoint, load_model, model_from_checkpoint
from ambient.corruption import Corruption
from ambient.data import MANIFEST, read_image_zip
from ambient.gaussian import GAUSSIAN_FORMAT, GaussianDenoiser, fit_gaussian
from ambient.losses import AmbientLoss, EDMLoss
from ambient.sampling import edm_sigmas, generate, heun_sample, model_denoiser
from ambient.training import _observations, make_loss
from ambient.utils import uint8_to_signed


def _random_gaussian(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Gaussian on 1x2x2 images: mean inside [-1, 1] and a rotated covariance small enough that
    samples almost never clip there (std <= 0.15)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    eigenvalues = torch.tensor([0.002, 0.006, 0.012, 0.02], dtype=torch.float64)
    mean = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64)
    return mean, eigenvalues, q


# ---------------------------------------------------------------- the Gaussian denoiser


def test_gaussian_denoiser_is_the_closed_form():
    mean, eigenvalues, v = _random_gaussian()
    model = GaussianDenoiser(mean, eigenvalues, v, 1, 2)
    cov = (v * eigenvalues) @ v.T
    assert torch.allclose(model.covariance, cov) and model.masked is False and model.img_channels == 1
    x = torch.randn(5, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.002, 0.05, 0.3, 1.0, 80.0], dtype=torch.float64)
    got = model(x, sigma)
    for i, s in enumerate(sigma):
        want = mean + cov @ torch.linalg.solve(cov + s**2 * torch.eye(4, dtype=torch.float64), x[i].flatten() - mean)
        assert torch.allclose(got[i].flatten(), want, atol=1e-12)
    assert torch.allclose(model(x, sigma[2]), model(x, sigma[2].expand(5)))  # one sigma for the batch
    assert model(x.float(), sigma.float()).dtype == torch.float32  # the sampler's float32 in, float32 out
    with pytest.raises(ValueError, match="no mask"):
        model(x, sigma, torch.ones(5, 1, 2, 2))


def test_fit_gaussian_is_the_mean_and_covariance():
    x = torch.rand(30, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mean, eigenvalues, v = fit_gaussian(x, eps=1e-6)
    flat = x.reshape(30, -1)
    assert torch.allclose(mean, flat.mean(0))
    want = torch.cov(flat.T, correction=0) + 1e-6 * torch.eye(9, dtype=torch.float64)
    assert torch.allclose((v * eigenvalues) @ v.T, want, atol=1e-12)
    assert (eigenvalues >= 1e-6).all()  # positive definite, also where 30 images leave no spread
    low_rank = fit_gaussian(x[:3])[1]  # 3 images: rank 2, the other 7 eigenvalues are eps
    assert (low_rank[:7] < 2e-6).all() and (low_rank[7:] > 1e-3).all()


def test_gaussian_samples_have_its_mean_and_covariance():
    """The EDM Heun sampler on the exact denoiser draws N(mean, cov), up to its discretisation (which
    shrinks with the number of steps: at 18 steps these variances come out about 1.2x)."""
    mean, eigenvalues, v = _random_gaussian()
    model = GaussianDenoiser(mean, eigenvalues, v, 1, 2)
    cov = model.covariance
    n = 20000
    latents = torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    sigmas = edm_sigmas(128)
    x = heun_sample(model_denoiser(model), latents * sigmas[0], sigmas).reshape(n, -1)
    assert (x.mean(0) - mean).abs().max() < 0.005
    assert (torch.cov(x.T, correction=0) - cov).norm() / cov.norm() < 0.05
    # through `generate` (uint8 samples, as `ambient sample` writes them): no mask, no clip needed
    images = generate(model, Corruption("gauss"), 4000, 2, seed=0, batch_size=1000, num_steps=64, progress=False)
    y = uint8_to_signed(images, torch.float64).reshape(len(images), -1)
    assert (y.mean(0) - mean).abs().max() < 0.01
    assert (torch.cov(y.T, correction=0) - cov).norm() / cov.norm() < 0.1


# ---------------------------------------------------------------- the Gaussian through the CLI


def test_train_cli_fits_the_gaussian_and_sample_and_attack_take_it(tiny_dataset, tmp_path):
    model_path = tmp_path / "gauss" / "model.pt"
    r = run_cli(
        ["train", "--dataset", tiny_dataset, "--corruption", "gauss", *TINY_NET_ARGS, "--steps", "5"]
        + ["--run-dir", tmp_path / "gauss" / "train", "--out", model_path, "--device", "cpu", "--quiet"]
    )
    assert r.returncode == 0, r.stderr
    state = load_checkpoint(model_path)
    assert state["format"] == GAUSSIAN_FORMAT and state["step"] == 0  # no optimizer step
    assert state["config"]["corruption"]["kind"] == "gauss" and state["config"]["loss"] == "auto"
    assert state["info"]["corruption_name"] == "gauss" and state["info"]["num_images"] == 16

    model, cfg, info = load_model(model_path)
    assert isinstance(model, GaussianDenoiser) and not model.training
    assert cfg.effective_loss == "gauss" and not cfg.masked_network and cfg.sampling_stop_sigma is None
    x = uint8_to_signed(read_image_zip(tiny_dataset).images, torch.float64)  # the trainer's [-1, 1]
    assert torch.allclose(model.mean, x.reshape(16, -1).mean(0))
    assert torch.allclose(model.covariance, torch.cov(x.reshape(16, -1).T, correction=0), atol=1e-5)
    # summary.py's reading of a model file: corruption, loss and steps
    from ambient.eval.summary import _training_columns

    corr, loss = Corruption.of_run("gauss")
    assert (corr.kind, corr.level, loss) == ("gauss", 0.0, "auto")
    cols = _training_columns(model_path, "gauss", corr, layout.AUTO_LOSS["gauss"])
    assert cols["delta"] == 0.0 and cols["steps"] == 0

    samples = tmp_path / "samples.zip"
    r = run_cli(["sample", "--checkpoint", model_path, "--num", "8", "--steps", "4", "--out", samples, "--quiet"])
    assert r.returncode == 0, r.stderr
    got = read_image_zip(samples).images
    assert got.shape == (8, 1, 8, 8) and got.std() > 0
    with zipfile.ZipFile(samples) as zf:
        manifest = json.loads(zf.read(MANIFEST))
    assert manifest["corruption"] == "gauss" and manifest["loss"] == "gauss" and manifest["stop_sigma"] is None

    r = run_cli(
        ["attack", "--checkpoint", model_path, "--train", tiny_dataset, "--kind", "noise", "--steps", "3"]
        + ["--num-images", "3", "--out", tmp_path / "attack.json", "--device", "cpu", "--quiet"]
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "attack.json").read_text())
    assert summary["corruption"] == "gauss" and summary["masked"] is False


def test_gauss_takes_no_corruption_level_nor_other_loss(tiny_dataset):
    with pytest.raises(ValueError, match="gauss"):
        Corruption("gauss", p=0.5)
    with pytest.raises(ValueError, match="loss 'edm'"):
        TrainConfig(dataset=str(tiny_dataset), corruption=Corruption("gauss").to_dict(), loss="edm")
    with pytest.raises(ValueError, match="closed form"):
        make_loss(TrainConfig(dataset=str(tiny_dataset), corruption=Corruption("gauss").to_dict()))


# ---------------------------------------------------------------- the naive dust baseline


def test_naive_dust_trains_the_unmasked_network_with_edm_on_the_observation(tiny_dataset, tmp_path, monkeypatch):
    run_dir = tmp_path / "naive"
    r = run_cli(
        ["train", "--dataset", tiny_dataset, "--corruption", "dust-p0.50", "--loss", "edm", *TINY_NET_ARGS]
        + ["--steps", "3", "--batch-size", "4", "--warmup-steps", "1", "--checkpoint-every", "3"]
        + ["--run-dir", run_dir, "--device", "cpu", "--quiet"]
    )
    assert r.returncode == 0, r.stderr
    state = load_checkpoint(run_dir / "model.pt")
    assert state["config"]["loss"] == "edm"
    assert state["config"]["corruption"] == Corruption("dust", p=0.5).to_dict()  # delta 0: no further corruption
    model, cfg, _ = model_from_checkpoint(state)
    assert model.masked is False and not cfg.masked_network
    assert model.net.conv_in.in_channels == 1  # the image alone, no mask channels (a masked net takes 2)
    assert type(make_loss(cfg)) is EDMLoss and not isinstance(make_loss(cfg), AmbientLoss)

    # its data: the observations as the dataset stores them, erased pixels at 0 (mid grey)
    (x, a, _), _ = _observations(cfg)
    images = read_image_zip(tiny_dataset).as_float()
    assert torch.equal(x, images * a) and 0.3 < (a == 0).float().mean() < 0.7
    assert (x[(a == 0).expand_as(x)] == 0).all()

    # sampled like the clean model: no mask is ever drawn, no clip
    def no_masks(*args, **kwargs):
        raise AssertionError("the naive baseline is sampled without masks")

    monkeypatch.setattr(Corruption, "sampling_masks", no_masks)
    out = generate(model, cfg.corruption_spec, 4, 8, num_steps=3, progress=False)
    assert out.shape == (4, 1, 8, 8)


def test_naive_dust_with_delta_is_refused(tiny_dataset):
    base = {"dataset": str(tiny_dataset), "network": TINY_NET, "loss": "edm"}
    with pytest.raises(ValueError, match="delta=0.1"):
        TrainConfig(**base, corruption=Corruption("dust", p=0.5, delta=0.1).to_dict())
    ambient = TrainConfig(**{**base, "loss": "auto"}, corruption=Corruption("dust", p=0.5, delta=0.1).to_dict())
    assert ambient.masked_network and ambient.effective_loss == "ambient"


# ---------------------------------------------------------------- names and the DAG


@pytest.mark.parametrize(
    "entry, name, parsed, label",
    [
        (
            {"kind": "dust", "p": 0.5, "loss": "edm"},
            "dust-p0.50-naive",
            ("dust", 0.5, True),
            "naive dust p=0.50 (EDM loss)",
        ),
        ({"kind": "gauss"}, "gauss", ("gauss", 0.0, False), layout.GAUSS_LABEL),
    ],
)
def test_run_names_round_trip(entry, name, parsed, label):

    assert layout.run_name(entry) == name and layout.parse_run_name(name) == parsed
    assert re.fullmatch(layout.RUN_NAME_PATTERN, name)
    corr, loss = Corruption.of_run(name, delta=0.1)
    assert corr.name == layout.base_name(name) and loss == entry.get("loss", "auto")
    assert corr.delta == 0.0  # neither takes a further corruption
    record = layout.run_record(entry)
    assert record["label"] == label and record["level"] == parsed[1] and record["naive"] == parsed[2]
    assert record["delta"] == 0.0
    with pytest.raises(ValueError):
        Corruption.from_name(name) if parsed[2] else Corruption.from_name(name + layout.NAIVE_SUFFIX)


def test_noise_only_figures_leave_the_baselines_out():
    cfg = {
        "corruptions": [
            {"kind": "clean"},
            {"kind": "dust", "p": 0.5, "loss": "edm"},
            {"kind": "gauss"},
            {"kind": "noise", "sigma_n": 0.2, "loss": "edm"},
        ]
    }
    runs = layout.run_list(cfg)
    noise_side = [r["name"] for r in runs if r["kind"] in ("clean", "noise")]  # figure_runs' filter, fig5/fig6's
    assert noise_side == ["clean", "noise-s0.20-naive"]


def test_default_dry_run_trains_both_baselines(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    r = snakemake(
        wd,
        "-n",
        "--cores",
        "2",
        "-p",
        "results/models/faces16/dust-p0.50-naive/model.pt",
        "results/models/faces16/gauss/model.pt",
        "results/metrics/summary.csv",
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "--corruption dust-p0.50 --delta 0.0 --loss edm " in out
    assert "--corruption gauss --delta 0.0 --settings " in out
    assert "--out results/models/faces16/gauss/model.pt --device auto --threads 1 " in out
    gauss_job = out.split("output: results/models/faces16/gauss/model.pt")[1].split("Shell command")[0]
    assert "gpu=0" in gauss_job and "runtime=60" in gauss_job
    assert "-m ambient sample --checkpoint results/models/faces16/gauss/model.pt" in out
    assert "--corruptions clean dust-p0.02 dust-p0.10 dust-p0.50 dust-p0.50-naive gauss " in out

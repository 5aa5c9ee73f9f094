"""Evaluation: feature extractors, FD/KD, nearest neighbours, attacks, weights, CLI (all offline, small)."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ambient.cli import main
from ambient.corruption import Corruption
from ambient.data import embedded_faces, write_image_zip
from ambient.eval import features, fid, neighbors, weights
from ambient.eval.attacks import AttackConfig, run_attack

NET = {"base_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


@pytest.fixture(scope="module")
def faces():
    return embedded_faces(100, 24)[0]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(features, "_WARNED", set())


def _noisy(images, std, seed=0):
    eps = np.random.default_rng(seed).standard_normal(images.shape)
    return np.clip(np.rint(images + std * 127.5 * eps), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- FD / KD


def test_fd_is_zero_on_itself_and_grows_with_noise(faces):
    ex = features.get_extractor("filterbank")
    ref = ex(faces)
    mu0, s0 = fid.feature_stats(ref)
    assert abs(fid.frechet(mu0, s0, mu0, s0)) < 1e-8
    fds = []
    for std in (0.0, 0.03, 0.1, 0.2, 0.4):
        mu, s = fid.feature_stats(ex(_noisy(faces, std)))
        fds.append(fid.frechet(mu, s, mu0, s0))
    assert abs(fds[0]) < 1e-8
    assert all(b > a for a, b in zip(fds, fds[1:])), fds
    assert fds[-1] > 100 * fds[1] > 0


def test_filterbank_is_deterministic_and_not_pixels(faces):
    a, b = features.get_extractor("filterbank")(faces[:10]), features.FilterBankExtractor()(faces[:10])
    assert np.array_equal(a, b) and a.shape == (10, 80)
    rgb = np.repeat(faces[:4], 3, axis=1)
    assert features.get_extractor("filterbank")(rgb).shape == (4, 86)


def test_kid_is_seeded_and_leaves_the_global_rng_alone(faces):
    ex = features.get_extractor("filterbank")
    f1, f2 = ex(faces), ex(_noisy(faces, 0.2))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    k1 = fid.kernel(f1, f2, seed=0, num_subsets=20, max_subset_size=30)
    assert np.array_equal(np.random.get_state()[1], before)
    assert fid.kernel(f1, f2, seed=0, num_subsets=20, max_subset_size=30) == k1
    assert fid.kernel(f1, f2, seed=1, num_subsets=20, max_subset_size=30) != k1
    assert k1 > fid.kernel(f1, f1, seed=0, num_subsets=20, max_subset_size=30)


def test_fd_equals_clean_fids_frechet_distance(faces):
    from cleanfid.fid import frechet_distance

    rng = np.random.default_rng(0)
    for d, n in ((8, 50), (80, 300), (80, 40)):  # the last: singular covariances (n < d)
        a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.3 + 0.2
        stats = (*fid.feature_stats(a), *fid.feature_stats(b))
        assert fid.frechet(*stats) == pytest.approx(float(frechet_distance(*stats)), rel=1e-9, abs=1e-9)
    ex = features.get_extractor("filterbank")
    stats = (*fid.feature_stats(ex(faces[:30])), *fid.feature_stats(ex(faces[30:])))
    assert fid.frechet(*stats) == pytest.approx(float(frechet_distance(*stats)), rel=1e-9)


def test_fd_refuses_mixed_dimensions(faces):
    ex = features.get_extractor("filterbank")
    a = fid.feature_stats(ex(faces[:20]))
    b = fid.feature_stats(ex(np.repeat(faces[:20], 3, axis=1)))
    with pytest.raises(ValueError, match="dimensions differ"):
        fid.frechet(*a, *b)


# ---------------------------------------------------------------- nearest neighbours


def test_training_image_is_its_own_nearest_neighbour(faces):
    pf = features.get_extractor("pixel")(faces)
    sims, idx = neighbors.nearest(pf, pf, k=2)
    assert np.array_equal(idx[:, 0], np.arange(len(faces)))
    assert np.allclose(sims[:, 0], 1.0, atol=1e-6)
    assert sims[:, 1].max() < 0.95  # no other face is a copy
    summary, rows, gallery = neighbors.analyze(faces[:8], faces, pf[:8], pf, k=3, gallery_size=4)
    assert summary["share_gt_0.99"] == 1.0 and summary["carlini"]["share_flagged"] == 1.0
    assert sum(summary["histogram"]["counts"]) == 8 and len(summary["histogram"]["edges"]) == 201
    assert [r["top1_index"] for r in rows] == list(range(8))
    assert np.array_equal(gallery["samples"], gallery["train"])
    # the scale of a copy: each training face against its nearest *other* face (never itself)
    assert summary["train_nn_sim_mean"] == pytest.approx(float(sims[:, 1].mean()), abs=1e-6)
    assert summary["train_nn_sim_max"] == pytest.approx(float(sims[:, 1].max()), abs=1e-6)
    # unrelated noise images are neither similar nor flagged
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (8, 1, 24, 24), dtype=np.uint8)
    s2, _, _ = neighbors.analyze(noise, faces, features.get_extractor("pixel")(noise), pf)
    assert s2["share_gt_0.90"] == 0.0 and s2["carlini"]["share_flagged"] == 0.0


# ---------------------------------------------------------------- extractor resolution and weights


def test_missing_inception_falls_back_with_labels_and_one_warning(faces, tmp_path, capsys):
    write_image_zip(tmp_path / "train.zip", faces[:40])
    write_image_zip(tmp_path / "samples.zip", _noisy(faces[40:80], 0.1))
    wdir = tmp_path / "weights"
    for out in ("a.json", "b.json"):
        assert (
            main(
                [
                    "fid",
                    "--samples",
                    str(tmp_path / "samples.zip"),
                    "--ref",
                    str(tmp_path / "train.zip"),
                    "--out",
                    str(tmp_path / out),
                    "--weights-dir",
                    str(wdir),
                    "--quiet",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and str(wdir / "inception-2015-12-05.pt") in err and "filterbank" in err
    res = json.loads((tmp_path / "a.json").read_text())
    assert res["extractor"] == "filterbank" and res["fallback_used"] is True
    assert res["fd_key"] == "fd_filterbank" and res["kd_key"] == "kd_filterbank"
    assert res["fd_filterbank"] > 0 and "kd_filterbank" in res and res["n"] == 40
    assert not {"fid", "kid"} & set(res)
    assert set(res["timing"]) == {"features_samples", "features_ref", "fd", "kd", "c2st"}
    # without a fallback: an error naming the file
    assert (
        main(
            [
                "fid",
                "--samples",
                str(tmp_path / "samples.zip"),
                "--ref",
                str(tmp_path / "train.zip"),
                "--out",
                str(tmp_path / "c.json"),
                "--weights-dir",
                str(wdir),
                "--fallback",
                "none",
                "--quiet",
            ]
        )
        == 2
    )
    assert "inception-2015-12-05.pt" in capsys.readouterr().err
    # ref stats made with the fallback are refused once another extractor is in use
    assert (
        main(
            [
                "ref-stats",
                "--images",
                str(tmp_path / "train.zip"),
                "--out",
                str(tmp_path / "ref.npz"),
                "--weights-dir",
                str(wdir),
                "--quiet",
            ]
        )
        == 0
    )
    ref = fid.load_ref_stats(tmp_path / "ref.npz")
    assert ref["extractor"] == "filterbank" and ref["n"] == 40 and ref["features"].shape == (40, 80)
    assert (
        main(
            [
                "fid",
                "--samples",
                str(tmp_path / "samples.zip"),
                "--ref",
                str(tmp_path / "ref.npz"),
                "--out",
                str(tmp_path / "d.json"),
                "--extractor",
                "pixel",
                "--quiet",
            ]
        )
        == 2
    )
    assert "recompute" in capsys.readouterr().err
    assert (
        main(
            [
                "fid",
                "--samples",
                str(tmp_path / "samples.zip"),
                "--ref",
                str(tmp_path / "ref.npz"),
                "--out",
                str(tmp_path / "e.json"),
                "--weights-dir",
                str(wdir),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "e.json").read_text())["fd_filterbank"] == pytest.approx(res["fd_filterbank"])


def test_missing_dinov2_is_named(tmp_path, capsys):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(FileNotFoundError, match="facebookresearch_dinov2_main"):
            features.resolve_extractor("dinov2", None)
        ex = features.resolve_extractor("dinov2", "pixel")
    finally:
        torch.hub.set_dir(old)
    assert ex.name == "pixel" and "dinov2_vits14" in capsys.readouterr().err
    assert features.metric_keys(ex) == ("fd_pixel", "kd_pixel")


def test_dinov2_missing_weights_are_named_with_the_fix(tmp_path):
    hub = tmp_path / "hub"
    with pytest.raises(
        FileNotFoundError,
        match=r"facebookresearch_dinov2_main.*torch\.hub\.load\('facebookresearch/dinov2', 'dinov2_vitg14'\)",
    ):
        features.DinoV2Extractor(model="dinov2_vitg14", hub_dir=hub)
    (hub / "facebookresearch_dinov2_main").mkdir(parents=True)  # code present, weights absent
    with pytest.raises(FileNotFoundError, match=r"checkpoints/dinov2_vitg14_pretrain\.pth: DINOv2 weights not found"):
        features.DinoV2Extractor(model="dinov2_vitg14", hub_dir=hub)
    with pytest.raises(ValueError, match="unknown DINOv2 model"):
        features.DinoV2Extractor(model="dinov2_vitx14", hub_dir=hub)


@pytest.mark.parametrize(
    "h, w, top, left, H, W",
    [(24, 24, 2, 2, 28, 28), (64, 64, 3, 3, 70, 70), (25, 30, 1, 6, 28, 42), (28, 14, 0, 0, 28, 14)],
)
def test_dinov2_preprocess_is_the_official_input(h, w, top, left, H, W):
    """As find_dataset_neighbors.py: [0, 1] pixels, no ImageNet normalisation, reflect-padded to a
    multiple of 14 with floor(pad / 2) before and the rest after (dnnlib.util.pad_image)."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (2, 3, h, w), generator=g, dtype=torch.uint8)
    x = features.dinov2_preprocess(rgb)
    assert x.shape == (2, 3, H, W) and x.dtype == torch.float32
    interior = x[..., top : top + h, left : left + w]
    torch.testing.assert_close(interior, rgb.float() / 255.0, rtol=0, atol=0)  # values unchanged: no mean/std
    assert x.min() >= 0 and x.max() <= 1
    # the padding mirrors the image without repeating the edge: the official F.pad(..., mode="reflect")
    ref = torch.nn.functional.pad(rgb.float() * 2 / 255 - 1, (left, W - w - left, top, H - h - top), mode="reflect")
    torch.testing.assert_close(x, (ref + 1) / 2)  # pad the [-1, 1] image, then (x + 1) / 2, as the script
    if top:
        torch.testing.assert_close(x[..., top - 1, left : left + w], rgb[..., 1, :].float() / 255)
    gray = rgb[:, :1]
    xg = features.dinov2_preprocess(gray)
    assert xg.shape == (2, 3, H, W)
    torch.testing.assert_close(xg, features.dinov2_preprocess(gray.expand(-1, 3, -1, -1).contiguous()))


def test_dinov2_preprocess_rejects_what_the_model_cannot_take():
    with pytest.raises(ValueError, match="uint8"):
        features.dinov2_preprocess(torch.zeros(1, 3, 14, 14))
    with pytest.raises(ValueError, match="too small"):
        features.dinov2_preprocess(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


def test_dinov2_extractor_feeds_the_preprocessed_batch_and_normalises(tmp_path):
    """Without weights: a stand-in hub model records its input; the features are its L2-normalised output."""
    ex = features.DinoV2Extractor.__new__(features.DinoV2Extractor)
    features.Extractor.__init__(ex)
    seen = []

    def model(x):
        seen.append(x)
        return torch.stack([x.mean(dim=(1, 2, 3)) * 3, x.std(dim=(1, 2, 3)) * 4], dim=1)

    ex.model, ex.name = model, "dinov2_vits14"
    imgs = np.random.default_rng(0).integers(0, 256, (5, 3, 24, 24), dtype=np.uint8)
    out = ex(imgs, batch_size=2)
    assert out.shape == (5, 2) and len(seen) == 3
    torch.testing.assert_close(torch.cat(seen), features.dinov2_preprocess(torch.from_numpy(imgs)))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


class _StandInLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = torch.nn.Linear(3 * 8 * 8, 2048)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(2048, 192, generator=g) / 14)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)))


class _StandInInception(torch.nn.Module):
    """Same interface as the TorchScript Inception: .layers(x in [-1, 1]) and forward(x, return_features)."""

    def __init__(self):
        super().__init__()
        self.layers = _StandInLayers()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers((x - 128) / 128)


def _write_standin(wdir: Path) -> str:
    wdir.mkdir(parents=True, exist_ok=True)
    path = wdir / "inception-2015-12-05.pt"
    torch.jit.script(_StandInInception()).save(str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inception_path_is_loaded_through_clean_fid(faces, tmp_path, monkeypatch):
    wdir = tmp_path / "weights"
    sha = _write_standin(wdir)
    # the recorded hash is the official file's: the stand-in is refused, naming the file
    with pytest.raises(ValueError, match="inception-2015-12-05.pt.*sha256"):
        features.resolve_extractor("inception", "filterbank", weights_dir=wdir)
    monkeypatch.setitem(weights.WEIGHTS["inception"], "sha256", sha)
    ex = features.resolve_extractor("inception", "filterbank", weights_dir=wdir)
    assert ex.name == "inception" and ex.is_inception and features.metric_keys(ex) == ("fid", "kid")
    write_image_zip(tmp_path / "train.zip", faces[:24])
    write_image_zip(tmp_path / "samples.zip", faces[24:40])
    via_cleanfid = ex.from_path(tmp_path / "samples.zip", batch_size=8)
    assert via_cleanfid.shape == (16, 2048)
    assert np.allclose(via_cleanfid, ex(faces[24:40], batch_size=5), atol=1e-4)  # same resize as clean-fid
    # clean-fid's sqrtm of a 2048x2048 matrix takes 20-40 s on two busy cores: FD's math is checked
    # elsewhere, here only the Inception path and the labels matter
    monkeypatch.setattr(fid, "frechet", lambda m1, s1, m2, s2: float(((m1 - m2) ** 2).sum() + np.trace(s1 - s2) ** 2))
    assert (
        main(
            [
                "fid",
                "--samples",
                str(tmp_path / "samples.zip"),
                "--ref",
                str(tmp_path / "train.zip"),
                "--out",
                str(tmp_path / "fid.json"),
                "--weights-dir",
                str(wdir),
                "--quiet",
                "--device",
                "cpu",
                "--kid-subsets",
                "10",
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "fid.json").read_text())
    assert res["extractor"] == "inception" and res["fd_key"] == "fid" and res["kd_key"] == "kid"
    assert res["fid"] > 0 and "kid" in res and res["weights_sha256"] == sha and res["fallback_used"] is False
    assert not any(k.startswith(("fd_", "kd_")) for k in res if k not in ("fd_key", "kd_key", "kd_std_key"))
    # a corrupt file with the expected hash is an error naming it, never a silent fallback
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "inception-2015-12-05.pt").write_bytes(b"not a torchscript archive")
    monkeypatch.setitem(
        weights.WEIGHTS["inception"], "sha256", hashlib.sha256(b"not a torchscript archive").hexdigest()
    )
    with pytest.raises(ValueError, match="bad/inception-2015-12-05.pt: cannot load"):
        features.resolve_extractor("inception", "filterbank", weights_dir=bad)
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        features.get_extractor("inception", weights_dir=tmp_path / "nowhere")


# ---------------------------------------------------------------- fetch-weights


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_weights_checks_the_sha256(http_root, tmp_path):
    root, base = http_root
    payload = bytes(range(256)) * 500
    (root / "inception.pt").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "resources" / "weights"
    # a mismatching checksum leaves nothing behind
    with pytest.raises(ValueError, match="sha256 mismatch"):
        weights.fetch_weights("inception", dest, url=f"{base}/inception.pt", sha256="0" * 64, progress=False)
    assert not dest.exists() or list(dest.iterdir()) == []
    # the recorded official hash applies when none is given
    with pytest.raises(ValueError, match="sha256 mismatch"):
        weights.fetch_weights("inception", dest, url=f"{base}/inception.pt", progress=False)
    assert (
        main(["fetch-weights", "--dest", str(dest), "--url", f"{base}/inception.pt", "--sha256", good, "--quiet"]) == 0
    )
    path = dest / "inception-2015-12-05.pt"
    assert path.read_bytes() == payload and list(dest.iterdir()) == [path]
    # present with the right hash: kept, no download (the URL is now dead)
    assert weights.fetch_weights("inception", dest, url=f"{base}/gone.pt", sha256=good, progress=False) == path
    assert (
        main(["fetch-weights", "--dest", str(dest), "--url", f"{base}/gone.pt", "--sha256", good, "--force", "--quiet"])
        == 2
    )
    assert path.read_bytes() == payload
    assert weights.WEIGHTS["inception"]["sha256"] == "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"


# ---------------------------------------------------------------- attacks with fake models


class _Fake:
    """A stand-in model: returns a fixed image set (identity) or a constant, whatever it is given."""

    def __init__(self, x0: torch.Tensor | None, masked: bool, const: float = 0.0):
        self.x0, self.masked, self.const, self.img_channels = x0, masked, const, 1
        self.calls = 0

    def __call__(self, x, sigma, mask=None):
        self.calls += 1
        assert (mask is not None) == self.masked
        if self.x0 is None:
            return torch.full_like(x, self.const)
        return self.x0[: len(x)].to(x.dtype)


@pytest.mark.parametrize("masked", [False, True])
def test_attacks_identity_model_reconstructs_and_constant_fails(faces, masked):
    train = faces[:12]
    x0 = torch.from_numpy(train).float().div(127.5).sub(1)
    corr = Corruption("dust", p=0.5, delta=0.1) if masked else Corruption()
    for cfg in (
        AttackConfig("inpaint", erase="pixels", fraction=0.8, num_steps=4),
        AttackConfig("inpaint", erase="box", fraction=0.5, num_steps=4),
        AttackConfig("noise", sigma=2.0, num_steps=4),
        AttackConfig("key", num_steps=4),
    ):
        s, rows, gallery = run_attack(_Fake(x0, masked), train, cfg, corr, batch_size=64)
        for m, stats in s["methods"].items():
            assert stats["sim_mean"] > 0.999 and stats["share_extracted"] == 1.0, (cfg.kind, m, stats)
            assert np.array_equal(gallery[f"recon_{m}"], train)
        bad, _, _ = run_attack(_Fake(None, masked), train, cfg, corr, batch_size=64)
        for m, stats in bad["methods"].items():
            assert stats["sim_mean"] < 0.5 and stats["share_extracted"] == 0.0, (cfg.kind, m, stats)
        expected = {
            "inpaint": {"inpaint_u1", "inpaint_u5"},
            "noise": {"onestep", "sample"} | ({"onestep_ones", "sample_ones"} if masked else set()),
            "key": {"key_fresh", "key_train"} if masked else {"key_none"},
        }[cfg.kind]
        assert set(s["methods"]) == expected
        assert len(rows) == len(train) * len(s["methods"])
    # the known pixels of a completion are the original's; erased ones show as mid-grey in 'corrupted'
    s, _, g = run_attack(
        _Fake(None, masked), train, AttackConfig("inpaint", erase="box", fraction=0.5, num_steps=2), corr
    )
    known = g["mask"].astype(bool)
    assert s["primary_method"] == "inpaint_u5"
    assert np.array_equal(
        g["recon_inpaint_u5"][np.broadcast_to(known, train.shape)], train[np.broadcast_to(known, train.shape)]
    )
    assert (g["corrupted"][~np.broadcast_to(known, train.shape)] == 128).all() and known.mean() == pytest.approx(
        0.5, abs=0.05
    )


@pytest.mark.parametrize("masked", [False, True])
def test_inpainting_conditions_on_the_noised_original(faces, masked):
    """At every step the model sees the known pixels as x0 + sigma * eps (one fixed eps). Ambient models see
    the iterate through one fixed mask of their own training distribution, not through K."""
    train = faces[:4]
    x0 = torch.from_numpy(train).double().div(127.5).sub(1)
    seen = []

    class Spy(_Fake):
        def __call__(self, x, sigma, mask=None):
            seen.append((x.double().clone(), sigma.double()[:, None, None, None].clone(), mask))
            return torch.full_like(x, 0.3)

    cfg = AttackConfig("inpaint", erase="pixels", fraction=0.6, num_steps=5, resample=1)
    corr = Corruption("dust", p=0.5) if masked else Corruption()
    _, _, g = run_attack(Spy(None, masked), train, cfg, corr)
    known = torch.from_numpy(g["mask"]).bool().expand_as(x0)
    eps = [((x - x0) / s)[known] for x, s, _ in seen]
    assert len(seen) == 2 * 5 - 1
    assert all(torch.allclose(e, eps[0], atol=1e-3) for e in eps)  # float32 inputs at sigma 0.002
    assert eps[0].std() > 0.5  # real noise, not the original itself
    if masked:
        own = seen[0][2]
        assert all(torch.equal(m, own) for _, _, m in seen)
        assert not torch.equal(own.bool().expand_as(x0), known)
        assert own.mean().item() == pytest.approx(0.5, abs=0.1)  # dust p=0.5: half the pixels, against K's 40%
        train_masks = corr.dataset_masks(4, train.shape[-1])[1]
        assert not any(torch.equal(own[i], train_masks[i]) for i in range(4))  # never the image's training mask


@pytest.mark.parametrize("kind", ["dust", "box"])
def test_mask_key_attack_hands_over_the_training_mask(faces, kind):
    """A model that recognizes a training image by its training mask A~ = A * B (and returns a blank
    otherwise) is extracted by key_train for every image, and by key_fresh for none."""
    train = faces[:10]
    x0 = torch.from_numpy(train).float().div(127.5).sub(1)
    corr = Corruption(kind, p=0.3, delta=0.1 if kind == "dust" else 0.0, seed=7)
    known = corr.dataset_masks(len(train), train.shape[-1])[1]

    class KeyReader(_Fake):
        def __call__(self, x, sigma, mask=None):
            out = torch.zeros_like(x)
            for j, m in enumerate(mask):
                hit = [i for i in range(len(known)) if torch.equal(m, known[i])]
                if hit:
                    out[j] = x0[hit[0]]
            return out

    s, rows, g = run_attack(KeyReader(None, True), train, AttackConfig("key", num_steps=3), corr, batch_size=4)
    assert s["primary_method"] == "key_train"
    assert s["methods"]["key_train"]["share_extracted"] == 1.0
    assert s["methods"]["key_fresh"]["share_extracted"] == 0.0
    assert np.array_equal(g["mask"], known[: len(g["mask"])].numpy().astype(np.uint8))  # the gallery shows the key


# ---------------------------------------------------------------- CLI with tiny real models


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from ambient.training import TrainConfig, train

    root = tmp_path_factory.mktemp("eval_runs")
    images = embedded_faces(16, 8)[0]
    write_image_zip(root / "train.zip", images)
    ckpts = {}
    for name, corr in (("clean", Corruption()), ("dust", Corruption("dust", p=0.5, delta=0.1))):
        cfg = TrainConfig(
            dataset=str(root / "train.zip"),
            corruption=corr.to_dict(),
            network=NET,
            steps=5,
            batch_size=8,
            checkpoint_every=5,
            log_every=5,
        )
        ckpts[name] = train(cfg, root / name, device="cpu", progress=False)
    return root, ckpts


def test_attack_cli_outputs_and_determinism(tiny_runs):
    from ambient.checkpoints import load_checkpoint, model_from_checkpoint

    root, ckpts = tiny_runs
    for name, kind in (("clean", "inpaint"), ("dust", "inpaint"), ("dust", "noise"), ("clean", "key"), ("dust", "key")):
        out = root / f"attack_{name}_{kind}.json"
        assert (
            main(
                [
                    "attack",
                    "--checkpoint",
                    str(ckpts[name]),
                    "--train",
                    str(root / "train.zip"),
                    "--kind",
                    kind,
                    "--out",
                    str(out),
                    "--steps",
                    "3",
                    "--num-images",
                    "6",
                    "--gallery-size",
                    "4",
                    "--quiet",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        s = json.loads(out.read_text())
        assert s["kind"] == kind and s["n"] == 6 and s["masked"] == (name == "dust")
        assert s["corruption"] == ("clean" if name == "clean" else "dust-p0.50") and len(s["checkpoint_sha256"]) == 64
        for stats in s["methods"].values():
            assert {
                "sim_mean",
                "sim_median",
                "sim_full_mean",
                "other_sim_mean",
                "share_extracted",
                "mse_mean",
                "share_sim_gt_0.95",
            } <= set(stats)
        with open(s["csv"]) as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 6 * len(s["methods"])
        assert set(rows[0]) == {"index", "method", "sim", "sim_full", "mse", "other_sim", "other_index", "extracted"}
        with np.load(s["gallery_npz"]) as g:
            assert g["original"].shape == g["corrupted"].shape == (4, 1, 8, 8)
            assert all(f"recon_{m}" in g.files for m in s["methods"])
    # seeded: the same numbers whatever the batch size or the subset attacked
    model, tcfg, _ = model_from_checkpoint(load_checkpoint(ckpts["dust"]))
    train_images = embedded_faces(16, 8)[0]
    for cfg in (
        AttackConfig("noise", sigma=1.0, num_steps=3),
        AttackConfig("inpaint", num_steps=3, resample=2),
        AttackConfig("key", num_steps=3),
    ):
        a, _, ga = run_attack(model, train_images, cfg, tcfg.corruption_spec, indices=range(6), batch_size=6)
        b, _, gb = run_attack(model, train_images, cfg, tcfg.corruption_spec, indices=[3, 4, 5], batch_size=2)
        for m in a["methods"]:
            assert np.array_equal(ga[f"recon_{m}"][3:6], gb[f"recon_{m}"])
    # resampling draws fresh noise: a clean model's completion changes with it
    clean, ccfg, _ = model_from_checkpoint(load_checkpoint(ckpts["clean"]))
    # resampling draws fresh noise: the completion changes with it, for clean and ambient models alike
    for m, c in ((clean, ccfg), (model, tcfg)):
        r = run_attack(
            m, train_images, AttackConfig("inpaint", num_steps=3, resample=(1, 2)), c.corruption_spec, indices=range(4)
        )[2]
        assert not np.array_equal(r["recon_inpaint_u1"], r["recon_inpaint_u2"])


def test_neighbors_and_fid_cli_on_samples(tiny_runs, tmp_path):
    root, ckpts = tiny_runs
    samples = tmp_path / "samples.zip"
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(ckpts["clean"]),
                "--num",
                "12",
                "--steps",
                "3",
                "--out",
                str(samples),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = tmp_path / "nb.json"
    assert (
        main(
            [
                "neighbors",
                "--samples",
                str(samples),
                "--train",
                str(root / "train.zip"),
                "--out",
                str(out),
                "--k",
                "3",
                "--gallery-size",
                "5",
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())
    assert s["extractor"] == "pixel" and s["n"] == 12 and s["n_train"] == 16 and len(s["gallery"]) == 5
    assert {"sim_mean", "sim_median", "share_gt_0.90", "share_gt_0.95", "share_gt_0.99", "histogram", "carlini"} <= set(
        s
    )
    sims = [p["sim"] for p in s["gallery"]]
    assert sims == sorted(sims, reverse=True)
    assert Path(s["csv"]).is_file() and Path(s["gallery_png"]).is_file()
    with np.load(s["gallery_npz"]) as g:
        assert g["samples"].shape == g["train"].shape == (5, 1, 8, 8) and str(g["extractor"]) == "pixel"
    res = tmp_path / "fid.json"
    assert (
        main(
            [
                "fid",
                "--samples",
                str(samples),
                "--ref",
                str(root / "train.zip"),
                "--out",
                str(res),
                "--weights-dir",
                str(tmp_path / "none"),
                "--quiet",
                "--kid-subsets",
                "5",
            ]
        )
        == 0
    )
    r = json.loads(res.read_text())
    assert r["extractor"] == "filterbank" and r["n"] == 12 and r["ref_n"] == 16 and r["seconds"] > 0


def test_load_images_from_a_folder(tmp_path, faces):
    from PIL import Image

    from ambient.data import image_files, load_images

    for i in range(3):
        Image.fromarray(faces[i, 0]).save(tmp_path / f"{i:02d}.png")
    assert np.array_equal(load_images(tmp_path), faces[:3])
    files, fdir = image_files(tmp_path)
    assert fdir is None and len(files) == 3
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "missing")


# ---------------------------------------------------------------- the disturbance test of the extractors


def test_disturbances_are_seeded_and_grow(faces):
    from ambient.eval.extractor_check import DISTURBANCES, disturb

    x = faces[:12]
    for kind, levels in DISTURBANCES.items():
        assert np.array_equal(disturb(x, kind, 0.0), x)
        a, b = disturb(x, kind, levels[1], seed=3), disturb(x, kind, levels[1], seed=3)
        assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == x.shape
        assert not np.array_equal(disturb(x, kind, levels[1], seed=4), a) or kind in (
            "blur",
            "contrast",
        )  # these draw nothing
        err = [np.abs(disturb(x, kind, lv).astype(float) - x).mean() for lv in levels]
        assert all(e2 > e1 for e1, e2 in zip(err, err[1:])), (kind, err)
    with pytest.raises(ValueError, match="disturbance 'swirl' is unknown"):
        disturb(x, "swirl", 0.1)


def test_extractor_check_cli_reports_each_disturbance(tmp_path, faces):
    write_image_zip(tmp_path / "train.zip", faces[:30])
    write_image_zip(tmp_path / "heldout.zip", faces[30:70])
    ref = tmp_path / "ref.npz"
    assert (
        main(
            [
                "ref-stats",
                "--images",
                str(tmp_path / "heldout.zip"),
                "--out",
                str(ref),
                "--extractor",
                "filterbank",
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = tmp_path / "check.json"
    assert (
        main(
            [
                "extractor-check",
                "--images",
                str(tmp_path / "train.zip"),
                "--ref",
                str(ref),
                "--out",
                str(out),
                "--extractor",
                "filterbank",
                "--kid-subsets",
                "20",
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["extractor"] == "filterbank" and res["kd_key"] == "kd_filterbank_heldout" and res["n"] == 30
    for kind in ("noise", "blur", "saltpepper", "rectangles"):
        d = res["disturbances"][kind]
        assert len(d["levels"]) == len(d["fd"]) == len(d["kd"]) == 5 and d["levels"][0] == 0.0
        assert d["fd"][-1] > 2 * d["fd"][0], kind  # the heaviest damage is far from the real faces
    # a reference made with another extractor is refused, naming the command that fixes it
    assert (
        main(
            [
                "extractor-check",
                "--images",
                str(tmp_path / "train.zip"),
                "--ref",
                str(ref),
                "--out",
                str(tmp_path / "x.json"),
                "--extractor",
                "pixel",
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 2
    )

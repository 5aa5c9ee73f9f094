import numpy as np
import pytest
import torch
from conftest import TINY_NET

from ambient.checkpoints import TrainConfig, load_checkpoint
from ambient.corruption import Corruption
from ambient.losses import TweedieLoss
from ambient.sampling import generate
from ambient.training import train
from ambient.utils import generator

MU, S, SIGMA_N = 0.2, 0.5, 0.3


class LinearDenoiser(torch.nn.Module):
    """h(x, sigma) = mu + a (x - mu): the family that holds the Gaussian's exact denoisers."""

    masked = False

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x, sigma):
        return MU + self.a * (x - MU)


@pytest.mark.parametrize("sigma", [0.4, 0.7, 1.5])
def test_tweedie_loss_is_minimised_by_the_clean_denoiser(sigma):
    g = torch.Generator().manual_seed(0)
    x0 = MU + S * torch.randn(400_000, 1, 1, 1, generator=g)
    noisy = x0 + SIGMA_N * torch.randn(x0.shape, generator=g)
    loss = TweedieLoss(SIGMA_N)
    clean_a = S**2 / (S**2 + sigma**2)  # E[x0 | x_t]
    naive_a = (S**2 + SIGMA_N**2) / (S**2 + sigma**2)  # E[x_n | x_t], what training on noisy data learns
    sig = torch.full((len(x0), 1, 1, 1), sigma)
    eta = torch.randn(noisy.shape, generator=generator(1))
    # the loss is quadratic in a: three evaluations give its minimiser exactly
    l0, l1, l2 = (loss.tweedie_term(LinearDenoiser(a), noisy, sig, eta).mean().item() for a in (0.0, 0.5, 1.0))
    best = 0.5 * (l0 - l2) / (2 * (l0 - 2 * l1 + l2)) + 0.5
    assert best == pytest.approx(clean_a, abs=0.01)
    assert abs(best - naive_a) > 0.02


def test_consistency_term_vanishes_for_the_exact_denoiser():
    """For the exact E[x0|x_t] of a Gaussian the martingale property holds: the unbiased
    estimate averages to ~0; a wrong denoiser gives a clearly positive value."""
    g = torch.Generator().manual_seed(0)
    noisy = MU + (S**2 + SIGMA_N**2) ** 0.5 * torch.randn(200_000, 1, 1, 1, generator=g)

    class Exact(torch.nn.Module):
        masked = False

        def __init__(self, scale=1.0):
            super().__init__()
            self.scale = scale

        def forward(self, x, sigma):
            return MU + self.scale * S**2 / (S**2 + sigma**2) * (x - MU)

    loss = TweedieLoss(SIGMA_N)
    s = torch.full((len(noisy), 1, 1, 1), 0.1)
    z1, z2 = torch.randn((2, *noisy.shape), generator=generator(2))
    exact = loss.consistency_term(Exact(), noisy, s, z1, z2).mean().item()
    wrong = loss.consistency_term(Exact(0.5), noisy, s, z1, z2).mean().item()
    assert abs(exact) < 1e-3 and wrong > 5e-3


class SmoothGaussianPrior(torch.nn.Module):
    """The exact denoiser of a Gaussian image distribution with a low-pass spectrum:
    images are smooth, so their high-frequency energy is small."""

    masked, img_channels = False, 1

    def __init__(self, res=16):
        super().__init__()
        f = torch.fft.fftfreq(res)
        radius = (f[:, None] ** 2 + f[None] ** 2).sqrt()
        self.power = 0.3 * torch.exp(-((radius / 0.06) ** 2)) * res * res  # per-frequency variance (unitary FFT)

    def forward(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        spec = torch.fft.fft2(x, norm="ortho")
        return torch.fft.ifft2(spec * self.power / (self.power + sigma**2), norm="ortho").real

    def sample(self, n, g):
        z = torch.fft.fft2(torch.randn(n, 1, 16, 16, generator=g), norm="ortho")
        return torch.fft.ifft2(z * self.power.sqrt(), norm="ortho").real


def high_frequency_energy(images: np.ndarray) -> float:
    x = torch.from_numpy(images).float() / 127.5 - 1
    spec = torch.fft.fft2(x, norm="ortho").abs() ** 2
    f = torch.fft.fftfreq(x.shape[-1]).abs()
    high = (f[:, None] > 0.25) | (f[None] > 0.25)
    return spec[..., high].mean().item()


def test_early_stopped_sampler_gives_clean_not_noisy_images():
    prior = SmoothGaussianPrior()
    g = torch.Generator().manual_seed(0)
    clean = prior.sample(256, g)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=g)

    def to_u8(t):
        return t.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()

    hf_clean, hf_noisy = high_frequency_energy(to_u8(clean)), high_frequency_energy(to_u8(noisy))
    ours = generate(prior, Corruption("noise", sigma_n=0.2), 256, 16, num_steps=18, stop_sigma=0.2, progress=False)
    hf_ours = high_frequency_energy(ours)
    assert hf_noisy > 10 * hf_clean  # the check can tell the two apart
    assert hf_ours < 2 * hf_clean
    # the same sampler stopped one step early without the final x0 step would keep the noise
    from ambient.sampling import edm_sigmas, heun_sample, model_denoiser

    sig = edm_sigmas(18, 0.2, 80.0)[:-1]
    raw = heun_sample(model_denoiser(prior), torch.randn(256, 1, 16, 16, dtype=torch.float64) * 80, sig)
    assert high_frequency_energy(to_u8(raw.float())) > 10 * hf_ours


def test_noise_models_train_and_resume_config_knows_the_loss(tiny_dataset, tmp_path):
    corr = {"kind": "noise", "p": 0.0, "delta": 0.0, "sigma_n": 0.2, "seed": 0}
    cfg = TrainConfig(
        dataset=str(tiny_dataset),
        corruption=corr,
        network=TINY_NET,
        steps=3,
        batch_size=8,
        warmup_steps=1,
        checkpoint_every=3,
    )
    assert cfg.effective_loss == "tweedie" and cfg.sampling_stop_sigma == 0.2
    train(cfg, tmp_path / "ours", progress=False)
    naive = TrainConfig(**{**cfg.to_dict(), "loss": "edm"})
    assert naive.sampling_stop_sigma is None
    train(naive, tmp_path / "naive", progress=False)
    a, b = load_checkpoint(tmp_path / "ours" / "model.pt"), load_checkpoint(tmp_path / "naive" / "model.pt")
    assert a["config"]["loss"] == "auto" and b["config"]["loss"] == "edm"
    assert not torch.equal(a["ema"]["net.conv_out.weight"], b["ema"]["net.conv_out.weight"])
    with pytest.raises(ValueError, match="loss 'ambient'"):
        TrainConfig(**{**cfg.to_dict(), "loss": "ambient"})


class _ReplayRNG:
    """Hands out pre-drawn normal tensors in order (the draws TweedieLoss.__call__ asks for)."""

    def __init__(self, draws):
        self.draws = list(draws)

    def randn(self, shape):
        d = self.draws.pop(0)
        assert tuple(d.shape) == tuple(shape)
        return d


class _CountingNet(torch.nn.Module):
    masked = False

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Parameter(torch.tensor(0.7))
        self.calls = []

    def forward(self, x, sigma):
        self.calls.append((len(x), torch.is_grad_enabled()))
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return self.lin * x / (1 + sigma**2) + 0.1 * sigma


@pytest.mark.parametrize("cw", [0.0, 0.3])
def test_tweedie_call_is_the_tested_terms_on_the_whole_batch(cw):
    """__call__ (the path training uses) = EDM weight * tweedie_term at sigma > sigma_n on EVERY sample,
    plus cw / sigma_data^2 * consistency_term at s <= sigma_n when cw > 0, in one forward with grad."""
    g = torch.Generator().manual_seed(3)
    n, shape = 64, (64, 1, 4, 4)
    x = torch.randn(shape, generator=g)
    draws = [torch.randn(n, 1, 1, 1, generator=g), torch.randn(shape, generator=g)]
    if cw:
        draws += [
            torch.randn(n, 1, 1, 1, generator=g),
            torch.randn(shape, generator=g),
            torch.randn(shape, generator=g),
        ]
    loss = TweedieLoss(SIGMA_N, consistency_weight=cw)
    net = _CountingNet()
    got = loss(net, x, _ReplayRNG(draws))
    grad_calls = [c for c in net.calls if c[1]]
    assert len(grad_calls) == 1 and grad_calls[0][0] == (3 * n if cw else n)

    sigma, weight = loss.tweedie_sigma(n, _ReplayRNG(draws[:1]), "cpu")
    assert torch.all(sigma > SIGMA_N)
    want = weight * loss.tweedie_term(net, x, sigma, draws[1])
    if cw:
        s_low = loss._lognormal_between(n, _ReplayRNG(draws[2:3]), "cpu", None, SIGMA_N)
        assert torch.all(s_low <= SIGMA_N) and torch.all(s_low > 0)
        want = want + cw / loss.sigma_data**2 * loss.consistency_term(net, x, s_low, draws[3], draws[4])
    torch.testing.assert_close(got, want)


def test_tweedie_sigmas_follow_the_truncated_edm_lognormal():
    """sigma | sigma > sigma_n has the EDM log-normal's conditional law (checked on its median)."""
    loss = TweedieLoss(0.4)
    sigma, _ = loss.tweedie_sigma(200_000, torch.Generator().manual_seed(0), "cpu")
    ref = (torch.randn(2_000_000, generator=torch.Generator().manual_seed(1)) * 1.2 - 1.2).exp()
    ref = ref[ref > 0.4]
    assert sigma.min() > 0.4
    assert sigma.median().item() == pytest.approx(ref.median().item(), rel=0.02)

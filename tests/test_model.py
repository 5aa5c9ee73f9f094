import pytest
import torch
from conftest import TINY_NET

from ambient.corruption import Corruption
from ambient.losses import AmbientLoss, EDMLoss
from ambient.networks import UNetConfig, build_model
from ambient.sampling import edm_sigmas, generate, heun_sample
from ambient.utils import generator

TINY = UNetConfig(**TINY_NET)


def _perturb_params(model):
    # zero-initialised output layers would make every test trivially pass: randomise them
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("formulation", ["official", "split"])
def test_ambient_model_ignores_pixels_outside_its_mask(formulation):
    model = _perturb_params(build_model(3, 8, masked=True, formulation=formulation, config=TINY))
    x = torch.randn(4, 3, 8, 8)
    mask = (torch.rand(4, 1, 8, 8) > 0.5).float()
    changed = x + (1 - mask) * torch.randn_like(x) * 5
    sigma = torch.tensor([0.1, 1.0, 5.0, 40.0])
    assert torch.equal(model(x, sigma, mask), model(changed, sigma, mask))
    # ... while pixels inside the mask do matter
    assert not torch.allclose(model(x, sigma, mask), model(x + mask * 0.5, sigma, mask))


@pytest.mark.parametrize("formulation", ["official", "split"])
def test_ambient_loss_has_zero_gradient_outside_A(formulation):
    model = _perturb_params(build_model(1, 8, masked=True, formulation=formulation, config=TINY))
    corr = Corruption("dust", p=0.5, delta=0.2)
    images = torch.randn(6, 1, 8, 8, requires_grad=True)
    _, a, at = corr.apply(images.detach())
    loss = AmbientLoss(formulation)(model, images, generator(0), mask=a, further_mask=at).sum()
    loss.backward()
    grad = images.grad
    assert torch.all(grad[a.expand_as(grad) == 0] == 0)
    hidden = (a - at).expand_as(grad) == 1  # in A but hidden by the further corruption
    assert grad[hidden].abs().sum() > 0  # the model is scored on predicting them
    assert grad[at.expand_as(grad) == 1].abs().sum() > 0


def test_split_formulation_weights_hidden_pixels_at_data_scale():
    model = _perturb_params(build_model(1, 8, masked=True, formulation="split", config=TINY))
    a = torch.ones(2, 1, 8, 8)
    at = torch.zeros(2, 1, 8, 8)  # every pixel hidden: the weight must be 1/sigma_data^2 everywhere
    images = torch.randn(2, 1, 8, 8)
    per_pixel = AmbientLoss("split")(model, images, generator(1), mask=a, further_mask=at)
    g = generator(1)
    sigma = (torch.randn((2, 1, 1, 1), generator=g) * 1.2 - 1.2).exp()
    _ = torch.randn(images.shape, generator=g)
    d = model(torch.zeros_like(images), sigma, at)
    assert torch.allclose(per_pixel, (d - images) ** 2 / 0.25, atol=1e-5)


def test_edm_loss_weight_matches_karras():
    class Oracle(torch.nn.Module):  # returns a fixed error of 0.1 everywhere
        masked = False

        def forward(self, x, sigma):
            return self.target + 0.1

    net, images = Oracle(), torch.zeros(3, 1, 4, 4)
    net.target = images
    loss = EDMLoss()(net, images, generator(5))
    g = generator(5)
    sigma = (torch.randn((3, 1, 1, 1), generator=g) * 1.2 - 1.2).exp()
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    assert torch.allclose(loss, (weight * 0.01).expand_as(loss))


def test_edm_sigmas_follow_karras_schedule():
    s = edm_sigmas(18)
    assert len(s) == 19 and s[-1] == 0
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002)
    assert torch.all(s[:-1][1:] < s[:-1][:-1])


def test_heun_sampler_recovers_a_gaussian_distribution():
    """With the exact denoiser of N(mu, s^2), the ODE maps N(0, 80^2) onto the data distribution.

    18 Heun steps leave a known discretisation error on the spread (about 6% for s = 0.4);
    it vanishes as steps are added, which the 100-step check pins down.
    """
    mu, s = 0.3, 0.4

    def exact(x, sigma):
        return mu + s**2 / (s**2 + sigma**2) * (x - mu)

    torch.manual_seed(0)
    noise = torch.randn(200_000, dtype=torch.float64)
    for steps, rel in [(18, 0.08), (100, 0.01)]:
        sigmas = edm_sigmas(steps)
        x = heun_sample(exact, noise * sigmas[0], sigmas)
        assert x.mean().item() == pytest.approx(mu, abs=0.005)
        assert x.std().item() == pytest.approx(s, rel=rel)
    # a wrong denoiser (half the variance) must fail the same check
    sigmas = edm_sigmas(100)
    wrong = heun_sample(lambda x, sig: mu + 0.5 * s**2 / (0.5 * s**2 + sig**2) * (x - mu), noise * sigmas[0], sigmas)
    assert abs(wrong.std().item() - s) > 0.05


@pytest.mark.parametrize("corruption", ["clean", "dust-p0.50"])
def test_samples_do_not_depend_on_batch_size(corruption):
    corr = Corruption.from_name(corruption, delta=0.1 if corruption != "clean" else 0.0)
    model = _perturb_params(build_model(1, 8, masked=corr.masked, config=TINY)).eval()
    a = generate(model, corr, 5, 8, seed=3, batch_size=5, num_steps=4, progress=False)
    b = generate(model, corr, 5, 8, seed=3, batch_size=2, num_steps=4, progress=False)
    c = generate(model, corr, 5, 8, seed=4, batch_size=5, num_steps=4, progress=False)
    assert a.shape == (5, 1, 8, 8) and a.dtype.name == "uint8"
    assert (abs(a.astype(int) - b.astype(int)) <= 1).all()  # batched BLAS may differ in the last bit
    assert (a != c).any()


class _Recorder(torch.nn.Module):
    """Inner network stub: records (input, c_noise) and returns a fixed output F."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out, self.calls = out, []

    def forward(self, x, c_noise):
        self.calls.append((x.clone(), c_noise.clone()))
        return self.out


@pytest.mark.parametrize("formulation", ["official", "split"])
def test_masked_network_input_and_output_match_the_formulation(formulation):
    """official (ambient-diffusion training/loss.py + training/networks.py EDMPrecond): the loss
    concatenates (A~ x_t, A~) and EDMPrecond scales the whole input by c_in, mask channels included;
    split scales only the image channels. Both give the network only pixels inside A~."""
    from ambient.networks import EDMPrecond

    g = torch.Generator().manual_seed(0)
    n, c, h = 3, 3, 5
    x = torch.randn(n, c, h, h, generator=g)
    mask = (torch.rand(n, 1, h, h, generator=g) > 0.4).float()
    sigma = torch.tensor([0.05, 0.7, 20.0])
    f = torch.randn(n, c, h, h, generator=g)
    stub = _Recorder(f)
    out = EDMPrecond(stub, c, masked=True, formulation=formulation)(x, sigma, mask)

    s = sigma.view(-1, 1, 1, 1)
    c_in, c_skip = 1 / (s**2 + 0.25).sqrt(), 0.25 / (s**2 + 0.25)
    c_out = s * 0.5 / (s**2 + 0.25).sqrt()
    ((inp, c_noise),) = stub.calls
    assert inp.shape == (n, 2 * c, h, h)
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    torch.testing.assert_close(inp[:, :c], c_in * mask * x)
    mask_c = mask.expand(-1, c, -1, -1)
    if formulation == "official":
        torch.testing.assert_close(inp[:, c:], c_in * mask_c)  # the mask is scaled by c_in too
        torch.testing.assert_close(out, c_skip * mask * x + c_out * f)
    else:
        torch.testing.assert_close(inp[:, c:], mask_c)  # a plain 0/1 indicator
        torch.testing.assert_close(out, mask * (c_skip * x + c_out * f) + (1 - mask) * 0.5 * f)

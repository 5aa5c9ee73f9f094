"""The latent (DDPM/VP) Tweedie loss of the SDXL branch: analytic Gaussian toy, identities, errors."""

from __future__ import annotations

import pytest
import torch

from ambient.latent.tweedie import LatentTweedieLoss, ddim_sample, ddpm_alphas_cumprod

MU, S, T_N = 0.3, 0.8, 100


def _toy(n=400_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = MU + S * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x0, torch.randn(n, 1, generator=g, dtype=torch.float64), g


@pytest.mark.parametrize("t", [150, 400, 900])
def test_minimised_by_the_clean_denoiser_on_a_gaussian(t):
    """x0 ~ N(mu, s^2): E[x0 | x_t] = mu + k (x_t - sqrt(abar_t) mu) with k = sqrt(abar_t) s^2 /
    (abar_t s^2 + 1 - abar_t). The loss, quadratic in the slope a of h = mu + a (x_t - sqrt(abar_t) mu),
    has its minimum at k, not at the slope of E[x_n | x_t] that plain training on x_n would learn."""
    loss = LatentTweedieLoss(ddpm_alphas_cumprod(), T_N)
    x0, eps, g = _toy()
    x_n = loss.noisy_latents(x0, eps)
    tt = torch.full((len(x0),), t)
    x_t = loss.noise_further(x_n, tt, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    a_t, a_n = loss.abar[t].item(), loss.abar[T_N].item()
    k = a_t**0.5 * S**2 / (a_t * S**2 + 1 - a_t)

    def value(a):
        return loss.residual(MU + a * (x_t - a_t**0.5 * MU), x_t, x_n, tt).mean().item()

    l0, l1, l2 = value(0.0), value(0.5), value(1.0)
    best = 0.5 * (l0 - l2) / (2 * (l0 - 2 * l1 + l2)) + 0.5
    assert best == pytest.approx(k, rel=0.02)
    # regressing x_n itself on x_t (what fitting the noisy data directly learns) has another slope
    naive = (a_t / a_n) ** 0.5 * (a_n * S**2 + 1 - a_n) / (a_t * S**2 + 1 - a_t)
    assert abs(best - naive) > 0.05 * naive  # about 12% apart, against the 2% tolerance above


def test_x_t_has_the_forward_law_and_x0_from_eps_inverts_it():
    loss = LatentTweedieLoss(ddpm_alphas_cumprod(), T_N)
    x0, eps, g = _toy()
    t = torch.full((len(x0),), 600)
    x_t = loss.noise_further(loss.noisy_latents(x0, eps), t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    a = loss.abar[600].item()
    assert x_t.mean().item() == pytest.approx(a**0.5 * MU, abs=0.01)
    assert x_t.var().item() == pytest.approx(a * S**2 + 1 - a, rel=0.01)
    e = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = a**0.5 * x0 + (1 - a) ** 0.5 * e
    assert torch.allclose(loss.x0_from_eps(e, xt, t), x0, atol=1e-9)


def test_ve_limit_is_the_pixel_tweedie_residual():
    """With abar close to 1 the coefficients tend to the VE ones: r -> sigma_n^2 / sigma^2, c0 -> 1 - r."""
    abar = 1.0 / (1.0 + torch.linspace(1e-6, 4e-4, 50, dtype=torch.float64))  # sigma^2 = 1/abar - 1
    loss = LatentTweedieLoss(abar, 10)
    t = torch.tensor([30])
    c0, r = loss.coefficients(t, torch.zeros(1, 1, dtype=torch.float64))
    s2 = 1 / abar - 1
    assert r.item() == pytest.approx((s2[10] / s2[30]).item(), rel=1e-3)
    assert c0.item() == pytest.approx(1 - r.item(), abs=1e-3)


def test_call_draws_t_above_t_n_and_matches_the_terms():
    loss = LatentTweedieLoss(ddpm_alphas_cumprod(), T_N)
    x_n = torch.randn(64, 4, 8, 8)
    seen = []

    def eps_model(x_t, t, **cond):
        seen.append((x_t, t, cond))
        return torch.zeros_like(x_t)

    out = loss(eps_model, x_n, torch.Generator().manual_seed(3), encoder_hidden_states="c")
    x_t, t, cond = seen[0]
    assert out.shape == x_n.shape and cond == {"encoder_hidden_states": "c"}
    assert int(t.min()) >= T_N and int(t.max()) < 1000
    assert torch.allclose(out, loss.residual(loss.x0_from_eps(torch.zeros_like(x_t), x_t, t), x_t, x_n, t))


@pytest.mark.parametrize("t_n, match", [(-1, "timestep_nature"), (999, "timestep_nature"), (5000, "must lie")])
def test_bad_noise_level_is_a_clear_error(t_n, match):
    with pytest.raises(ValueError, match=match):
        LatentTweedieLoss(ddpm_alphas_cumprod(), t_n)
    loss = LatentTweedieLoss(ddpm_alphas_cumprod(), T_N)
    with pytest.raises(ValueError, match="needs t >= t_n=100"):
        loss.noise_further(torch.zeros(2, 1), torch.tensor([50, 200]), torch.zeros(2, 1))


def _exact_eps(abar):
    """The exact epsilon predictor of x0 ~ N(mu, s^2): eps = (x_t - sqrt(a) E[x0 | x_t]) / sqrt(1 - a)."""

    def eps_model(x_t, t, **_):
        a = abar[t].view(-1, *([1] * (x_t.ndim - 1))).to(x_t)
        x0 = MU + a.sqrt() * S**2 / (a * S**2 + 1 - a) * (x_t - a.sqrt() * MU)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    return eps_model


def test_ddim_full_and_early_stopped_samplers_on_a_gaussian():
    """With the exact epsilon of N(mu, s^2): the full-length DDIM ends at N(mu, s^2); the early-stopped
    sampler returns E[x0 | x_{t_n}], whose variance is abar_n s^4 / (abar_n s^2 + 1 - abar_n) (no
    training noise added back)."""
    abar = ddpm_alphas_cumprod()
    # start from the forward marginal at T - 1: SDXL's schedule keeps sqrt(abar_T) = 0.07 of the signal
    # there (nonzero terminal SNR), which N(0, I) would drop and a deterministic sampler never restores
    a_T = abar[-1].item()
    z = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = a_T**0.5 * MU + (a_T * S**2 + 1 - a_T) ** 0.5 * z
    full = ddim_sample(_exact_eps(abar), x_T, abar, num_steps=100, stop_t=0)
    assert full.mean().item() == pytest.approx(MU, abs=0.01) and full.std().item() == pytest.approx(S, rel=0.02)
    early = ddim_sample(_exact_eps(abar), x_T, abar, num_steps=100, stop_t=T_N)
    a_n = abar[T_N].item()
    assert early.mean().item() == pytest.approx(MU, abs=0.01)
    assert early.var().item() == pytest.approx(a_n * S**4 / (a_n * S**2 + 1 - a_n), rel=0.03)
    with pytest.raises(ValueError, match="stop_t=999"):
        ddim_sample(_exact_eps(abar), x_T[:2], abar, stop_t=999)


# ---------------------------------------------------------------- the consistency term


def _gaussian_eps_model(loss, slope_below_t_n: float = 1.0):
    """The exact eps-predictor of x0 ~ N(MU, S^2) (E[x0 | x_t] is linear in x_t); below t_n its x0
    slope can be scaled to make a model that is wrong only there."""
    abar = loss.abar

    def eps_model(x_t, t):
        a = abar[t.long()].view(-1, *([1] * (x_t.ndim - 1)))
        k = a.sqrt() * S**2 / (a * S**2 + 1 - a)
        k = torch.where(t.view_as(k[..., 0]).unsqueeze(-1) < loss.t_n, k * slope_below_t_n, k)
        x0 = MU + k * (x_t - a.sqrt() * MU)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    return eps_model


def test_posterior_draws_have_the_forward_law():
    """x_s drawn from q(x_s | x_n, x0) with the true x0 has the forward marginal at s."""
    loss = LatentTweedieLoss(ddpm_alphas_cumprod(), T_N, consistency_weight=1.0)
    x0, eps, g = _toy()
    x_n = loss.noisy_latents(x0, eps)
    s = torch.full((len(x0),), 30)
    z = [torch.randn(x0.shape, generator=g, dtype=torch.float64) for _ in range(2)]
    x1, x2 = loss.posterior_draws(x_n, torch.full_like(s, T_N), x0, s, *z).chunk(2)
    a = loss.abar[30].item()
    for x in (x1, x2):
        assert x.mean().item() == pytest.approx(a**0.5 * MU, abs=0.01)
        assert x.var().item() == pytest.approx(a * S**2 + 1 - a, rel=0.01)
    with pytest.raises(ValueError, match="0 <= s < u"):
        loss.posterior_draws(x_n[:2], torch.tensor([100, 100]), x0[:2], torch.tensor([100, 3]), z[0][:2], z[1][:2])


def test_consistency_term_vanishes_for_the_true_denoiser_only():
    """The estimate of || E[h(x_s, s)] - h(x_u, u) ||^2 averages to ~0 for E[x0 | x_t] and is clearly
    positive for a model that is right at and above t_n and wrong below it: from the boundary (x_n, t_n)
    and from the Tweedie term's (x_t, t) with t in [t_n, t_n + 100), where steps reach below t_n."""
    loss = LatentTweedieLoss(ddpm_alphas_cumprod(), T_N, consistency_weight=1.0)
    x0, eps, g = _toy()
    x_n = loss.noisy_latents(x0, eps)
    n = len(x0)
    t = torch.randint(T_N, T_N + 100, (n,), generator=g)
    starts = {
        "boundary": (x_n, torch.full((n,), T_N)),
        "everywhere": (loss.noise_further(x_n, t, torch.randn(x0.shape, generator=g, dtype=torch.float64)), t),
    }
    for name, (x_u, u) in starts.items():
        s = loss.step_down(u, g)
        assert bool((s < u).all()) and bool((s >= (u - 100).clamp_min(0)).all())
        z1, z2 = (torch.randn(x0.shape, generator=g, dtype=torch.float64) for _ in range(2))
        right = loss.consistency_term(_gaussian_eps_model(loss), x_u, u, s, z1, z2).mean().item()
        wrong = loss.consistency_term(_gaussian_eps_model(loss, 0.7), x_u, u, s, z1, z2).mean().item()
        assert wrong > 0.005 and abs(right) < 0.05 * wrong, (name, right, wrong)


def test_consistency_weight_adds_the_term_and_zero_leaves_the_tweedie_loss_unchanged():
    abar = ddpm_alphas_cumprod()
    x0, eps, _ = _toy(n=64)
    plain = LatentTweedieLoss(abar, T_N)
    x_n = plain.noisy_latents(x0, eps)
    model = _gaussian_eps_model(plain, 0.7)
    a = plain(model, x_n, torch.Generator().manual_seed(5))
    for everywhere in (True, False):
        weighted = LatentTweedieLoss(abar, T_N, consistency_weight=2.0, consistency_everywhere=everywhere)
        b = weighted(model, x_n, torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)  # the Tweedie term's draws come first, then the consistency term's
        t = plain.sample_t(len(x_n), g)
        x_t = plain.noise_further(x_n, t, torch.randn(x_n.shape, generator=g).to(x_n))
        x_u, u = (x_t, t) if everywhere else (x_n, torch.full_like(t, T_N))
        s = weighted.step_down(u, g)
        z1, z2 = (torch.randn(x_n.shape, generator=g).to(x_n) for _ in range(2))
        assert torch.allclose(b, a + 2.0 * weighted.consistency_term(model, x_u, u, s, z1, z2))
    with pytest.raises(ValueError, match="must be >= 0"):
        LatentTweedieLoss(abar, T_N, consistency_weight=-1.0)
    with pytest.raises(ValueError, match="needs t_n >= 1"):
        LatentTweedieLoss(abar, 0, consistency_weight=1.0)
    with pytest.raises(ValueError, match="max_steps_diff=0 must be >= 1"):
        LatentTweedieLoss(abar, T_N, consistency_weight=1.0, max_steps_diff=0)

"""The Gaussian-mixture prior: its exact denoiser and posterior, and VIPaint on a three-mode posterior.

Truth here is closed form (``vipaint/gaussian_mixture.py``); the checks against it are independent
estimates: a self-normalised Monte Carlo average for E[x_0 | z_t], brute-force integration on a grid
for the posterior weights and moments.
"""
from __future__ import annotations

import pytest
import torch

from vipaint.fit import FitConfig
from vipaint.priors.gaussian import smooth_covariance
from vipaint.priors.gaussian_mixture import GaussianMixturePrior, mode_statistics, three_mode_example
from vipaint.likelihood import GaussianLikelihood
from vipaint.refine import RefineConfig
from vipaint.pipeline import VIPaintConfig, vipaint


def test_denoiser_matches_monte_carlo(schedule):
    """E[x_0 | z_t] ≈ Σ_i w_i x_i / Σ_i w_i, x_i ~ prior, w_i = N(z_t; α_t x_i, σ_t² I)."""
    g = torch.Generator().manual_seed(0)
    cov = torch.stack([smooth_covariance(2, 2, std=s, length_scale=1.0) for s in (0.3, 0.2)])
    means = torch.tensor([[0.5, 0.4, 0.6, 0.5], [-0.5, -0.3, -0.4, -0.6]]).reshape(2, 1, 2, 2)
    prior = GaussianMixturePrior(torch.tensor([0.6, 0.4]), means, cov, schedule)
    x, k = prior.sample(400_000, g)
    for t in (150, 400):
        ab = schedule.alpha_bar(t)
        z_t = (ab.sqrt() * x[:1] + (1 - ab).sqrt() * torch.randn(1, 1, 2, 2, generator=g, dtype=torch.float64))
        logw = -0.5 * ((z_t - ab.sqrt() * x) ** 2).flatten(1).sum(1) / (1 - ab)
        w = torch.softmax(logw, 0)
        ess = float(1 / (w**2).sum())
        mc = (w[:, None] * x.flatten(1)).sum(0)
        mc_rho = torch.stack([w[k == j].sum() for j in range(2)])
        exact = prior.x0_hat(z_t.float(), t).double().flatten()
        rho = prior.responsibilities(z_t.float(), t)[0]
        # Monte Carlo error of a weighted mean ~ spread / sqrt(ESS); 5 of those is the tolerance.
        tol = 5 * float(x.flatten(1).std(0).max()) / ess**0.5
        assert ess > 1000, ess
        assert (mc - exact).abs().max() < tol, (t, mc, exact, tol)
        assert (mc_rho - rho).abs().max() < 5 / ess**0.5, (t, mc_rho, rho)


def test_posterior_weights_and_moments_match_brute_force(schedule):
    """1x1x2 image: pixel 0 observed (σ_y = 0.1), pixel 1 missing; integrate p(x, k) p(y | x) on a grid."""
    cov = torch.tensor([[[0.09, 0.06], [0.06, 0.09]], [[0.04, -0.01], [-0.01, 0.16]]], dtype=torch.float64)
    means = torch.tensor([[0.3, 0.8], [-0.1, -0.7]]).reshape(2, 1, 1, 2)
    prior = GaussianMixturePrior(torch.tensor([0.35, 0.65]), means, cov, schedule)
    keep = torch.tensor([1.0, 0.0]).reshape(1, 1, 2)
    y = torch.tensor([0.12, 0.0]).reshape(1, 1, 2)
    post = prior.posterior(y, keep, 0.1)

    grid = torch.linspace(-4, 4, 1601, dtype=torch.float64)
    x0, x1 = torch.meshgrid(grid, grid, indexing="ij")
    lik = torch.exp(-0.5 * (y.flatten()[0] - x0) ** 2 / 0.1**2)
    mass, m1, v1 = [], [], []
    for k in range(2):
        m, S = means[k].flatten().double(), cov[k]
        d = torch.stack([x0 - m[0], x1 - m[1]], -1)
        dens = torch.exp(-0.5 * (d @ torch.linalg.inv(S) * d).sum(-1)) / (2 * torch.pi * torch.det(S).sqrt())
        p = 0.35 * dens * lik if k == 0 else 0.65 * dens * lik
        mass.append(p.sum())
        m1.append((p * x1).sum() / p.sum())
        v1.append((p * x1**2).sum() / p.sum() - m1[-1] ** 2)
    weights = torch.stack(mass) / sum(mass)
    assert torch.allclose(post.weights, weights, atol=1e-6), (post.weights, weights)
    assert torch.allclose(post.means[:, 0, 0, 1], torch.stack(m1), atol=1e-5)
    assert torch.allclose(post.covs[:, 1, 1], torch.stack(v1), atol=1e-5)
    # and the evidence is the grid's total mass (with the likelihood's normaliser)
    dx = float(grid[1] - grid[0])
    log_py = torch.log(sum(mass) * dx * dx / (0.1 * (2 * torch.pi) ** 0.5))
    assert abs(prior.log_evidence(y, keep, 0.1) - float(log_py)) < 1e-4


@pytest.fixture(scope="module")
def mixture(schedule):
    return three_mode_example(schedule)


def test_exact_mixture_weights_are_informative(mixture):
    *_, post = mixture
    assert torch.allclose(post.weights, torch.tensor([0.612, 0.271, 0.117], dtype=torch.float64), atol=2e-3)


# VIPaint on the three-mode example of ``gaussian_mixture.three_mode_example``: the observation moves the
# mode weights from the prior's (0.5, 0.3, 0.2) to (0.612, 0.271, 0.117).

def test_vipaint_splits_between_modes_with_exact_weights(mixture):
    """512 samples: sampling error of a fraction ≈ 0.02; tolerance 0.07 absolute per mode. Measured
    (cg_steps=10): fractions 0.576 / 0.295 / 0.129 against 0.612 / 0.271 / 0.117."""
    prior, op, y, keep, post = mixture
    cfg = VIPaintConfig(fit=FitConfig(n_iter=50, n_samples=8), refine=RefineConfig(n_steps=50))
    out = vipaint(prior, op, GaussianLikelihood(op, prior, cg_steps=10), y, n_samples=512, config=cfg,
                  generator=torch.Generator().manual_seed(1))
    stats = mode_statistics(out.samples[0], post, keep)
    print("VIPaint mode fractions", stats)
    assert (stats["fractions"] - post.weights).abs().max() < 0.07
    # Within each mode the samples sit where the exact component posterior is, with its spread.
    for j in range(3):
        assert stats["mean_err"][j] < 0.5, stats
        assert 0.6 < stats["std_ratio"][j] < 1.5, stats

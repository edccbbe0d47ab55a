"""Guidance through a decoder: a latent Gaussian prior with an analytic decoder (nearest x4 up-sampling) against the
same problem posed in pixel space.

Latent z_0 ~ N(0, S) on 1x4x4 (S a smooth kernel), x = D(z_0) = U z_0 on 1x16x16: each latent element decodes to a
4x4 cell of 16 pixels. The right half of the image is missing (whole cells), y = A x + σ_y ε with σ_y = 0.05.
Because the cells are observed whole, the cell means of y are a sufficient statistic: the same posterior is the
*pixel* problem on the 4x4 grid (``GaussianPrior`` with S, observing the cell means with noise σ_y / 4). VIPaint
through the decoder must give what VIPaint gives on that pixel problem, with the same seeds; the per-pixel
variance of the old guidance (reach "diagonal") overshoots by the 16 pixels a latent reaches and diverges.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

from vipaint.fit import FitConfig
from vipaint.likelihood import LATENT_CG_STEPS, GaussianLikelihood, LikelihoodConfig, decoder_jvp, make_likelihood
from vipaint.operators import Inpainting
from vipaint.pipeline import VIPaintConfig, vipaint
from vipaint.priors.gaussian import GaussianPrior, UpsampledGaussianPrior, smooth_covariance
from vipaint.refine import RefineConfig, likelihood_gradient

N = 256
CONFIG = VIPaintConfig(fit=FitConfig(n_iter=20, n_samples=4), refine=RefineConfig(n_steps=25))


@pytest.fixture(scope="module")
def problem(schedule):
    latent = UpsampledGaussianPrior(torch.zeros(1, 4, 4), smooth_covariance(4, 4, std=0.5, length_scale=1.5),
                                    schedule, factor=4)
    g = torch.Generator().manual_seed(0)
    z_true = (torch.linalg.cholesky(latent.cov) @ torch.randn(16, generator=g, dtype=torch.float64))
    keep = torch.ones(1, 1, 16, 16)
    keep[..., 8:] = 0
    op = Inpainting(keep, sigma_y=0.05)
    y = op.observe(latent.decode(z_true.reshape(1, 1, 4, 4).float()), g)
    # The same problem on the latent grid, as a pixel prior: cell means, noise σ_y / 4.
    cell_keep = F.avg_pool2d(keep, 4)
    cell_op = Inpainting(cell_keep, sigma_y=0.05 / 4)
    return dict(latent=latent, op=op, y=y, keep=keep, pixel=GaussianPrior(torch.zeros(1, 4, 4), latent.cov, schedule),
                cell_op=cell_op, cell_y=F.avg_pool2d(y, 4) * cell_keep)


def run(prior, op, y, reach="auto", cg_steps=None):
    likelihood = GaussianLikelihood(op, prior, reach=reach, cg_steps=cg_steps)
    return vipaint(prior, op, likelihood, y, n_samples=N, config=CONFIG, generator=torch.Generator().manual_seed(1))


def test_closed_forms_agree(problem):
    """The pixel posterior of the up-sampled prior is the cell problem's posterior, decoded."""
    mean, _ = problem["latent"].pixel_posterior(problem["y"][0], problem["keep"][0], 0.05)
    cell_mean, _ = problem["pixel"].posterior(problem["cell_y"][0], problem["cell_op"].keep_mask[0], 0.05 / 4)
    torch.testing.assert_close(mean.float(), problem["latent"].decode(cell_mean[None].float())[0], atol=1e-5, rtol=0)


def test_guidance_through_the_decoder_matches_the_pixel_problem(problem):
    latent = run(problem["latent"], problem["op"], problem["y"])
    pixel = run(problem["pixel"], problem["cell_op"], problem["cell_y"])
    decoded = problem["latent"].decode(pixel.samples[0])                   # (N, 1, 16, 16)
    miss = problem["keep"][0].expand(1, 16, 16) == 0
    diff = (latent.samples[0].mean(0) - decoded.mean(0)).abs()[miss].max().item()
    ratio = (latent.samples[0].std(0) / decoded.std(0))[miss]
    print(f"sample means differ by at most {diff:.4f}; std ratio [{ratio.min():.3f}, {ratio.max():.3f}]")
    assert diff < 0.02                       # prior std 0.5: the two routes are the same computation
    assert 0.95 < ratio.min() and ratio.max() < 1.05
    mean, cov = problem["latent"].pixel_posterior(problem["y"][0], problem["keep"][0], 0.05)
    err = ((latent.samples[0].mean(0).double() - mean).abs()[miss] / 0.5).mean().item()
    assert err < 0.45                        # the isotropic band of tests/test_closed_form.py


def test_per_pixel_variance_overshoots_through_the_decoder(problem):
    """reach "diagonal" (a² = 1 per pixel, the guidance before the fix): a latent reaches 16 pixels, the step is
    16x too long at every refinement step and the samples diverge. The decoder solve (CG on C_t, the latent
    default) takes its gradient from C_t itself, whatever reach the value uses, and does not."""
    _, cov = problem["latent"].pixel_posterior(problem["y"][0], problem["keep"][0], 0.05)
    exact_std = cov.diagonal().sqrt().reshape(1, 16, 16)
    diagonal = run(problem["latent"], problem["op"], problem["y"], reach="diagonal", cg_steps=0)
    ratio = (diagonal.samples[0].std(0) / exact_std).median().item()
    solved = run(problem["latent"], problem["op"], problem["y"], reach="diagonal", cg_steps=LATENT_CG_STEPS)
    solved_ratio = (solved.samples[0].std(0) / exact_std).median().item()
    print(f"reach 'diagonal': sample std {ratio:.3g} x the exact posterior's; "
          f"with the decoder solve {solved_ratio:.3g}")
    assert ratio > 100
    assert 0.8 < solved_ratio < 1.25


def test_residual_reach_is_the_cell_count_for_cell_constant_residuals(problem):
    """ρ = ‖(A J)ᵀ r‖² / ‖r‖²: a residual constant on observed cells is an eigenvector of A J Jᵀ Aᵀ with
    eigenvalue 16 (the pixels per cell); ρ is then exact, and 0 leaves the variance σ_y² alone."""
    latent, op = problem["latent"], problem["op"]
    lik = GaussianLikelihood(op, latent)
    z0 = torch.zeros(2, 1, 4, 4, requires_grad=True)
    y = latent.decode(torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))) * problem["keep"]
    rho = lik.residual_reach(y, op.expand(2), latent.decode(z0), z0)
    torch.testing.assert_close(rho, torch.full((2,), 16.0))
    pixel = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))   # no cell structure: ρ < 16
    assert (lik.residual_reach(pixel * problem["keep"], op.expand(2), latent.decode(z0), z0) < 4).all()


def test_reach_defaults_follow_the_prior(problem, gaussian_prior):
    assert GaussianLikelihood(problem["op"], problem["latent"]).reach == "residual"
    assert GaussianLikelihood(problem["op"], gaussian_prior).reach == "diagonal"
    with pytest.raises(ValueError, match="reach"):
        LikelihoodConfig(reach="pixel")


def test_cg_steps_default_follows_the_prior(problem, gaussian_prior):
    """The decoder solve is on for latent priors only; pixel priors keep the isotropic gradient (golden test)."""
    config = LikelihoodConfig()
    assert make_likelihood(config, problem["op"], problem["latent"]).cg_steps == LATENT_CG_STEPS
    assert make_likelihood(config, problem["op"], gaussian_prior).cg_steps == 0
    unmarginalised = LikelihoodConfig(marginalize_denoiser=False)
    assert make_likelihood(unmarginalised, problem["op"], problem["latent"]).cg_steps == 0
    with pytest.raises(ValueError, match="marginalize_denoiser"):
        make_likelihood(LikelihoodConfig(marginalize_denoiser=False, cg_steps=3), problem["op"], problem["latent"])
    with pytest.raises(ValueError, match="cg_steps"):
        LikelihoodConfig(cg_steps=-1)


def test_refinement_gradient_uses_the_residual_reach(problem):
    """One guidance gradient through the decoder equals that of the cell problem (the same z_t): the factor
    1/(σ_y² + 16 r_t²) on Σ_cell r replaces 1/(σ_y² + r_t²)."""
    z = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    _, _, g_latent = likelihood_gradient(problem["latent"], GaussianLikelihood(problem["op"], problem["latent"]),
                                         problem["y"], z, 300)
    _, _, g_pixel = likelihood_gradient(problem["pixel"], GaussianLikelihood(problem["cell_op"], problem["pixel"]),
                                        problem["cell_y"], z, 300)
    torch.testing.assert_close(g_latent, g_pixel, rtol=0.02, atol=1e-3)


def test_a_blur_takes_the_residual_reach_and_its_rayleigh_quotient(gaussian_prior):
    """A blur's A Aᵀ is not diagonal: a² = Σ k² is the variance a white residual sees, while a smooth residual sees
    A Aᵀ's top eigenvalue (≈ 1). "auto" takes the residual reach for it (J = I on a pixel prior), and the diagonal one
    where A Aᵀ is diagonal (inpainting, super-resolution), where the two agree."""
    from vipaint.operators import GaussianBlur, SuperResolution

    blur = GaussianBlur(std=1.5, sigma_y=0.05)
    assert GaussianLikelihood(blur, gaussian_prior).reach == "residual"
    assert GaussianLikelihood(SuperResolution(2), gaussian_prior).reach == "diagonal"
    lik = GaussianLikelihood(blur, gaussian_prior)
    x = torch.zeros(2, 1, 64, 64, requires_grad=True)   # 64 px: the zero-padded border rows carry less of A
    white = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(7))
    rho_white = lik.residual_reach(white, blur, x, x)
    rho_flat = lik.residual_reach(torch.ones(2, 1, 64, 64), blur, x, x)
    print(f"a² {blur.row_norm2:.4f}; ρ white {rho_white.tolist()}, flat {rho_flat.tolist()}")
    assert ((rho_white / blur.row_norm2 - 1).abs() < 0.2).all()       # E‖Aᵀ r‖² = tr(A Aᵀ) for white r
    assert (rho_flat > 0.8).all() and blur.row_norm2 < 0.04             # over 20x the diagonal's variance
    inpaint = Inpainting(torch.ones(1, 1, 8, 8))
    r = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    z = torch.zeros(1, 1, 8, 8, requires_grad=True)
    torch.testing.assert_close(GaussianLikelihood(inpaint, gaussian_prior).residual_reach(r, inpaint, z, z),
                               torch.ones(1))                            # = a² = 1: the diagonal reach is exact


def _decoder_gradient(latent, op, y, x0_hat, t, cg_steps):
    """∇_{x̂_0} of the likelihood at x = D(x̂_0), with ``cg_steps`` of CG on C = σ_y² I + r_t² A J Jᵀ Aᵀ."""
    z0 = x0_hat.clone().requires_grad_(True)
    ll = GaussianLikelihood(op, latent, cg_steps=cg_steps)(y, latent.decode(z0), t, z0, z0)
    (g,) = torch.autograd.grad(ll.sum(), z0)
    return g


@pytest.fixture(scope="module")
def scattered(problem):
    """Half of the pixels observed at random: cells are seen in part, so ρ is no longer exact."""
    keep = (torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(9)) < 0.5).float()
    op = Inpainting(keep, sigma_y=0.05)
    y = op.observe(problem["latent"].decode(torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(10))),
                   torch.Generator().manual_seed(11))
    return op, y, torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(12)) * 0.3


def test_one_decoder_cg_step_is_the_residual_reach(problem, scattered):
    """The residual reach's variance σ_y² + r_t² ρ is the exact line search of CG's first step on C v = r."""
    op, y, x0_hat = scattered
    torch.testing.assert_close(_decoder_gradient(problem["latent"], op, y, x0_hat, 300, 1),
                               _decoder_gradient(problem["latent"], op, y, x0_hat, 300, 0), rtol=1e-4, atol=1e-4)


def test_decoder_cg_solves_the_pixel_covariance(problem, scattered):
    """Enough CG steps give Jᵀ Aᵀ C⁻¹ r exactly (C dense: σ_y² I + r_t² A U Uᵀ Aᵀ, U the x4 up-sampling matrix; C
    has at most 17 distinct eigenvalues, so CG ends in 17 steps); the first step alone does not."""
    latent = problem["latent"]
    op, y, x0_hat = scattered
    t = 300
    u = latent.decode(torch.eye(16).reshape(16, 1, 4, 4)).reshape(16, 256).T.double()     # (256 pixels, 16 latents)
    a = torch.diag(op.keep_mask.flatten().double())
    r2 = float(latent.denoiser_variance(t))
    c = 0.05**2 * torch.eye(256, dtype=torch.float64) + r2 * a @ u @ u.T @ a
    r = a @ (y.flatten().double() - u @ x0_hat.flatten().double())
    observed = op.keep_mask.flatten().bool()
    solve = torch.zeros(256, dtype=torch.float64)
    solve[observed] = torch.linalg.solve(c[observed][:, observed], r[observed])
    exact = (u.T @ a @ solve).reshape(1, 1, 4, 4).float()
    cg = _decoder_gradient(latent, op, y, x0_hat, t, 20)
    torch.testing.assert_close(cg, exact, rtol=2e-3, atol=2e-3 * exact.abs().max().item())
    first = _decoder_gradient(latent, op, y, x0_hat, t, 1)
    assert (first - exact).norm() > 0.1 * exact.norm()


def test_decoder_jvp_matches_autograd_on_a_nonlinear_decoder():
    """The central difference is J v to ~1e-4 on a smooth nonlinear decoder (convolution, SiLU, ×2 up-sampling,
    tanh), for v of any scale (it is normalised per sample before the step)."""
    torch.manual_seed(13)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Upsample(scale_factor=2),
                              torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.Tanh())
    z0, v = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4) * torch.tensor([1e-3, 1.0, 1e3]).reshape(3, 1, 1, 1)
    _, exact = torch.func.jvp(net, (z0,), (v,))
    approx = decoder_jvp(net, z0, v)
    rel = ((approx - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)).max().item()
    assert rel < 1e-3, rel

"""DPS, RED-diff and RePaint on tiny priors: shapes, observed pixels respected, seeded reproducibility,
NFE counts, and that each moves toward the exact posterior of the Gaussian prior."""
from __future__ import annotations

import pytest
import torch

from vipaint.baselines import DPSConfig, REDDiffConfig, RePaintConfig, dps, red_diff, repaint, repaint_schedule
from vipaint.operators import Inpainting

CASES = [(dps, DPSConfig(n_steps=30)), (red_diff, REDDiffConfig(n_steps=30)),
         (repaint, RePaintConfig(n_levels=20, jump_length=5, jump_n_sample=2))]


@pytest.fixture(scope="module")
def problem(gaussian_prior):
    g = torch.Generator().manual_seed(0)
    x = gaussian_prior.sample_x0(1, g).float()
    keep = torch.ones(1, 1, 8, 8)
    keep[..., 4:] = 0
    op = Inpainting(keep, 0.05)
    y = op.forward(x)
    mean, _ = gaussian_prior.posterior(y[0], keep[0], 0.05)
    return op, y, keep, mean


def test_repaint_schedule_counts():
    levels = repaint_schedule(250, 10, 10)
    assert sum(b < a for a, b in zip(levels[:-1], levels[1:])) == 2410   # the NFE count RePaint reports
    assert levels[0] == 249 and levels[-1] == -1


@pytest.mark.parametrize("fn,cfg", CASES, ids=["dps", "red_diff", "repaint"])
def test_baseline_shapes_and_reproducibility(gaussian_prior, problem, fn, cfg):
    op, y, keep, _ = problem
    a, nfe = fn(gaussian_prior, op, y, 3, cfg, torch.Generator().manual_seed(5))
    b, _ = fn(gaussian_prior, op, y, 3, cfg, torch.Generator().manual_seed(5))
    c, _ = fn(gaussian_prior, op, y, 3, cfg, torch.Generator().manual_seed(6))
    assert a.shape == (1, 3, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert nfe > 0


@pytest.mark.parametrize("fn,cfg,tol", [(CASES[0][0], DPSConfig(n_steps=100), 0.25),
                                        (CASES[1][0], REDDiffConfig(n_steps=100), 0.25),
                                        (CASES[2][0], CASES[2][1], 1e-6)], ids=["dps", "red_diff", "repaint"])
def test_observed_pixels_respected(gaussian_prior, problem, fn, cfg, tol):
    op, y, keep, _ = problem
    s, _ = fn(gaussian_prior, op, y, 4, cfg, torch.Generator().manual_seed(1))
    obs = keep[0].expand(1, 8, 8) == 1
    err = (s[0] - y[0]).abs()[:, obs].mean().item()
    assert err < tol, err


def test_baselines_run_on_a_diffusers_unet(tiny_prior):
    keep = torch.ones(2, 1, 16, 16)
    keep[:, :, 4:12, 4:12] = 0
    op = Inpainting(keep, 0.05)
    y = op.forward(torch.rand(2, 3, 16, 16) * 2 - 1)
    for fn, cfg in [(dps, DPSConfig(n_steps=3)), (red_diff, REDDiffConfig(n_steps=3)),
                    (repaint, RePaintConfig(n_levels=4, jump_length=2, jump_n_sample=2))]:
        s, _ = fn(tiny_prior, op, y, 2, cfg, torch.Generator().manual_seed(0))
        assert s.shape == (2, 2, 3, 16, 16) and s.abs().max() <= 1


def test_repaint_refuses_other_operators_and_latent_priors_at_once(gaussian_prior, latent_problem):
    from vipaint.jobs.api import Inpainter
    from vipaint.operators import OperatorConfig, SuperResolution, UnsupportedOperator

    with pytest.raises(UnsupportedOperator, match="inpainting"):
        repaint(gaussian_prior, SuperResolution(4), torch.zeros(1, 1, 2, 2), 1)
    # An Inpainter refuses when built, before any image: on a task, or on a latent prior (nothing to paste into).
    with pytest.raises(UnsupportedOperator, match="inpainting with a pixel prior"):
        Inpainter(gaussian_prior, "repaint", operator=OperatorConfig(name="blur"))
    with pytest.raises(UnsupportedOperator, match="pixel prior"):
        Inpainter(latent_problem[0], "repaint")
    assert Inpainter(gaussian_prior, "repaint").baseline is not None
    assert Inpainter(gaussian_prior, "dps", operator=OperatorConfig(name="blur")).baseline is not None


@pytest.fixture(scope="module")
def latent_problem(schedule):
    from vipaint.priors.gaussian import UpsampledGaussianPrior, smooth_covariance

    prior = UpsampledGaussianPrior(torch.zeros(1, 4, 4), smooth_covariance(4, 4, std=0.5, length_scale=1.5), schedule)
    g = torch.Generator().manual_seed(0)
    z = prior.sample_x0(1, g)
    keep = torch.ones(1, 1, 16, 16)
    keep[..., 8:] = 0
    op = Inpainting(keep, 0.05)
    y = op.observe(prior.decode(z.float()), g)
    return prior, op, y, keep


def test_psld_without_its_gluing_term_is_dps(latent_problem):
    """PSLD = latent DPS + the gluing term: with γ = 0, ω = ζ and a DDPM step (η = 1) it is DPS, bit for bit."""
    from vipaint.baselines import PSLDConfig, psld

    prior, op, y, _ = latent_problem
    a, _ = psld(prior, op, y, 2, PSLDConfig(n_steps=20, omega=0.5, gamma=0.0, eta=1.0), torch.Generator().manual_seed(3))
    b, _ = dps(prior, op, y, 2, DPSConfig(n_steps=20, scale=0.5), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    c, _ = psld(prior, op, y, 2, PSLDConfig(n_steps=20, omega=0.5, gamma=0.1, eta=1.0), torch.Generator().manual_seed(3))
    assert not torch.equal(a, c)


def test_psld_moves_toward_the_posterior_and_refuses_pixel_priors(latent_problem, gaussian_prior, problem):
    from vipaint.baselines import PSLDConfig, psld

    prior, op, y, keep = latent_problem
    mean, _ = prior.pixel_posterior(y[0], keep[0], 0.05)
    s, nfe = psld(prior, op, y, 64, PSLDConfig(n_steps=100), torch.Generator().manual_seed(1))
    miss = keep[0].expand(1, 16, 16) == 0
    err = (s[0].mean(0).double() - mean).abs()[miss].mean().item()
    prior_err = mean.abs()[miss].mean().item()          # the prior's mean is 0
    assert nfe == 100 and s.shape == (1, 64, 1, 16, 16)
    assert err < 0.6 * prior_err, (err, prior_err)
    with pytest.raises(ValueError, match="latent"):
        psld(gaussian_prior, problem[0], problem[1], 1, PSLDConfig(n_steps=2))


def test_mean_fill_is_the_observed_mean_colour(tiny_prior):
    from vipaint.baselines import mean_fill

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    keep = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    op = Inpainting(keep, 0.05)
    y = op.forward(x)
    s, nfe = mean_fill(tiny_prior, op, y, 3)
    assert nfe == 0 and s.shape == (2, 3, 3, 16, 16) and torch.equal(s[:, 0], s[:, 2])
    for b in range(2):
        for c in range(3):
            obs = keep[b, 0] == 1
            torch.testing.assert_close(s[b, 0, c][~obs], x[b, c][obs].mean().expand(int((~obs).sum())))
            torch.testing.assert_close(s[b, 0, c][obs], x[b, c][obs])

"""Proper scoring (``evaluation.proper``): the energy score against its closed form, and on priors whose exact
posterior the project can sample, the exact posterior beats a too-narrow and a too-wide one, and its intervals
cover about as often as they claim."""
from __future__ import annotations

import math

import pytest
import torch

from vipaint.evaluation.proper import coverage, energy_score, pit


def crps_gaussian(mu: float, sigma: float, x: float) -> float:
    """The CRPS of N(mu, sigma²) at x (the energy score for one dimension), Gneiting & Raftery 2007 eq. 21."""
    z = (x - mu) / sigma
    phi, Phi = math.exp(-z * z / 2) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return sigma * (z * (2 * Phi - 1) + 2 * phi - 1 / math.sqrt(math.pi))


def test_energy_score_matches_the_gaussian_closed_form():
    g = torch.Generator().manual_seed(0)
    S, mu, sigma = 4000, 0.2, 0.5
    truth = torch.tensor([0.2, 0.9, -1.3]).reshape(3, 1, 1, 1)
    samples = mu + sigma * torch.randn(3, S, 1, 1, 1, generator=g)
    es = energy_score(samples, truth, torch.ones(1, 1, 1))
    want = torch.tensor([crps_gaussian(mu, sigma, float(x)) for x in truth.flatten()])
    torch.testing.assert_close(es, want, atol=0.01, rtol=0.02)
    with pytest.raises(ValueError, match="2 samples"):
        energy_score(samples[:, :1], truth, torch.ones(1, 1, 1))


def test_unscored_entries_do_not_count():
    g = torch.Generator().manual_seed(1)
    samples, truth = torch.randn(2, 5, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    hole = torch.zeros(1, 4, 4)
    hole[:, :, :2] = 1
    changed = samples.clone()
    changed[..., 2:] += 10.0                   # only outside the hole
    torch.testing.assert_close(energy_score(samples, truth, hole), energy_score(changed, truth, hole))
    torch.testing.assert_close(coverage(samples, truth, hole, 0.5), coverage(changed, truth, hole, 0.5))


def _scores(sampler, truths, level_samples: int, g):
    es, c50, c90 = [], [], []
    for x in truths:
        s = sampler(level_samples, g).unsqueeze(0)
        es.append(energy_score(s, x[None], hole=MISS))
        c50.append(coverage(s, x[None], MISS, 0.5))
        c90.append(coverage(s, x[None], MISS, 0.9))
    return torch.cat(es).mean().item(), torch.cat(c50).nanmean().item(), torch.cat(c90).nanmean().item()


MISS = torch.zeros(1, 8, 8)
MISS[..., 4:] = 1


def _gaussian_posterior_samplers(gaussian_prior, g):
    """Samplers of the exact posterior p(x | y) of the Gaussian prior with its spread scaled by f, and the
    posterior's mean and per-pixel std (1, 8, 8)."""
    keep = 1 - MISS[None]
    x0 = gaussian_prior.sample_x0(1, g)
    y = x0[0].float() * keep[0] + 0.05 * torch.randn(1, 8, 8, generator=g) * keep[0]
    mean, cov = gaussian_prior.posterior(y, keep[0], 0.05)
    chol = torch.linalg.cholesky(cov + 1e-9 * torch.eye(64, dtype=torch.float64))

    def spread(f):
        return lambda n, gen: (mean.flatten() + f * (chol @ torch.randn(64, n, generator=gen, dtype=torch.float64)).T
                               ).reshape(n, 1, 8, 8).float()
    return spread, mean.reshape(1, 8, 8).float(), cov.diagonal().sqrt().reshape(1, 8, 8).float()


def test_exact_gaussian_posterior_scores_best_and_is_calibrated(gaussian_prior):
    """Truths drawn from the exact posterior p(x | y) of the Gaussian prior (the Bayesian setting in which a proper
    score prefers the truth's distribution): exact samples beat samples with half and with twice the spread."""
    g = torch.Generator().manual_seed(2)
    spread, _, _ = _gaussian_posterior_samplers(gaussian_prior, g)
    truths = spread(1.0)(200, g)
    exact, narrow, wide = (_scores(spread(f), truths, 64, g) for f in (1.0, 0.5, 2.0))
    print(f"ES exact {exact[0]:.4f} narrow {narrow[0]:.4f} wide {wide[0]:.4f}; coverage 50/90 exact "
          f"{exact[1]:.3f}/{exact[2]:.3f}, narrow {narrow[1]:.3f}/{narrow[2]:.3f}, wide {wide[1]:.3f}/{wide[2]:.3f}")
    assert exact[0] < narrow[0] and exact[0] < wide[0]
    assert abs(exact[1] - 0.5) < 0.05 and abs(exact[2] - 0.9) < 0.04
    assert narrow[1] < 0.4 and narrow[2] < 0.75 and wide[1] > 0.6 and wide[2] > 0.97


@pytest.mark.parametrize("clamp", [None, 1.0])
def test_coverage_is_calibrated_at_eight_samples_and_at_a_clamp(gaussian_prior, clamp):
    """At S = 8, where interpolated empirical quantiles would cover 7L/9 (0.39 / 0.70), the randomised PIT covers
    the level; also when a clamp ties most entries (``clamp``: values below the posterior mean + clamp·std raised
    to it, the same monotone cut for truth and samples, so ~84% of them sit on it, like MNIST's background): ties
    count neither inside nor outside wholesale. Too narrow and too wide spreads still show as under and over."""
    g = torch.Generator().manual_seed(4)
    spread, mean, std = _gaussian_posterior_samplers(gaussian_prior, g)
    cut = (lambda v: v) if clamp is None else (lambda v: torch.maximum(v, mean + clamp * std))
    truths = cut(spread(1.0)(400, g))
    (_, c50, c90), (_, n50, n90), (_, w50, w90) = (
        _scores(lambda n, gen, f=f: cut(spread(f)(n, gen)), truths, 8, g) for f in (1.0, 0.5, 2.0))
    print(f"clamp {clamp}: coverage 50/90 exact {c50:.3f}/{c90:.3f}, narrow {n50:.3f}/{n90:.3f}, "
          f"wide {w50:.3f}/{w90:.3f}")
    assert abs(c50 - 0.5) < 0.03 and abs(c90 - 0.9) < 0.02
    assert n50 < 0.4 and n90 < 0.8 and w50 > 0.55 and w90 > 0.92    # a cut hides part of the spread


def test_pit_interval_and_coverage_of_ties():
    """Truth tied with all S = 7 samples: its PIT is uniform on (0, 1), so it is inside the central 50% half the
    time, but such an entry carries no information and is left out; truth below all samples: PIT in (0, 1/8)."""
    s, t = torch.zeros(1, 7, 3), torch.zeros(1, 1, 3)
    a, b = pit(s, t)
    assert torch.equal(a, torch.zeros(1, 1, 3)) and torch.equal(b, torch.ones(1, 1, 3))
    assert torch.allclose(pit(s, t - 1)[1], torch.full((1, 1, 3), 1 / 8))
    assert coverage(s, t, torch.ones(1, 3), 0.5).isnan().all()              # nothing informative
    s[0, :4, 0] = 1.0                                                       # entry 0: 3 samples tie with truth
    # a = 0, b = 4/8: the central 50% [1/4, 3/4] holds half of it; entries 1, 2 tie fully and are left out
    assert torch.allclose(coverage(s, t, torch.ones(1, 3), 0.5), torch.tensor([0.5]))
    assert torch.allclose(coverage(s, t, torch.ones(1, 3), 0.9), torch.tensor([(0.5 - 0.05) / 0.5]))


def test_exact_mixture_posterior_beats_one_mode_and_a_blur(schedule):
    """The three-mode posterior: exact samples beat samples from its heaviest mode alone (too narrow: the other
    modes are missed) and a Gaussian of the mixture's overall mean and covariance (too wide within each mode)."""
    from vipaint.priors.gaussian_mixture import three_mode_example

    _, _, _, keep, post = three_mode_example(schedule)
    miss = 1 - keep[0]
    g = torch.Generator().manual_seed(3)
    truths = post.sample(300, g)[0].float()
    flat = post.sample(20000, g)[0].flatten(1)
    m, C = flat.mean(0), torch.cov(flat.T) + 1e-9 * torch.eye(flat.shape[1], dtype=torch.float64)
    top = int(post.weights.argmax())
    chol_top = torch.linalg.cholesky(post.covs[top] + 1e-9 * torch.eye(16, dtype=torch.float64))
    samplers = {
        "exact": lambda n, gen: post.sample(n, gen)[0].float(),
        "one mode": lambda n, gen: (post.means[top].flatten() + (chol_top @ torch.randn(16, n, generator=gen,
                                    dtype=torch.float64)).T).reshape(n, 1, 4, 4).float(),
        "gaussian": lambda n, gen: (m + (torch.linalg.cholesky(C) @ torch.randn(16, n, generator=gen,
                                    dtype=torch.float64)).T).reshape(n, 1, 4, 4).float(),
    }
    es = {}
    for name, sampler in samplers.items():
        vals = [energy_score(sampler(32, g)[None], x[None], miss) for x in truths]
        es[name] = torch.cat(vals).mean().item()
    print(es)
    assert es["exact"] < es["one mode"] and es["exact"] < es["gaussian"]

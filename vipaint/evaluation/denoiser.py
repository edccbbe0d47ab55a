r"""How much a prior knows beyond second-order statistics: its denoiser against the best *linear* one.

For held-out clean data z_0 (pixels, or a latent prior's scaled latents) noised to z_t = α_t z_0 + σ_t ε:

===================  ==========================================================================================
``mse_prior``        mean (x̂_0(z_t) − z_0)², the prior's denoiser
``mse_linear``       the same for E[z_0 | z_t] under the Gaussian N(m, S) fitted to training data (mean and full
                     covariance, a small ridge): the best estimator that is linear in z_t (``GaussianPrior``)
``gain_db``          10 log10(mse_linear / mse_prior): > 0 where the prior has learned more than m and S
===================  ==========================================================================================

At large t the Gaussian is hard to beat (x̂_0 leans on the mean and the global covariance); that is where large
holes are decided, so the gain there is the number to watch (bench/README.md, CIFAR-10 priors).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..prior import Prior
from ..priors.gaussian import GaussianPrior
from ..schedule import q_sample

__all__ = ["linear_denoiser_gain"]


@torch.no_grad()
def linear_denoiser_gain(prior: Prior, fit: Tensor, test: Tensor, ts: list[int], batch: int = 250,
                         seed: int = 0) -> dict[str, dict[str, float]]:
    """{str(t): {"mse_prior", "mse_linear", "gain_db"}} for the test data (N, *latent) in the prior's own space, the
    Gaussian fitted to ``fit`` (M, *latent); fixed noise per t (seeded), the same for both denoisers."""
    flat = fit.flatten(1).double()
    cov = torch.cov(flat.T) + 1e-4 * torch.eye(flat.shape[1], dtype=torch.float64)   # ridge: full rank
    gauss = GaussianPrior(flat.mean(0).reshape(fit.shape[1:]), cov, prior.schedule)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in ts:
        eps = torch.randn(test.shape, generator=g)
        ab = prior.schedule.alpha_bar(t).float()
        z_t = q_sample(test, eps, ab)
        x0 = torch.cat([prior.x0_hat(z_t[i:i + batch], t) for i in range(0, len(z_t), batch)])
        mse_prior = float(((x0 - test) ** 2).mean())
        mse_linear = float(((gauss.x0_hat(z_t.double(), t).float() - test) ** 2).mean())
        out[str(t)] = {"mse_prior": mse_prior, "mse_linear": mse_linear,
                       "gain_db": 10 * torch.log10(torch.tensor(mse_linear / mse_prior)).item()}
    return out

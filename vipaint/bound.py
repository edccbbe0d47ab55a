r"""The variational bound of VIPaint, in nats per image, as three named terms (docs/method.md §6).

``log p(y) ≥ ELBO = recon - kl_prior - kl_hier`` with (notation of ``schedule.py``/``posterior.py``;
t_1 = T_e top keypoint, t_K = T_s bottom keypoint, s_0 = T_e < s_1 < ... < s_N = T-1 a grid above T_e):

=============  ==========================================================================================
``recon``      E_q log p(y | z_{T_s}) ≈ E_q Σ_observed log N(y; A D(x̂_0(z_{T_s})), σ_y² + r_{T_s}² a²)
``kl_hier``    Σ_{k≥2} E_q KL(q(z_{t_k} | z_{t_{k-1}}) || p(z_{t_k} | z_{t_{k-1}}))     (``posterior.py``)
``kl_prior``   an upper bound on KL(q(z_{T_e}) || p(z_{T_e})), p the prior's DDPM chain from T-1 down to T_e:
               KL(q(z_{s_N}) || N(0, I)) + Σ_{i=0}^{N-1} E_{q(z_{s_{i+1}})} KL(q(z_{s_i} | z_{s_{i+1}}) || p(z_{s_i} | z_{s_{i+1}}))
=============  ==========================================================================================

* q extends q(z_{T_e}) = N(m, v) (diagonal) upwards by the forward process, so every marginal
  q(z_s) = N(α_{s|T_e} m, α²_{s|T_e} v + σ²_{s|T_e}) and every reverse step q(z_s | z_t) is Gaussian in
  closed form. The authors condition each step on the sampled z_{T_e} instead (a bridge whose
  variance their code gets wrong, docs/method.md §10.2, evaluated with a KL precedence bug, §10.1); integrating
  z_{T_e} out gives the same bound with lower variance, every term a non-negative KL.
* p(z_s | z_t) = q(z_s | z_t, x_0 = x̂_0(z_t)), the DDPM ancestral step of the pretrained prior on the grid.
* The sum over the N grid steps is estimated with one stratified step per Monte Carlo sample, times N,
  so the prior term costs one network evaluation (the code weights one step by (T - T_e)/2 instead).

Where the value is approximate (a bound above the exact log p(y), beyond Monte Carlo error, points
here): ``recon`` replaces p(y | z_{T_s}) = ∫ p(y|x_0) p(x_0|z_{T_s}) by a Gaussian around the one-step
estimate x̂_0 with the isotropic variance r_{T_s}² of ``Prior.denoiser_variance`` — exact only for an
isotropic Gaussian prior. Every KL term is an exact Gaussian KL and the prior chain gives a true
upper bound on KL(q(z_{T_e}) || p(z_{T_e})) for the prior as a DDPM sampler on that grid.

Weights: ``beta_prior``/``beta_hier`` multiply kl_prior/kl_hier in the loss (1 = the bound). The authors
use 100 and 100 (docs/method.md §10.6) on per-element means with their L1+LPIPS loss; with their formulas
the prior term is orders of magnitude weaker than the true KL near T_e (§10.2), so their β
values do not carry over to the correct terms.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .posterior import HierarchicalPosterior, gaussian_kl
from .rng import rand, randn_like
from .prior import Prior

__all__ = ["BoundTerms", "prior_kl", "evaluate_bound"]


@dataclass
class BoundTerms:
    """Per-sample terms (B·N,), in nats; ``per_image`` averages the N samples of each image."""

    recon: Tensor
    kl_prior: Tensor
    kl_hier: Tensor
    nfe: int = 0
    z_bottom: Tensor | None = field(default=None, repr=False)
    x: Tensor | None = field(default=None, repr=False)

    @property
    def elbo(self) -> Tensor:
        return self.recon - self.kl_prior - self.kl_hier

    def loss(self, beta_prior: float = 1.0, beta_hier: float = 1.0) -> Tensor:
        """Per-sample negative weighted bound (B·N,)."""
        return -(self.recon - beta_prior * self.kl_prior - beta_hier * self.kl_hier)

    def per_image(self, n: int) -> dict[str, Tensor]:
        """Each term averaged over the n samples of each image: dict of (B,) tensors."""
        out = {"elbo": self.elbo, "recon": self.recon, "kl_prior": self.kl_prior, "kl_hier": self.kl_hier}
        return {k: v.detach().reshape(-1, n).mean(1) for k, v in out.items()}


def prior_kl(prior: Prior, mean_top: Tensor, var_top: Tensor, t_top: int, n_grid: int = 50,
             generator: torch.Generator | None = None) -> Tensor:
    """Upper bound on KL(q(z_{T_e}) || p(z_{T_e})) per sample (Bn,), one network evaluation.

    Args:
        mean_top, var_top: (Bn, *latent) mean and variance of the diagonal Gaussian q(z_{T_e}).
        t_top: T_e. n_grid: N, the number of DDPM steps of the prior chain from T-1 down to T_e.
    """
    sched = prior.schedule
    grid = torch.tensor(sched.between(t_top, sched.T - 1, n_grid), device=mean_top.device)
    n_steps = grid.numel() - 1
    bn, dtype = mean_top.shape[0], mean_top.dtype
    shape = (-1,) + (1,) * (mean_top.ndim - 1)

    def c(x):  # float64 coefficient (Bn,) -> broadcastable, in the sample dtype
        return x.to(dtype).reshape(shape)

    # Stratified step index i ∈ {0..N-1} per sample (one uniform offset shared by the batch).
    u = (rand((), mean_top.device, generator) + torch.arange(bn, device=mean_top.device) / bn) % 1.0
    i = (u * n_steps).long().clamp_max(n_steps - 1)
    s, t = grid[i], grid[i + 1]
    ab_e, ab_s, ab_t = prior.schedule.alpha_bar(torch.full_like(s, t_top)), sched.alpha_bar(s), sched.alpha_bar(t)
    a_ts, v_ts = (ab_t / ab_s).sqrt(), 1 - ab_t / ab_s          # α_{t|s}, σ²_{t|s}

    def marginal(ab):  # q(z_u) = N(α_{u|T_e} m, α²_{u|T_e} v + σ²_{u|T_e}), ab = ᾱ_u
        a2 = ab / ab_e
        return c(a2.sqrt()) * mean_top, c(a2) * var_top + c(1 - a2)

    mean_s, var_s = marginal(ab_s)
    mean_t, var_t = marginal(ab_t)
    z_t = mean_t + var_t.sqrt() * randn_like(mean_top, generator)
    # Reverse conditional of q (Gaussian, since q(z_{T_e}) is): q(z_s | z_t) ∝ q(z_s) N(z_t; α_{t|s} z_s, σ²_{t|s}).
    var_q = var_s * c(v_ts) / (c(v_ts) + c(a_ts**2) * var_s)
    mean_q = var_q * (mean_s / var_s + c(a_ts) * z_t / c(v_ts))
    # The prior's DDPM step from t to s: q(z_s | z_t, x_0 = x̂_0(z_t)).
    x0_hat, _ = prior.denoise(z_t, t)
    mean_p = c(ab_s.sqrt() * v_ts / (1 - ab_t)) * x0_hat + c(a_ts * (1 - ab_s) / (1 - ab_t)) * z_t
    var_p = c(v_ts * (1 - ab_s) / (1 - ab_t)).expand_as(z_t)
    step_kl = gaussian_kl(mean_q, var_q, mean_p, var_p).flatten(1).sum(1)

    # Top of the chain: q(z_{T-1}) against N(0, I), in closed form.
    mean_T, var_T = marginal(sched.alpha_bar(torch.full_like(s, sched.T - 1)))
    kl_T = gaussian_kl(mean_T, var_T, torch.zeros_like(mean_T), torch.ones_like(var_T)).flatten(1).sum(1)
    return n_steps * step_kl + kl_T


def evaluate_bound(prior: Prior, posterior: HierarchicalPosterior, likelihood, y: Tensor, n: int,
                   n_grid: int = 50, generator: torch.Generator | None = None) -> BoundTerms:
    """Monte Carlo estimate of the bound's terms with n samples per image (B images, B·n samples).

    ``likelihood(y, x, t_bottom, z_bottom, x0_hat) -> (Bn,)`` is the reconstruction log-likelihood of the decoded
    pixels x = D(x̂_0) (B·n, C, H, W) given the B observations y (``likelihood.py``).
    """
    mean_top, var_top = posterior.top(prior, n)
    z_top = mean_top + var_top.sqrt() * randn_like(mean_top, generator)
    kl_prior = prior_kl(prior, mean_top, var_top, posterior.keypoints[0], n_grid, generator)
    chain = posterior.chain(prior, z_top, n, generator)
    t_bottom = posterior.keypoints[-1]
    x0_hat, _ = prior.denoise(chain.z_bottom, t_bottom)
    x = prior.decode(x0_hat)
    recon = likelihood(y, x, t_bottom, chain.z_bottom, x0_hat)
    return BoundTerms(recon=recon, kl_prior=kl_prior, kl_hier=chain.kl_hier, nfe=chain.nfe + 2,
                      z_bottom=chain.z_bottom, x=x)

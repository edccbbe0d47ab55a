r"""A Gaussian-mixture data prior: exact denoiser and exact multimodal posterior, for testing samplers.

With x_0 ~ Σ_k π_k N(m_k, S_k) (D = C·H·W elements) and z_t = α_t x_0 + σ_t ε:

==========================  ===========================================================================
p(z_t | k)                  N(z_t; α_t m_k, A_k),  A_k = α_t² S_k + σ_t² I
ρ_k(z_t)                    responsibility p(k | z_t) ∝ π_k N(z_t; α_t m_k, A_k)
``x̂_0(z_t)``                E[x_0 | z_t] = Σ_k ρ_k(z_t) (m_k + α_t S_k A_k^{-1} (z_t - α_t m_k))
posterior given y           y = x_0[obs] + σ_y ε_y:  Σ_k w_k N(μ_k, C_k), with (μ_k, C_k) the Gaussian
                            posterior of component k (``GaussianPrior.posterior``) and
                            w_k ∝ π_k N(y_o; m_{k,o}, S_{k,oo} + σ_y² I)  (``GaussianPrior.log_evidence``)
==========================  ===========================================================================

Each component is a ``GaussianPrior``, so the per-component formulas live in ``gaussian.py`` only.
Float64 inside: responsibilities are softmaxes of log-densities that differ by hundreds of nats.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .gaussian import GaussianPrior, smooth_covariance
from ..operators import Inpainting
from ..prior import Prior
from ..schedule import NoiseSchedule

__all__ = ["GaussianMixturePrior", "MixturePosterior", "three_mode_example", "mode_statistics"]


class MixturePosterior:
    """Exact p(x_0 | y) = Σ_k w_k N(mean_k, cov_k) for one image.

    Attributes: weights (K,), means (K, C, H, W), covs (K, D, D), all float64.
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        self.weights, self.means, self.covs = weights, means, covs

    def responsibilities(self, x: Tensor, keep_mask: Tensor | None = None) -> Tensor:
        """p(k | x) for samples x (N, C, H, W): (N, K). With ``keep_mask`` (1 = observed) only the missing
        entries are scored, under the posterior's marginal over them: a sampler's observed pixels carry
        its own noise, which must not decide the mode."""
        sel = slice(None) if keep_mask is None else (keep_mask.expand(x.shape[1:]).flatten() == 0)
        xs = x.flatten(1).double()[:, sel]
        logp = torch.stack([_log_normal(xs, m.flatten()[sel], c[sel][:, sel]) for m, c in zip(self.means, self.covs)],
                           dim=1)
        return torch.softmax(logp + self.weights.log(), dim=1)

    def moments(self) -> tuple[Tensor, Tensor]:
        """Per-component mean and std of each element, (K, C, H, W) each (the within-mode truth)."""
        std = torch.diagonal(self.covs, dim1=-2, dim2=-1).sqrt().reshape(self.means.shape)
        return self.means, std

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n exact samples (N, C, H, W) and their component labels (N,)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means[0].numel(), generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covs + 1e-10 * torch.eye(self.covs.shape[-1], dtype=torch.float64))
        x = self.means.flatten(1)[k] + (chol[k] @ eps.unsqueeze(-1)).squeeze(-1)
        return x.reshape(n, *self.means.shape[1:]), k


def _log_normal(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """log N(x; mean, cov) for rows of x (N, D), cov (D, D) or (N, D, D)."""
    chol = torch.linalg.cholesky(cov)
    r = (x - mean).unsqueeze(-1)
    sol = torch.linalg.solve_triangular(chol.expand(x.shape[0], *chol.shape[-2:]) if chol.ndim == 2 else chol, r,
                                        upper=False).squeeze(-1)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (sol.pow(2).sum(-1) + logdet + x.shape[-1] * math.log(2 * math.pi))


class GaussianMixturePrior(Prior):
    """Exact-denoiser prior for x_0 ~ Σ_k π_k N(means[k], covs[k]).

    Args:
        weights: (K,) mixture weights π (normalised here).
        means: (K, C, H, W). covs: (K, D, D) symmetric positive definite.
        schedule: the VP schedule the "network" pretends to be trained on.
    """

    prediction_type = "sample"
    output_range = None  # not confined to [-1, 1]; clamping would bias the moments

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor, schedule: NoiseSchedule):
        shape = tuple(means.shape[1:])
        super().__init__(schedule, latent_shape=shape, image_shape=shape)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.ndim != 1 or weights.shape[0] != means.shape[0] or covs.shape[0] != means.shape[0]:
            raise ValueError(f"need K weights, K means and K covariances; got {tuple(weights.shape)}, "
                             f"{tuple(means.shape)}, {tuple(covs.shape)}")
        if bool((weights <= 0).any()):
            raise ValueError(f"mixture weights must be positive, got {weights.tolist()}")
        self.register_buffer("weights", weights / weights.sum())
        self.components = torch.nn.ModuleList(GaussianPrior(m, c, schedule) for m, c in zip(means, covs))
        second = sum(float(w) * (c.cov.diagonal() + c.mean.flatten() ** 2) for w, c in zip(self.weights, self.components))
        first = sum(float(w) * c.mean.flatten() for w, c in zip(self.weights, self.components))
        self.data_std = float((second - first**2).mean().sqrt())

    def responsibilities(self, z_t: Tensor, t: Tensor | int) -> Tensor:
        """ρ_k(z_t) = p(k | z_t), (B, K)."""
        t = self._t_batch(t, z_t.shape[0], z_t.device)
        alpha = self.schedule.alpha(t).to(z_t.device)
        sigma2 = (1.0 - self.schedule.alpha_bar(t)).to(z_t.device)
        z = z_t.to(torch.float64).flatten(1)
        eye = torch.eye(z.shape[1], dtype=torch.float64, device=z.device)
        logp = []
        for c in self.components:
            A = alpha[:, None, None] ** 2 * c.cov + sigma2[:, None, None] * eye
            logp.append(_log_normal(z, alpha[:, None] * c.mean.flatten(), A))
        return torch.softmax(torch.stack(logp, dim=1) + self.weights.log(), dim=1)

    def network_output(self, z_t: Tensor, t: Tensor) -> Tensor:
        rho = self.responsibilities(z_t, t)                                           # (B, K)
        x0 = torch.stack([c.network_output(z_t, t).to(torch.float64) for c in self.components], dim=1)  # (B, K, ...)
        x0 = (rho.reshape(*rho.shape, *([1] * (x0.ndim - 2))) * x0).sum(1)
        return x0.to(z_t.dtype)

    def posterior(self, y: Tensor, keep_mask: Tensor, sigma_y: float) -> MixturePosterior:
        """Exact p(x_0 | y) for inpainting with noise σ_y, for ONE image: y (C,H,W), keep_mask (1,H,W)."""
        log_w = torch.tensor([c.log_evidence(y, keep_mask, sigma_y) for c in self.components], dtype=torch.float64)
        parts = [c.posterior(y, keep_mask, sigma_y) for c in self.components]
        return MixturePosterior(torch.softmax(log_w + self.weights.log(), 0), torch.stack([p[0] for p in parts]),
                                torch.stack([p[1] for p in parts]))

    def log_evidence(self, y: Tensor, keep_mask: Tensor, sigma_y: float) -> float:
        """log p(y) = log Σ_k π_k p(y | k)."""
        log_w = torch.tensor([c.log_evidence(y, keep_mask, sigma_y) for c in self.components], dtype=torch.float64)
        return float(torch.logsumexp(log_w + self.weights.log(), 0))

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n exact prior samples (N, C, H, W) float64 and their components (N,)."""
        covs = torch.stack([c.cov for c in self.components])
        means = torch.stack([c.mean for c in self.components])
        return MixturePosterior(self.weights, means, covs).sample(n, generator)


def three_mode_example(schedule: NoiseSchedule, seed: int = 0, sigma_y: float = 0.05):
    """A posterior with three modes of known weights, for tests and ``bench/mixture.py``.

    4x4 images, the right half missing. Three components share a smooth covariance (std 0.15) and differ by
    +0.6 / 0 / -0.6 on the missing half and +0.04 / 0 / -0.04 on the observed half, so the observation moves
    the mode weights away from the prior's (0.5, 0.3, 0.2) (to 0.612 / 0.271 / 0.117 for seed 0).

    Returns (prior, operator, y (1,1,4,4), keep_mask (1,1,4,4), exact ``MixturePosterior``).
    """
    H = W = 4
    S = smooth_covariance(H, W, std=0.15, length_scale=1.5)
    means = torch.zeros(3, 1, H, W)
    for k, (miss, obs) in enumerate([(0.6, 0.04), (0.0, 0.0), (-0.6, -0.04)]):
        means[k, 0, :, W // 2:], means[k, 0, :, : W // 2] = miss, obs
    prior = GaussianMixturePrior(torch.tensor([0.5, 0.3, 0.2]), means, torch.stack([S] * 3), schedule)
    keep = torch.ones(1, 1, H, W)
    keep[..., W // 2:] = 0
    g = torch.Generator().manual_seed(seed)
    x_true = prior.sample(1, g)[0].float()
    op = Inpainting(keep, sigma_y=sigma_y)
    y = op.observe(x_true, g)
    return prior, op, y, keep, prior.posterior(y[0], keep[0], sigma_y)


def mode_statistics(samples: Tensor, post: MixturePosterior, keep_mask: Tensor) -> dict:
    """How samples (N, C, H, W) of one image split between the exact posterior's modes.

    Each sample goes to its most responsible mode (missing pixels only). Returns the fraction per mode and,
    per mode with at least 10 samples, the mean |sample mean - exact mean| and the mean sample-std / exact-std
    over missing pixels, both in units of the exact within-mode std (NaN for modes with too few samples).
    """
    k = post.responsibilities(samples, keep_mask[0]).argmax(1)
    miss = keep_mask[0].expand(samples.shape[1:]) == 0
    mean, std = post.moments()
    out = {"fractions": torch.bincount(k, minlength=len(post.weights)).double() / len(k), "mean_err": [],
           "std_ratio": []}
    for j in range(len(post.weights)):
        s = samples[k == j].double()
        enough = len(s) >= 10
        out["mean_err"].append(float(((s.mean(0) - mean[j]).abs() / std[j])[miss].mean()) if enough else float("nan"))
        out["std_ratio"].append(float((s.std(0) / std[j])[miss].mean()) if enough else float("nan"))
    return out

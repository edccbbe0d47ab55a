r"""VIPaint-K: the hierarchical variational posterior over K keypoint latents (docs/method.md §4).

Keypoints t_1 > t_2 > ... > t_K (``T_e = t_1`` top, ``T_s = t_K`` bottom). Per image and keypoint k,
three tensors of the latent's shape: ``mu[k]``, ``logvar[k]``, ``gamma[k]`` (λ in the paper).

==================  ===================================================================================
``q(z_{t_1})``      N(α_{t_1} μ_1, diag(exp(logvar_1)))                                            (top)
``p(z_{t_k}|z_{t_{k-1}})``  N(m_θ, s_k² I),  m_θ = DDIM mean(x̂_0(z_{t_{k-1}}), ε̂; s_k)          (prior)
``q(z_{t_k}|z_{t_{k-1}})``  N(σ(γ_k) ⊙ m_θ + (1 - σ(γ_k)) ⊙ α_{t_k} μ_k, diag(exp(logvar_k)))   (k ≥ 2)
``s_k``             DDIM std with stochasticity ``eta`` between t_{k-1} and t_k (η = 1: DDPM)
==================  ===================================================================================

Where we differ from the authors' code (docs/method.md §10): μ is multiplied by α once (they apply
sqrt(ᾱ) at init and again in the mean, §10.3); the top mean is α_{t_1} μ_1 rather than
sqrt(1 - τ²) μ_1, so μ reads as a clean-latent estimate at every level; the prior step uses
DDIM(η) with η = 1 by default (the DDPM ancestral step, a proper generative model) where the code
uses sqrt(0.2) (§10.4).

``gamma[0]`` is unused (the top level has no prior mean to blend with); it is kept so that the three
tensors share one shape (B, K, *latent).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .rng import randn_like
from .prior import Prior
from .schedule import ddim_std, ddim_step_mean

__all__ = ["HierarchicalPosterior", "ChainSample", "gaussian_kl"]


def gaussian_kl(mean_q: Tensor, var_q: Tensor, mean_p: Tensor, var_p: Tensor) -> Tensor:
    r"""Elementwise KL(N(mean_q, var_q) || N(mean_p, var_p)), the correct closed form:

    ``½ [log(var_p / var_q) + (var_q + (mean_q - mean_p)²) / var_p - 1]``

    (The authors' code computes ``½ var_p Δμ²`` for the mean term, an operator-precedence bug,
    docs/method.md §10.1.)
    """
    return 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


@dataclass
class ChainSample:
    """One pass down the variational chain, for B·N samples (images repeated N times).

    z_top: (BN, *latent) sample at t_1; z_bottom: (BN, *latent) at t_K;
    kl_hier: (BN,) Σ_k Σ_elements KL(q(z_{t_k}|·) || p(z_{t_k}|·)), evaluated at the sampled chain.
    nfe: network evaluations used.
    """

    z_top: Tensor
    z_bottom: Tensor
    kl_hier: Tensor
    nfe: int


class HierarchicalPosterior(nn.Module):
    """Variational parameters of B images (stacked on dim 0) for K keypoints.

    Args:
        keypoints: decreasing integer timesteps on the prior's schedule.
        latent_shape: (C, H, W) of the prior's latent.
        batch: number of images B.
        eta: stochasticity of the prior transitions between keypoints.
    """

    def __init__(self, keypoints: list[int], latent_shape: tuple[int, ...], batch: int = 1, eta: float = 1.0):
        super().__init__()
        if len(keypoints) < 1 or any(a <= b for a, b in zip(keypoints, keypoints[1:])):
            raise ValueError(f"keypoints must be strictly decreasing, got {keypoints}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0: the prior transitions between keypoints need a variance (got {eta})")
        self.keypoints = [int(k) for k in keypoints]
        self.eta = float(eta)
        shape = (batch, len(keypoints), *latent_shape)
        self.mu = nn.Parameter(torch.zeros(shape))
        self.logvar = nn.Parameter(torch.zeros(shape))
        self.gamma = nn.Parameter(torch.zeros(shape))

    @property
    def K(self) -> int:
        return len(self.keypoints)

    def param_groups(self, lr_mu: float, lr_logvar: float, lr_gamma: float) -> list[dict]:
        """Adam parameter groups with the per-group learning rates of docs/method.md §7."""
        return [{"params": [self.mu], "lr": lr_mu, "name": "mu"},
                {"params": [self.logvar], "lr": lr_logvar, "name": "logvar"},
                {"params": [self.gamma], "lr": lr_gamma, "name": "gamma"}]

    def prior_std(self, prior: Prior, k: int) -> Tensor:
        """s_k, the std of p(z_{t_k} | z_{t_{k-1}}), float64 scalar (k ≥ 1, 0-based)."""
        s = prior.schedule
        return ddim_std(s.alpha_bar(self.keypoints[k - 1]), s.alpha_bar(self.keypoints[k]), self.eta)

    def initial_values(self, prior: Prior, z_y: Tensor, gamma: float = 4.0, var_scale: float = 1.0,
                       mean_noise: float = 0.0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The hand-made λ from the encoded observation z_y (B, *latent): (mu, logvar, gamma), each (B, K, *latent).

        μ_k = z_y (+ ``mean_noise``·N(0, I)); logvar_1 = log σ_{t_1}² (the prior marginal variance, so
        q(z_{t_1}) is the forward marginal of z_y); logvar_k = log (var_scale · s_k)²; γ_k = ``gamma``
        (σ(4) = 0.982: q's mean is almost the prior's); docs/method.md §4.5. The authors' code uses
        var_scale = 0.7 relative to the DDPM std, mean_noise 0.1-0.8 and gamma 4-5 (§10.5). Differentiable
        w.r.t. z_y.
        """
        if z_y.shape[0] != self.mu.shape[0] or z_y.shape[1:] != self.mu.shape[2:]:
            raise ValueError(f"z_y has shape {tuple(z_y.shape)}, expected {(self.mu.shape[0], *self.mu.shape[2:])}")
        mu = z_y.unsqueeze(1).expand(-1, self.K, *z_y.shape[1:])
        if mean_noise:
            mu = mu + mean_noise * randn_like(mu, generator)
        levels = [float(torch.log(1 - prior.schedule.alpha_bar(self.keypoints[0])))]
        levels += [float(2 * torch.log(var_scale * self.prior_std(prior, k))) for k in range(1, self.K)]
        shape = (1, self.K) + (1,) * (z_y.ndim - 1)
        logvar = torch.tensor(levels, dtype=z_y.dtype, device=z_y.device).reshape(shape).expand_as(mu)
        return mu, logvar, torch.full_like(mu, gamma)

    @torch.no_grad()
    def initialize(self, prior: Prior, z_y: Tensor, gamma: float = 4.0, var_scale: float = 1.0,
                   mean_noise: float = 0.0, generator: torch.Generator | None = None) -> None:
        """Set λ to ``initial_values`` (q starts at the prior transitions around the observation)."""
        self.load_parameters(*self.initial_values(prior, z_y, gamma, var_scale, mean_noise, generator))

    @classmethod
    def from_tensors(cls, keypoints: list[int], mu: Tensor, logvar: Tensor, gamma: Tensor,
                     eta: float = 1.0) -> "HierarchicalPosterior":
        """A posterior whose λ are given tensors (e.g. an encoder's output), differentiable w.r.t. them.

        Each tensor is (B, K, *latent). Used to train the amortized encoder through the same bound.
        """
        post = cls(keypoints, tuple(mu.shape[2:]), batch=mu.shape[0], eta=eta)
        for name, value in (("mu", mu), ("logvar", logvar), ("gamma", gamma)):
            if value.shape != mu.shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, mu {tuple(mu.shape)}")
            delattr(post, name)          # drop the Parameter; a plain tensor keeps the encoder's graph
            setattr(post, name, value)
        return post

    def load_parameters(self, mu: Tensor, logvar: Tensor, gamma: Tensor) -> None:
        """Set λ from outside (the amortized encoder), each (B, K, *latent)."""
        with torch.no_grad():
            for p, v in ((self.mu, mu), (self.logvar, logvar), (self.gamma, gamma)):
                if v.shape != p.shape:
                    raise ValueError(f"expected shape {tuple(p.shape)}, got {tuple(v.shape)}")
                p.copy_(v.to(p.dtype))

    def _per_sample(self, param: Tensor, k: int, n: int) -> Tensor:
        return param[:, k].repeat_interleave(n, dim=0)

    def top(self, prior: Prior, n: int) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(z_{t_1}) for B·n samples, each (Bn, *latent)."""
        alpha = prior.schedule.alpha(self.keypoints[0]).to(self.mu.dtype)
        return alpha * self._per_sample(self.mu, 0, n), self._per_sample(self.logvar, 0, n).exp()

    def sample_top(self, prior: Prior, n: int, generator: torch.Generator | None = None) -> Tensor:
        mean, var = self.top(prior, n)
        return mean + var.sqrt() * randn_like(mean, generator)

    def chain(self, prior: Prior, z_top: Tensor, n: int, generator: torch.Generator | None = None) -> ChainSample:
        """Reparameterised pass t_1 -> t_K: returns z at T_s and the hierarchical KL per sample.

        ``z_top`` is (B·n, *latent), ordered image-major (image b's samples at b·n .. b·n+n-1).
        """
        sched = prior.schedule
        z = z_top
        kl = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for k in range(1, self.K):
            t_prev, t_k = self.keypoints[k - 1], self.keypoints[k]
            x0_hat, eps_hat = prior.denoise(z, t_prev)
            s_k = self.prior_std(prior, k)
            mean_p = ddim_step_mean(x0_hat, eps_hat, sched.alpha_bar(t_k), s_k)
            w = torch.sigmoid(self._per_sample(self.gamma, k, n))
            free = sched.alpha(t_k).to(z.dtype) * self._per_sample(self.mu, k, n)
            mean_q = w * mean_p + (1 - w) * free
            var_q = self._per_sample(self.logvar, k, n).exp()
            var_p = (s_k**2).to(z.dtype)
            kl = kl + gaussian_kl(mean_q, var_q, mean_p, var_p).flatten(1).sum(1)
            z = mean_q + var_q.sqrt() * randn_like(z, generator)
        return ChainSample(z_top=z_top, z_bottom=z, kl_hier=kl, nfe=self.K - 1)

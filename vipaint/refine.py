r"""Refinement below the lowest keypoint: the prior's reverse chain guided by the likelihood gradient
(docs/method.md §9).

From z_{T_s} (a sample of the fitted q) down to t = 0 on a strided grid T_s = τ_0 > τ_1 > ... > τ_{M-1} = 0:

================================  ==================================================================
``g``                             ∇_{z_t} log p(y | z_t) ≈ ∇_{z_t} likelihood(y, D(x̂_0(z_t)), t)
``x̂_0^y`` (guidance="tweedie")    x̂_0 + ζ σ_t²/α_t · g   — Tweedie's formula for E[x_0 | z_t, y]
                                  given E[x_0 | z_t] (Efron 2011; as in ΠGDM/DPS)
``z_s``                           DDIM(η) step from (x̂_0^y, ε̂^y = (z_t - α_t x̂_0^y)/σ_t) to s,
                                  plus c·ε with c = ddim_std(ᾱ_t, ᾱ_s, η)
``z_s`` (guidance="gradient")     DDIM(η) step from (x̂_0, ε̂) + ζ g   — the authors' form
                                  (docs/method.md §10.8: η = 0.2, no noise, ζ = 2 on their loss,
                                  every step)
output                            D(x̂_0^y) at the last grid point (t = 0), plus E[e | z_0, y], the decoder
                                  error's conditional mean where the prior has a measured one
                                  (``decoder_error.py``, latent priors), clamped to ``prior.output_range``
================================  ==================================================================

The default is the Tweedie form with η = 1 (a stochastic DDPM step) on 25 strided steps: for a Gaussian
prior and likelihood with exact r_t² it is the exact conditional mean step, so refinement keeps the
posterior's spread instead of collapsing it (the authors' deterministic refinement gets all its
diversity from q). Each step costs one network forward and one backward to z_t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from .rng import randn_like
from .prior import Prior
from .schedule import ddim_std, ddim_step_mean, tweedie_scale

__all__ = ["RefineConfig", "refine"]


@dataclass
class RefineConfig:
    """Refinement from the lowest keypoint T_s down to t = 0.

    Args:
        n_steps: steps on a strided grid from T_s to 0 (the authors run every integer step, T_s + 1 of them;
            25 held the plausibility of 50 on the MNIST prior, ``bench/NOTES.md``).
        guidance: "tweedie" (guided x̂_0, default) or "gradient" (the authors' form; see the module docstring).
        scale: the guidance weight ζ; None (default): the weight tuned for the prior where its folder ships one
            (``Prior.tuned``, filled in by ``pipeline.tuned_for``), else ``DEFAULT_SCALE`` = 1, exact for Gaussian
            priors.
        eta: DDIM stochasticity of the steps (1 = DDPM, 0 = deterministic).
        decoder_error: return E[x | z_0, y] = D(z_0) + E[e | z_0, y] where the prior ships its autoencoder's error
            field (``Prior.decoder_error``): the decoder's error at the observed pixels, carried into their
            neighbours (docs/method.md §5.4). No effect on pixel priors.
    """

    n_steps: int = 25
    guidance: Literal["tweedie", "gradient"] = "tweedie"
    scale: float | None = None
    eta: float = 1.0
    decoder_error: bool = True

    DEFAULT_SCALE: ClassVar[float] = 1.0

    @property
    def zeta(self) -> float:
        """The guidance weight in use."""
        return self.DEFAULT_SCALE if self.scale is None else self.scale

    def __post_init__(self):
        if self.guidance not in ("tweedie", "gradient"):
            raise ValueError(f"guidance must be 'tweedie' or 'gradient', got {self.guidance!r}")
        if self.n_steps < 1:
            raise ValueError(f"vipaint.refine.n_steps must be >= 1, got {self.n_steps}")
        if self.scale is not None and self.scale < 0:
            raise ValueError(f"vipaint.refine.scale must be >= 0 (or null: the prior's tuned weight), got {self.scale}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"vipaint.refine.eta must be in [0, 1], got {self.eta}")


def likelihood_gradient(prior: Prior, likelihood, y: Tensor, z_t: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
    """(x̂_0, ε̂, g) at z_t with g = ∇_{z_t} likelihood(y, D(x̂_0(z_t)), t): one forward and one backward
    (plus the likelihood's conjugate-gradient steps, if it uses any)."""
    with torch.enable_grad():
        z = z_t.detach().requires_grad_(True)
        x0_hat, eps_hat = prior.denoise(z, t)
        ll = likelihood(y, prior.decode(x0_hat), t, z, x0_hat)
        (g,) = torch.autograd.grad(ll.sum(), z)
    return x0_hat.detach(), eps_hat.detach(), g


def refine(prior: Prior, likelihood, y: Tensor, z: Tensor, t_start: int, config: RefineConfig = RefineConfig(),
           generator: torch.Generator | None = None, progress=None, trace=None) -> tuple[Tensor, int]:
    """Refine z at t_start (B·n, *latent) into pixels (B·n, C, H, W). Returns (x, nfe).

    y is (B, ...) for the B images; samples are image-major, as produced by ``HierarchicalPosterior``.
    ``progress(j, n)`` after each step; ``trace(t, z_t, x̂_0, x̂_0^y)`` too (diagnostics, ``bench.latent``).
    """
    sched = prior.schedule
    ts = sched.strided(t_start, config.n_steps)
    dtype = z.dtype
    x0y = None
    for j, t in enumerate(ts):
        x0_hat, eps_hat, g = likelihood_gradient(prior, likelihood, y, z, t)
        ab_t = sched.alpha_bar(t)
        if config.guidance == "tweedie":
            x0y = x0_hat + (config.zeta * tweedie_scale(ab_t)).to(dtype) * g
            eps_y = (z - ab_t.sqrt().to(dtype) * x0y) / (1 - ab_t).sqrt().to(dtype)
        else:
            x0y, eps_y = x0_hat, eps_hat
        if j + 1 < len(ts):
            ab_s = sched.alpha_bar(ts[j + 1])
            c = ddim_std(ab_t, ab_s, config.eta)
            z_next = ddim_step_mean(x0y, eps_y, ab_s, c)
            if config.guidance == "gradient":
                z_next = z_next + config.zeta * g
            if config.eta > 0:
                z_next = z_next + c.to(dtype) * randn_like(z_next, generator)
            z = z_next.detach()
        if progress is not None:
            progress(j, len(ts))
        if trace is not None:
            trace(t, z, x0_hat, x0y)
    with torch.no_grad():
        x = prior.decode(x0y)
        if config.decoder_error and prior.decoder_error is not None:
            x = x + likelihood.decoder_error_mean(prior.decoder_error, y, x)
        if prior.output_range is not None:
            x = x.clamp(*prior.output_range)
    return x, len(ts)

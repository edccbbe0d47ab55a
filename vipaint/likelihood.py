r"""Reconstruction terms log p(y | x) for decoded pixels x: the bound's ``recon`` and the refiner's guide.

Each likelihood is a callable ``(y, x, t) -> (B,)`` built for one batch (it holds the operator, whose
mask is per image), t being the integer timestep whose one-step estimate produced x:

* ``GaussianLikelihood`` (default): Σ_observed log N(y; A x, σ_y² + r_t² a²) in nats (``operators.py``).
  With ``marginalize_denoiser`` the variance r_t² of x_0 given z_t (``Prior.denoiser_variance``) is
  added, so that a noisy z_t is not asked to reproduce y exactly; r_0² ≈ 0 at the end of refinement.
* ``AuthorsReconstruction``: the loss of the authors' code (method.md §3a), negated:
  ``-(l1_weight · mean|m⊙(y - x)| + lpips_weight · LPIPS(m⊙y, m⊙x))`` with l1_weight = 100/(2·0.566²),
  lpips_weight = 100. Not a normalised density, so the bound is then not a bound on log p(y). Only
  for inpainting (the authors drop LPIPS for other operators, and so do we: use the Gaussian).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .operators import Inpainting, Operator
from .prior import Prior

__all__ = ["GaussianLikelihood", "AuthorsReconstruction", "make_likelihood"]


class _Likelihood:
    """Shared plumbing: x holds n samples per observation (image-major); the operator is expanded to match."""

    operator: Operator

    def _matched(self, y: Tensor, x: Tensor) -> tuple[Tensor, Operator]:
        if x.shape[0] == y.shape[0]:
            return y, self.operator
        if x.shape[0] % y.shape[0]:
            raise ValueError(f"{x.shape[0]} samples cannot be split evenly over {y.shape[0]} observations")
        n = x.shape[0] // y.shape[0]
        return y.repeat_interleave(n, dim=0), self.operator.expand(n)


class GaussianLikelihood(_Likelihood):
    def __init__(self, operator: Operator, prior: Prior | None = None, marginalize_denoiser: bool = True):
        self.operator = operator
        self.prior = prior
        self.marginalize_denoiser = marginalize_denoiser and prior is not None

    def extra_var(self, t: int | Tensor, device: torch.device) -> Tensor | float:
        if not self.marginalize_denoiser:
            return 0.0
        return self.prior.denoiser_variance(torch.as_tensor(t)).to(device=device, dtype=torch.float32)

    def __call__(self, y: Tensor, x: Tensor, t: int | Tensor) -> Tensor:
        y, op = self._matched(y, x)
        return op.log_likelihood(y, x, self.extra_var(t, x.device))


class AuthorsReconstruction(_Likelihood):
    def __init__(self, operator: Operator, lpips_model: Callable | None, l1_weight: float = 100 / (2 * 0.566**2),
                 lpips_weight: float = 100.0):
        if not isinstance(operator, Inpainting):
            raise ValueError("the authors' L1+LPIPS reconstruction is defined for inpainting only; "
                             "use likelihood='gaussian' for blur and super-resolution")
        self.operator = operator
        self.lpips_model = lpips_model
        self.l1_weight = l1_weight
        self.lpips_weight = lpips_weight

    def __call__(self, y: Tensor, x: Tensor, t: int | Tensor) -> Tensor:
        y, op = self._matched(y, x)
        m = op.valid(x).expand_as(x)
        l1 = self.l1_weight * (m * (y - x)).abs().flatten(1).mean(1)
        if self.lpips_model is None or self.lpips_weight == 0:
            return -l1
        lp = self.lpips_model(m * y, m * x, normalize=False).flatten(1).mean(1)
        return -(l1 + self.lpips_weight * lp)


def make_likelihood(kind: str, operator: Operator, prior: Prior, marginalize_denoiser: bool = True,
                    lpips_model: Callable | None = None):
    """"gaussian" (default) or "authors"."""
    if kind == "gaussian":
        return GaussianLikelihood(operator, prior, marginalize_denoiser)
    if kind == "authors":
        return AuthorsReconstruction(operator, lpips_model)
    raise ValueError(f"unknown likelihood {kind!r}; expected 'gaussian' or 'authors'")

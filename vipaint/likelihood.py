r"""Reconstruction terms log p(y | x) for decoded pixels x: the bound's ``recon`` and the refiner's guide.

Each likelihood is a callable ``(y, x, t, z=None) -> (B,)`` built for one batch (it holds the operator,
whose mask is per image), t being the integer timestep whose one-step estimate x = D(x̂_0(z)) came from:

* ``GaussianLikelihood`` (default): Σ_observed log N(y; A x, σ_y² + r_t² a²) in nats (``operators.py``).
  With ``marginalize_denoiser`` the variance r_t² of x_0 given z_t (``Prior.denoiser_variance``) is
  added, so that a noisy z_t is not asked to reproduce y exactly; r_0² ≈ 0 at the end of refinement.
* ``L1LpipsReconstruction`` (kind ``"l1_lpips"``): the L1 + LPIPS loss of the authors' code, negated
  (docs/method.md §5.3):
  ``-(l1_weight · mean|m⊙(y - x)| + lpips_weight · LPIPS(m⊙y, m⊙x))`` with l1_weight = 100/(2·0.566²),
  lpips_weight = 100. Not a normalised density, so the bound is then not a bound on log p(y). Only
  for inpainting (the authors drop LPIPS for other operators, and so do we: use the Gaussian).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from .operators import Inpainting, Operator, repeat_observation
from .prior import Prior
from .schedule import tweedie_scale

__all__ = ["LikelihoodConfig", "GaussianLikelihood", "L1LpipsReconstruction", "make_likelihood", "KINDS"]

#: The likelihood kinds ``LikelihoodConfig.kind`` accepts.
KINDS = ("gaussian", "l1_lpips")


@dataclass
class LikelihoodConfig:
    """Which reconstruction term the bound and the refiner use.

    Args:
        kind: "gaussian" (a density, default) or "l1_lpips" (the authors' L1 + LPIPS loss, docs/method.md §5.3;
            inpainting only). The old spelling "authors" is refused with a message naming the new one.
        marginalize_denoiser: add r_t² to the Gaussian's variance (see ``GaussianLikelihood``).
        cg_steps: conjugate-gradient steps for a covariance-aware Gaussian gradient (pixel priors; 0 = off;
            each step costs one more backward pass). Exact for Gaussian and mixture priors. A learned
            denoiser's Jacobian need not be positive semi-definite; where CG meets a curvature no covariance
            can have, that sample falls back to the isotropic gradient (unguarded, CG gave NaN samples on the
            MNIST prior at 90% missing pixels, bench/README.md).
        lpips_net: LPIPS network of the authors' loss ("vgg" as they use, or "alex").
        lpips_backbone: local folder (or file) of the LPIPS backbone; None = ``$VIPAINT_LPIPS_BACKBONE_DIR``,
            else torchvision's download (``vipaint.resources``).
    """

    kind: Literal["gaussian", "l1_lpips"] = "gaussian"
    marginalize_denoiser: bool = True
    cg_steps: int = 0
    lpips_net: Literal["vgg", "alex", "squeeze"] = "vgg"
    lpips_backbone: str | None = None

    def __post_init__(self):
        if self.kind == "authors":
            raise ValueError("likelihood kind 'authors' was renamed 'l1_lpips' "
                             "(--model.vipaint.likelihood.kind l1_lpips)")
        if self.kind not in KINDS:
            raise ValueError(f"unknown likelihood kind {self.kind!r}; expected one of {KINDS}")


class _Likelihood:
    """Shared plumbing: x holds n samples per observation (image-major); the operator is expanded to match."""

    operator: Operator

    def _matched(self, y: Tensor, x: Tensor) -> tuple[Tensor, Operator]:
        if x.shape[0] % y.shape[0]:
            raise ValueError(f"{x.shape[0]} samples cannot be split evenly over {y.shape[0]} observations")
        return repeat_observation(y, self.operator, x.shape[0] // y.shape[0])


class GaussianLikelihood(_Likelihood):
    """Σ_valid log N(y; A x, σ_y² + r_t² a²), see the module docstring.

    cg_steps > 0 (pixel priors): the *gradient* becomes that of the covariance-aware Gaussian
    log N(y; A x̂_0(z_t), C), C = σ_y² I + A Cov[x_0|z_t] Aᵀ with Cov[x_0|z_t] = σ_t²/α_t · ∂x̂_0/∂z_t (the
    second-order Tweedie identity, as in ΠGDM/TMPD), held fixed: ∇_x = Aᵀ C⁻¹ (y - A x), C⁻¹ applied by
    conjugate gradients on the valid entries, each step one more backward through the network. The value
    stays the isotropic one (a log det C is not available cheaply). Exact for a Gaussian prior of any
    covariance; needs ``z`` (the noisy latent x was denoised from) in the call.
    """

    def __init__(self, operator: Operator, prior: Prior | None = None, marginalize_denoiser: bool = True,
                 cg_steps: int = 0):
        self.operator = operator
        self.prior = prior
        self.marginalize_denoiser = marginalize_denoiser and prior is not None
        if cg_steps and (prior is None or prior.is_latent):
            raise ValueError("cg_steps > 0 needs a pixel prior (Cov[x_0 | z_t] comes from its denoiser's Jacobian)")
        self.cg_steps = int(cg_steps)
        self._fallbacks: Tensor | int = 0   # kept on the device: reading it every call would sync a GPU per step

    @property
    def cg_fallbacks(self) -> int:
        """Samples × calls whose CG direction was unsound and kept the isotropic gradient (diagnostics)."""
        return int(self._fallbacks)

    def extra_var(self, t: int | Tensor, device: torch.device) -> Tensor | float:
        if not self.marginalize_denoiser:
            return 0.0
        return self.prior.denoiser_variance(torch.as_tensor(t)).to(device=device, dtype=torch.float32)

    def __call__(self, y: Tensor, x: Tensor, t: int | Tensor, z: Tensor | None = None) -> Tensor:
        y, op = self._matched(y, x)
        value = op.log_likelihood(y, x, self.extra_var(t, x.device))
        if self.cg_steps <= 0 or z is None or not x.requires_grad:
            return value
        grad_x, sound = self._cg_direction(y, op, x, z, int(t))
        grad_x = torch.where(sound, grad_x, torch.zeros_like(grad_x))
        surrogate = (grad_x * x).flatten(1).sum(1)   # its gradient w.r.t. x is Aᵀ C⁻¹ r
        guided = value.detach() + surrogate - surrogate.detach()
        # Where CG met a curvature no covariance can have, that sample keeps the isotropic gradient.
        self._fallbacks = self._fallbacks + (~sound).sum()
        return torch.where(sound.flatten(), guided, value)

    def _cg_direction(self, y: Tensor, op: Operator, x: Tensor, z: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """(Aᵀ C⁻¹ (y - A x) by ``cg_steps`` of conjugate gradients, detached; (N, 1, 1, 1) bool: CG was sound).

        C = σ_y² I + c A J Aᵀ is a covariance only if the denoiser's Jacobian J is positive semi-definite, and
        then every search direction p has pᵀ C p ≥ σ_y² pᵀ p. A learned denoiser's J can break that (the
        MNIST prior did: NaN samples), and CG then divides by ~0 or climbs; such a sample is marked unsound.
        """
        c = float(tweedie_scale(self.prior.schedule.alpha_bar(t)))
        w = op.valid(y).expand_as(y)

        def matvec(u: Tensor) -> Tensor:  # C u on the valid entries; Jᵀ by one backward through x's graph
            jt = torch.autograd.grad(x, z, grad_outputs=op.adjoint(w * u), retain_graph=True)[0]
            return w * (op.sigma_y**2 * u + c * op.forward(jt))

        def dot(a: Tensor, b: Tensor) -> Tensor:
            return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.ndim - 1)))

        r = w * (y - op.forward(x.detach()))
        v, p, rr = torch.zeros_like(r), r.clone(), dot(r, r)
        sound = torch.ones_like(rr, dtype=torch.bool)
        for _ in range(self.cg_steps):
            ap = matvec(p)
            curvature = dot(p, ap)
            sound &= torch.isfinite(curvature) & (curvature >= 0.5 * op.sigma_y**2 * dot(p, p))
            step = rr / curvature.clamp_min(1e-30)
            v, r = v + step * p, r - step * ap
            rr_new = dot(r, r)
            p, rr = r + (rr_new / rr.clamp_min(1e-30)) * p, rr_new
        sound &= torch.isfinite(v).flatten(1).all(1).reshape(sound.shape)
        return op.adjoint(v).detach(), sound


class L1LpipsReconstruction(_Likelihood):
    def __init__(self, operator: Operator, lpips_model: Callable | None, l1_weight: float = 100 / (2 * 0.566**2),
                 lpips_weight: float = 100.0):
        if not isinstance(operator, Inpainting):
            raise ValueError("the L1+LPIPS reconstruction (likelihood kind 'l1_lpips') is defined for inpainting only; "
                             "use kind 'gaussian' for blur and super-resolution")
        self.operator = operator
        self.lpips_model = lpips_model
        self.l1_weight = l1_weight
        self.lpips_weight = lpips_weight

    def __call__(self, y: Tensor, x: Tensor, t: int | Tensor, z: Tensor | None = None) -> Tensor:
        y, op = self._matched(y, x)
        m = op.valid(x).expand_as(x)
        l1 = self.l1_weight * (m * (y - x)).abs().flatten(1).mean(1)
        if self.lpips_model is None or self.lpips_weight == 0:
            return -l1
        a, b = m * y, m * x
        if min(a.shape[-2:]) < 32:
            # AlexNet/VGG pool the image down 16-32x; smaller inputs would vanish, so upsample first.
            size = [max(32, s) for s in a.shape[-2:]]
            a = torch.nn.functional.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = torch.nn.functional.interpolate(b, size=size, mode="bilinear", align_corners=False)
        lp = self.lpips_model(a, b, normalize=False).flatten(1).mean(1)
        return -(l1 + self.lpips_weight * lp)


def make_likelihood(config: LikelihoodConfig, operator: Operator, prior: Prior, lpips_model: Callable | None = None):
    """The likelihood ``config`` describes for one batch's operator (``lpips_model``: the authors' loss only)."""
    if config.kind == "gaussian":
        return GaussianLikelihood(operator, prior, config.marginalize_denoiser, config.cg_steps)
    if config.kind == "l1_lpips":
        return L1LpipsReconstruction(operator, lpips_model)
    raise ValueError(f"unknown likelihood {config.kind!r}; expected one of {KINDS}")

r"""Reconstruction terms log p(y | x) for decoded pixels x: the bound's ``recon`` and the refiner's guide.

Each likelihood is a callable ``(y, x, t, z=None) -> (B,)`` built for one batch (it holds the operator,
whose mask is per image), t being the integer timestep whose one-step estimate x = D(x̂_0(z)) came from:

* ``GaussianLikelihood`` (default): Σ_observed log N(y; A x, σ_y² + r_t² ρ) in nats (``operators.py``).
  With ``marginalize_denoiser`` the variance r_t² of z_0 given z_t (``Prior.denoiser_variance``, in the
  prior's own units) is added, so that a noisy z_t is not asked to reproduce y exactly; r_0² ≈ 0 at the end
  of refinement. ρ (the *reach*) says how that variance reaches y:

  - pixel priors and an operator whose A Aᵀ is diagonal (inpainting, super-resolution): a² = Σ_j A_ij²
    (``Operator.row_norm2``), exact;
  - latent priors, x = D(z_0), and any operator whose A Aᵀ is not diagonal (a blur; J = I for pixels):
    ρ = ‖(A J)ᵀ r‖² / ‖r‖² per sample, r = y − A x on the valid entries,
    J = ∂D/∂z_0 at x̂_0 — the variance of A J δ, δ ~ N(0, I), along the residual (the Rayleigh quotient of
    A J Jᵀ Aᵀ): one backward through the decoder. A latent element decodes to many pixels (48 for an f4
    autoencoder), so A J Jᵀ Aᵀ is far from diagonal where an area is observed (eigenvalues up to ~25 on
    the shipped CIFAR-10 autoencoder, diagonal 0.55): a variance per pixel lets the guidance step overshoot
    by that factor. A blur has the same shape with J = I: a² = Σ k² ≈ 0.035 for std 1.5 px, while a smooth
    residual sees A Aᵀ's top eigenvalue ≈ 1, and the diagonal variance made every sample of the MNIST prior
    NaN on deblurring (bench/README.md, "Open questions", 3). With ρ, (σ_y² + r_t² ρ)⁻¹ r is the first
    conjugate-gradient step (steepest descent with exact line search) towards C⁻¹ r, C = σ_y² I + r_t² A J Jᵀ Aᵀ
    the covariance of y given z_t through the linearised decoder; exact where r is an eigenvector of A J Jᵀ Aᵀ
    (docs/method.md §5.2). Where few pixels of a cell are observed ρ is small and the step stays strong.
* ``L1LpipsReconstruction`` (kind ``"l1_lpips"``): the L1 + LPIPS loss of the authors' code, negated
  (docs/method.md §5.3):
  ``-(l1_weight · mean|m⊙(y - x)| + lpips_weight · LPIPS(m⊙y, m⊙x))`` with l1_weight = 100/(2·0.566²),
  lpips_weight = 100. Not a normalised density, so the bound is then not a bound on log p(y). Only
  for inpainting (the authors drop LPIPS for other operators, and so do we: use the Gaussian).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from .operators import Inpainting, Operator, conjugate_gradients, repeat_observation
from .prior import Prior
from .schedule import tweedie_scale

__all__ = ["LikelihoodConfig", "GaussianLikelihood", "L1LpipsReconstruction", "make_likelihood", "decoder_jvp", "KINDS",
           "REACHES", "LATENT_CG_STEPS"]

#: The likelihood kinds ``LikelihoodConfig.kind`` accepts.
KINDS = ("gaussian", "l1_lpips")
#: CG steps through the decoder on a latent prior by default (``LikelihoodConfig.cg_steps`` None).
LATENT_CG_STEPS = 3
#: How r_t² reaches y (``LikelihoodConfig.reach``).
REACHES = ("auto", "diagonal", "residual")


@dataclass
class LikelihoodConfig:
    """Which reconstruction term the bound and the refiner use.

    Args:
        kind: "gaussian" (a density, default) or "l1_lpips" (the authors' L1 + LPIPS loss, docs/method.md §5.3;
            inpainting only). The old spelling "authors" is refused with a message naming the new one.
        marginalize_denoiser: add r_t² to the Gaussian's variance (see ``GaussianLikelihood``).
        sigma_y: the likelihood's noise std; None (default): the operator's σ_y, the noise the observation has.
            A larger value also allows for what the prior cannot reproduce (e.g. a latent prior's autoencoder
            error); bench/README.md ("Latent priors") measures it.
        reach: how r_t² reaches y: "diagonal" (a², the operator's Σ_j A_ij²), "residual" (through the decoder's
            Jacobian along the residual, the module docstring), or "auto" (default): "residual" for latent
            priors and for operators whose A Aᵀ is not diagonal (``Operator.gram_diagonal``: the blur),
            "diagonal" otherwise (pixel priors with inpainting or super-resolution, where the two agree).
        cg_steps: conjugate-gradient steps for a covariance-aware Gaussian gradient (0 = off). Latent priors:
            towards C⁻¹ r with C = σ_y² I + r_t² A J Jᵀ Aᵀ through the decoder's Jacobian J, of which the residual
            reach is the first step (each step: one decoder backward, two decodes). None (default): ``LATENT_CG_STEPS``
            on a latent prior whose likelihood marginalises r_t² (bench/README.md, "Latent priors": it fits dense
            observations where one step leaves them unfit), 0 on a pixel prior. Pixel priors: with the
            denoiser's covariance, each step one more backward pass, exact for Gaussian and mixture priors. A learned
            denoiser's Jacobian need not be positive semi-definite; where CG meets a curvature no covariance
            can have, that sample falls back to the isotropic gradient (unguarded, CG gave NaN samples on the
            MNIST prior at 90% missing pixels, bench/README.md).
        lpips_net: LPIPS network of the authors' loss ("vgg" as they use, or "alex").
        lpips_backbone: local folder (or file) of the LPIPS backbone; None = ``$VIPAINT_LPIPS_BACKBONE_DIR``,
            else torchvision's download (``vipaint.resources``).
    """

    kind: Literal["gaussian", "l1_lpips"] = "gaussian"
    marginalize_denoiser: bool = True
    sigma_y: float | None = None
    reach: Literal["auto", "diagonal", "residual"] = "auto"
    cg_steps: int | None = None
    lpips_net: Literal["vgg", "alex", "squeeze"] = "vgg"
    lpips_backbone: str | None = None

    def __post_init__(self):
        if self.kind == "authors":
            raise ValueError("likelihood kind 'authors' was renamed 'l1_lpips' "
                             "(--model.vipaint.likelihood.kind l1_lpips)")
        if self.kind not in KINDS:
            raise ValueError(f"unknown likelihood kind {self.kind!r}; expected one of {KINDS}")
        if self.reach not in REACHES:
            raise ValueError(f"vipaint.likelihood.reach must be one of {REACHES}, got {self.reach!r}")
        if self.cg_steps is not None and self.cg_steps < 0:
            raise ValueError(f"vipaint.likelihood.cg_steps must be >= 0 (or null: by the prior), got {self.cg_steps}")
        if self.sigma_y is not None and not self.sigma_y > 0:
            raise ValueError(f"vipaint.likelihood.sigma_y must be > 0 (or null: the operator's), got {self.sigma_y}")


class _Likelihood:
    """Shared plumbing: x holds n samples per observation (image-major); the operator is expanded to match."""

    operator: Operator

    def _matched(self, y: Tensor, x: Tensor) -> tuple[Tensor, Operator]:
        if x.shape[0] % y.shape[0]:
            raise ValueError(f"{x.shape[0]} samples cannot be split evenly over {y.shape[0]} observations")
        return repeat_observation(y, self.operator, x.shape[0] // y.shape[0])

    def decoder_error_mean(self, field, y: Tensor, x: Tensor) -> Tensor:
        """E[e | z_0, y] (N, C, H, W) for decoded x = D(z_0) of the B observations y, ``field`` the prior's
        ``decoder_error.DecoderError``, with this likelihood's operator and σ_y."""
        y, op = self._matched(y, x)
        return field.conditional_mean(y, x, op)


class GaussianLikelihood(_Likelihood):
    """Σ_valid log N(y; A x, σ_y² + r_t² ρ), see the module docstring. ``reach``: "auto", "diagonal" or
    "residual" (``LikelihoodConfig.reach``); "residual" needs the prior-space estimate ``x0_hat`` x was decoded
    from in the call.

    cg_steps > 0 (pixel priors): the *gradient* becomes that of the covariance-aware Gaussian
    log N(y; A x̂_0(z_t), C), C = σ_y² I + A Cov[x_0|z_t] Aᵀ with Cov[x_0|z_t] = σ_t²/α_t · ∂x̂_0/∂z_t (the
    second-order Tweedie identity, as in ΠGDM/TMPD), held fixed: ∇_x = Aᵀ C⁻¹ (y - A x), C⁻¹ applied by
    conjugate gradients on the valid entries, each step one more backward through the network. The value
    stays the isotropic one (a log det C is not available cheaply). Exact for a Gaussian prior of any
    covariance; needs ``z`` (the noisy latent x was denoised from) in the call.

    cg_steps > 0 (latent priors): the same with Cov[z_0|z_t] = r_t² I carried through the decoder,
    C = σ_y² I + r_t² A J Jᵀ Aᵀ (``_decoder_cg_direction``); needs ``x0_hat`` with x's graph to it. cg_steps None:
    ``LATENT_CG_STEPS`` on latent priors that marginalise r_t², else 0.
    """

    def __init__(self, operator: Operator, prior: Prior | None = None, marginalize_denoiser: bool = True,
                 cg_steps: int | None = None, reach: str = "auto", sigma_y: float | None = None):
        if sigma_y is not None and sigma_y != operator.sigma_y:   # the likelihood's σ, not the observation's
            operator = copy.copy(operator)
            operator.sigma_y = float(sigma_y)
        self.operator = operator
        self.prior = prior
        self.marginalize_denoiser = marginalize_denoiser and prior is not None
        if reach not in REACHES:
            raise ValueError(f"reach must be one of {REACHES}, got {reach!r}")
        if reach == "auto":
            latent = prior is not None and prior.is_latent
            reach = "residual" if latent or not operator.gram_diagonal else "diagonal"
        self.reach = reach
        if cg_steps is None:   # by the prior (LikelihoodConfig.cg_steps)
            cg_steps = LATENT_CG_STEPS if self.marginalize_denoiser and prior.is_latent else 0
        if cg_steps and prior is None:
            raise ValueError("cg_steps > 0 needs a prior (Cov[x_0 | z_t] comes from its denoiser or its decoder)")
        if cg_steps and prior.is_latent and not self.marginalize_denoiser:
            raise ValueError("cg_steps > 0 on a latent prior solves C = σ_y² I + r_t² A J Jᵀ Aᵀ, which needs "
                             "marginalize_denoiser (without r_t², C is σ_y² I and there is nothing to solve)")
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

    def residual_reach(self, y: Tensor, op: Operator, x: Tensor, x0_hat: Tensor) -> Tensor:
        """ρ = ‖(A J)ᵀ r‖² / ‖r‖² per sample (N,), detached: r = valid ⊙ (y − A x), J = ∂x/∂x̂_0 (the decoder's
        Jacobian at x̂_0). One backward through the decoder: through x's own graph where it has one to x̂_0,
        else through a fresh decode (the reported bound runs without gradients)."""
        return self._residual_reach_and_vjp(y, op, x, x0_hat)[0]

    def _residual_reach_and_vjp(self, y: Tensor, op: Operator, x: Tensor, x0_hat: Tensor) -> tuple[Tensor, Tensor]:
        """(ρ, Jᵀ Aᵀ r): the backward ρ needs is also the decoder solve's first product (``_decoder_cg_direction``)."""
        r = (op.valid(y).expand_as(y) * (y - op.forward(x))).detach()
        with torch.enable_grad():
            if x.requires_grad and x0_hat.requires_grad:
                out, inp = x, x0_hat
            else:
                inp = x0_hat.detach().requires_grad_(True)
                out = self.prior.decode(inp)
            (jt_r,) = torch.autograd.grad(out, inp, grad_outputs=op.adjoint(r), retain_graph=out is x)
        # An all-zero residual (y reproduced exactly) leaves ρ = 0: the variance is then σ_y² alone.
        rho = (jt_r.flatten(1).pow(2).sum(1) / r.flatten(1).pow(2).sum(1).clamp_min(1e-30)).detach()
        return rho, jt_r

    def __call__(self, y: Tensor, x: Tensor, t: int | Tensor, z: Tensor | None = None,
                 x0_hat: Tensor | None = None) -> Tensor:
        """log p(y | z_t) per sample (N,) for decoded estimates x (N, C, H, W) of the B observations y; ``z``:
        the noisy latent z_t (CG only), ``x0_hat``: the prior-space estimate with x = D(x̂_0) (reach "residual")."""
        y, op = self._matched(y, x)
        reach = jt_r = None
        if self.marginalize_denoiser and self.reach == "residual":
            if x0_hat is None:
                raise ValueError("reach 'residual' needs x0_hat, the estimate x was decoded from")
            reach, jt_r = self._residual_reach_and_vjp(y, op, x, x0_hat)
        extra = self.extra_var(t, x.device)
        value = op.log_likelihood(y, x, extra, reach)
        if self.cg_steps <= 0 or not x.requires_grad:
            return value
        if self.prior.is_latent:
            if x0_hat is None or not x0_hat.requires_grad:
                return value   # no graph from x̂_0 to x (the reported bound): the value alone is asked for
            grad_x, sound = self._decoder_cg_direction(y, op, x, x0_hat, extra, jt_r)
        elif z is None:
            return value
        else:
            grad_x, sound = self._cg_direction(y, op, x, z, int(t))
        grad_x = torch.where(sound, grad_x, torch.zeros_like(grad_x))
        surrogate = (grad_x * x).flatten(1).sum(1)   # its gradient w.r.t. x is Aᵀ C⁻¹ r
        guided = value.detach() + surrogate - surrogate.detach()
        # Where CG met a curvature no covariance can have, that sample keeps the isotropic gradient.
        self._fallbacks = self._fallbacks + (~sound).sum()
        return torch.where(sound.flatten(), guided, value)

    def _cg_direction(self, y: Tensor, op: Operator, x: Tensor, z: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """Pixel priors: (Aᵀ C⁻¹ (y - A x) by ``cg_steps`` of conjugate gradients, detached; (N, 1, 1, 1) bool:
        CG was sound).

        C = σ_y² I + c A J Aᵀ is a covariance only if the denoiser's Jacobian J is positive semi-definite, and
        then every search direction p has pᵀ C p ≥ σ_y² pᵀ p. A learned denoiser's J can break that (the
        MNIST prior did: NaN samples), and CG then divides by ~0 or climbs; such a sample is marked unsound.
        """
        c = float(tweedie_scale(self.prior.schedule.alpha_bar(t)))
        w = op.valid(y).expand_as(y)

        def matvec(u: Tensor) -> Tensor:  # C u on the valid entries; Jᵀ by one backward through x's graph
            jt = torch.autograd.grad(x, z, grad_outputs=op.adjoint(w * u), retain_graph=True)[0]
            return w * (op.sigma_y**2 * u + c * op.forward(jt))

        v, sound = conjugate_gradients(matvec, w * (y - op.forward(x.detach())), self.cg_steps, op.sigma_y**2)
        return op.adjoint(v).detach(), sound

    def _decoder_cg_direction(self, y: Tensor, op: Operator, x: Tensor, x0_hat: Tensor, var: Tensor | float,
                              jt_r: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent priors: (Aᵀ C⁻¹ (y - A x) by ``cg_steps`` of conjugate gradients, detached; (N, 1, 1, 1) bool).

        C = σ_y² I + r_t² A J Jᵀ Aᵀ, J = ∂x/∂x̂_0 the decoder's Jacobian (docs/method.md §5.2): the full solve of
        which the residual reach is the first step. Jᵀ u is one backward through x's graph; J v a central
        difference of two float32 decodes (``decoder_jvp``). A step costs about two decoder passes and no
        network evaluation. C is a covariance for any J: the soundness check only catches NaNs. ``jt_r``: Jᵀ Aᵀ r
        if the residual reach already took it, reused for CG's first product (its first direction is r itself).
        """
        w = op.valid(y).expand_as(y)
        var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
        if var.ndim == 1:
            var = var.reshape(-1, *([1] * (y.ndim - 1)))
        z0 = x0_hat.detach()

        known = [jt_r] if jt_r is not None else []

        def matvec(u: Tensor) -> Tensor:  # C u on the valid entries
            if known:
                jt = known.pop()
            else:
                (jt,) = torch.autograd.grad(x, x0_hat, grad_outputs=op.adjoint(w * u), retain_graph=True)
            return w * (op.sigma_y**2 * u + var * op.forward(decoder_jvp(self.prior.decode, z0, jt)))

        v, sound = conjugate_gradients(matvec, w * (y - op.forward(x.detach())), self.cg_steps, op.sigma_y**2)
        return op.adjoint(v).detach(), sound


def decoder_jvp(decode: Callable[[Tensor], Tensor], z0: Tensor, v: Tensor, h: float = 1e-2) -> Tensor:
    """J v, J = ∂D/∂z at z0, per sample by a central difference of two decodes in float32:
    ‖v‖ (D(z0 + h v̂) − D(z0 − h v̂)) / 2h, v̂ = v / ‖v‖ (RMS-normalised, so h is a step in latent units).

    Not autograd's double backward: the decoders' attention (scaled_dot_product_attention on the CPU) has
    no second derivative, and forward-mode AD is six times slower here; the difference's error is
    ~1e-4 relative on the shipped CIFAR-10 autoencoder (h = 1e-2, latents of unit std)."""
    scale = v.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-30).reshape(-1, *([1] * (v.ndim - 1)))
    step = h * (v / scale)
    with torch.no_grad(), torch.autocast(device_type=z0.device.type, enabled=False):
        z0 = z0.float()
        diff = decode(z0 + step.float()) - decode(z0 - step.float())
    return diff * (scale.float() / (2 * h))   # float32: CG's dot products need it under bf16 autocast too


class L1LpipsReconstruction(_Likelihood):
    """``lpips``: the masked LPIPS ``(a, b, keep_mask) -> (N,)`` (``evaluation.perceptual.masked_lpips`` bound to a
    model, which also upsamples small images), or None for the L1 term alone."""

    def __init__(self, operator: Operator, lpips: Callable | None, l1_weight: float = 100 / (2 * 0.566**2),
                 lpips_weight: float = 100.0):
        if not isinstance(operator, Inpainting):
            raise ValueError("the L1+LPIPS reconstruction (likelihood kind 'l1_lpips') is defined for inpainting only; "
                             "use kind 'gaussian' for blur and super-resolution")
        self.operator = operator
        self.lpips = lpips
        self.l1_weight = l1_weight
        self.lpips_weight = lpips_weight

    def __call__(self, y: Tensor, x: Tensor, t: int | Tensor, z: Tensor | None = None,
                 x0_hat: Tensor | None = None) -> Tensor:
        y, op = self._matched(y, x)
        m = op.valid(x).expand_as(x)
        l1 = self.l1_weight * (m * (y - x)).abs().flatten(1).mean(1)
        if self.lpips is None or self.lpips_weight == 0:
            return -l1
        lp = self.lpips(y, x, op.valid(x)[:, :1])
        return -(l1 + self.lpips_weight * lp)


def make_likelihood(config: LikelihoodConfig, operator: Operator, prior: Prior, lpips: Callable | None = None):
    """The likelihood ``config`` describes for one batch's operator (``lpips``: the masked LPIPS of the authors'
    loss, ``L1LpipsReconstruction``)."""
    if config.kind == "gaussian":
        return GaussianLikelihood(operator, prior, config.marginalize_denoiser, config.cg_steps, config.reach,
                                  config.sigma_y)
    if config.kind == "l1_lpips":
        return L1LpipsReconstruction(operator, lpips)
    raise ValueError(f"unknown likelihood {config.kind!r}; expected one of {KINDS}")

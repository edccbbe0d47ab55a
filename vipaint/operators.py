r"""Linear observation operators y = A x + σ_y ε and their Gaussian likelihood (docs/method.md §5).

==============  =====================================================================
symbol          meaning
==============  =====================================================================
``x``           image (B, C, H, W) in [-1, 1]
``y``           observation, in the operator's range space (see each operator)
``A``, ``Aᵀ``   ``forward`` and ``adjoint``: <A x, y> = <x, Aᵀ y> (tested)
``σ_y``         observation noise std, in [-1, 1] units
``valid``       (B, 1|C, h, w) weights in the range space: 1 where y carries information
``a²``          Σ_j A_ij², per row: how an isotropic variance r² on x reaches y (r² a²); exact only where
                A Aᵀ is diagonal (``gram_diagonal``: inpainting, super-resolution), not for a blur
``ρ``           ``reach``: the same for a variance on a latent z_0 with x = D(z_0)
                (``likelihood.GaussianLikelihood``); a² where none is given
==============  =====================================================================

Likelihood (the default of the bound; the authors' code uses an L1+LPIPS loss instead, docs/method.md §5.3,
kind "l1_lpips" in ``likelihood.py``):

``log p(y | x) = Σ_valid log N(y; A x, σ_y² + r² a²)``  (``σ_y² + r² ρ`` with a ``reach`` ρ)

where r² ≥ 0 is an optional extra variance on x (the one-step denoiser variance r_t², so that
p(y | z_t) ≈ N(y; A x̂_0(z_t), σ_y² + r_t² a²) marginalises x_0 given z_t instead of trusting x̂_0).
Missing pixels carry no term: they are integrated out exactly, not imputed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .rng import randn_like

__all__ = ["UnsupportedOperator", "Operator", "Inpainting", "GaussianBlur", "SuperResolution", "OperatorConfig",
           "make_operator", "repeat_observation", "conjugate_gradients"]


class UnsupportedOperator(ValueError):
    """A method that cannot take this operator (one defined or trained for inpainting only). Callers that try every
    method on every operator (``bench.compare``) skip the pair on this error and stop on any other."""


class Operator:
    """Base class. Subclasses implement ``forward``/``adjoint`` and set ``valid``, ``row_norm2`` and
    ``gram_diagonal``."""

    name = "operator"
    #: A Aᵀ is diagonal (rows of A do not overlap), so r² a² is the exact variance of A δ, δ ~ N(0, r² I), entry by
    #: entry. False for a blur: there a smooth residual sees A Aᵀ's top eigenvalue (≈ 1), not a² (1/(4π std²)).
    gram_diagonal: bool = True

    def __init__(self, sigma_y: float = 0.0):
        if sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
        self.sigma_y = float(sigma_y)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def valid(self, y: Tensor) -> Tensor:
        return torch.ones_like(y[:, :1])

    row_norm2: float = 1.0

    def to_image(self, y: Tensor) -> Tensor:
        """An image-space picture of y (for initialisation and display): Aᵀ y unless overridden."""
        return self.adjoint(y)

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def observe(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y = A x + σ_y ε (zeros where ``valid`` is 0)."""
        y = self.forward(x)
        if self.sigma_y > 0:
            noise = randn_like(y, generator)  # a CPU generator works for GPU tensors
            y = y + self.sigma_y * noise
        return y * self.valid(y)

    def log_likelihood(self, y: Tensor, x: Tensor, extra_var: Tensor | float = 0.0,
                       reach: Tensor | None = None) -> Tensor:
        """Σ over valid entries of log N(y; A x, σ_y² + extra_var·a²), shape (B,).

        ``extra_var`` is a float or a (B,) tensor (per-sample r_t²). ``reach``: a (B,) tensor that replaces a²
        (how a unit variance upstream of x reaches y; ``likelihood.GaussianLikelihood`` for latent priors).
        """
        ax = self.forward(x)
        if ax.shape != y.shape:
            raise ValueError(f"A x has shape {tuple(ax.shape)} but y has shape {tuple(y.shape)}")
        extra = torch.as_tensor(extra_var, dtype=ax.dtype, device=ax.device)
        if extra.ndim == 1:
            extra = extra.reshape(-1, *([1] * (ax.ndim - 1)))
        # Checked on the host, without reading extra_var back from the device (a synchronisation per call):
        # a tensor extra_var is r_t² > 0 by construction, so only σ_y = 0 with a zero number can be degenerate.
        if self.sigma_y <= 0 and not (torch.is_tensor(extra_var) or extra_var > 0):
            raise ValueError("the likelihood variance is zero: set sigma_y > 0 or pass extra_var > 0")
        gain = self.row_norm2 if reach is None else reach.to(ax.dtype).reshape(-1, *([1] * (ax.ndim - 1)))
        var = self.sigma_y**2 + extra * gain
        w = self.valid(y).expand_as(y)
        ll = -0.5 * ((y - ax) ** 2 / var + torch.log(2 * math.pi * var * torch.ones_like(ax)))
        return (w * ll).flatten(1).sum(1)

    def residual_norm(self, y: Tensor, x: Tensor) -> Tensor:
        """||y - A x|| over valid entries, (B,) (DPS step-size normaliser)."""
        w = self.valid(y).expand_as(y)
        return ((w * (y - self.forward(x))) ** 2).flatten(1).sum(1).sqrt()

    def expand(self, repeats: int) -> "Operator":
        """The operator for a batch where each image is repeated ``repeats`` times (repeat_interleave)."""
        return self


def _check_image(x: Tensor, what: str = "x") -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} must be (B, C, H, W), got shape {tuple(x.shape)}")


class Inpainting(Operator):
    """A x = keep_mask ⊙ x; y lives in image space with zeros at missing pixels. Self-adjoint.

    Args:
        keep_mask: (B, 1, H, W), 1 = observed.
    """

    name = "inpainting"

    def __init__(self, keep_mask: Tensor, sigma_y: float = 0.0):
        super().__init__(sigma_y)
        if keep_mask.ndim != 4 or keep_mask.shape[1] != 1:
            raise ValueError(f"keep_mask must be (B, 1, H, W), got shape {tuple(keep_mask.shape)}")
        self.keep_mask = keep_mask

    def _mask_for(self, x: Tensor) -> Tensor:
        _check_image(x)
        if x.shape[0] != self.keep_mask.shape[0] or x.shape[-2:] != self.keep_mask.shape[-2:]:
            raise ValueError(f"keep_mask {tuple(self.keep_mask.shape)} does not match the image {tuple(x.shape)}")
        return self.keep_mask.to(dtype=x.dtype, device=x.device)

    def forward(self, x: Tensor) -> Tensor:
        return self._mask_for(x) * x

    def adjoint(self, y: Tensor) -> Tensor:
        return self._mask_for(y) * y

    def valid(self, y: Tensor) -> Tensor:
        return self._mask_for(y)

    def expand(self, repeats: int) -> "Inpainting":
        return Inpainting(self.keep_mask.repeat_interleave(repeats, dim=0), self.sigma_y)


class GaussianBlur(Operator):
    """Depthwise convolution with a normalised Gaussian kernel, zero padding ("same" size).

    The authors use a 61×61 kernel with std 3 on 256² images and reflection padding; zero padding
    keeps ``adjoint`` an exact transpose (a flipped-kernel convolution) so the likelihood gradient is
    the true one.
    """

    name = "blur"
    gram_diagonal = False

    def __init__(self, std: float = 3.0, kernel_size: int | None = None, sigma_y: float = 0.05):
        super().__init__(sigma_y)
        k = kernel_size or 2 * math.ceil(3 * std) + 1
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {k}")
        r = torch.arange(k, dtype=torch.float64) - k // 2
        g = torch.exp(-0.5 * (r / std) ** 2)
        kernel = torch.outer(g, g)
        self.kernel = (kernel / kernel.sum()).to(torch.float32)
        self.row_norm2 = float((self.kernel**2).sum())

    def _conv(self, x: Tensor, flip: bool) -> Tensor:
        _check_image(x)
        c = x.shape[1]
        w = self.kernel.flip(0, 1) if flip else self.kernel
        w = w.to(dtype=x.dtype, device=x.device).expand(c, 1, *w.shape)
        return F.conv2d(x, w, padding=w.shape[-1] // 2, groups=c)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(x, flip=False)

    def adjoint(self, y: Tensor) -> Tensor:
        return self._conv(y, flip=True)


class SuperResolution(Operator):
    """A = average pooling by ``factor`` (y is (B, C, H/f, W/f)); Aᵀ spreads each value over its f×f block / f².

    The authors use an antialiased bicubic resizer; box averaging is the simplest exact-adjoint
    choice with the same role.
    """

    name = "super_resolution"

    def __init__(self, factor: int = 4, sigma_y: float = 0.05):
        super().__init__(sigma_y)
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = int(factor)
        self.row_norm2 = 1.0 / self.factor**2

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the factor {self.factor}")
        return F.avg_pool2d(x, self.factor)

    def adjoint(self, y: Tensor) -> Tensor:
        _check_image(y, "y")
        return F.interpolate(y, scale_factor=self.factor, mode="nearest") / self.factor**2

    def to_image(self, y: Tensor) -> Tensor:
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")


def repeat_observation(y: Tensor, operator: Operator, n: int) -> tuple[Tensor, Operator]:
    """y and the operator for n samples per observation, image-major (sample j of image b at b·n + j)."""
    return (y, operator) if n == 1 else (y.repeat_interleave(n, dim=0), operator.expand(n))


def conjugate_gradients(matvec: Callable[[Tensor], Tensor], r: Tensor, steps: int, floor: float = 0.0,
                        rtol: float = 0.0) -> tuple[Tensor, Tensor]:
    """C v = r by conjugate gradients from v = 0, per sample, for a covariance C = σ_y² I + A K Aᵀ in the range
    space (the likelihood's guidance, the decoder error's conditional mean): (v, sound (N, 1, ...) bool).

    At most ``steps`` steps; fewer where every sample's residual has fallen under ``rtol`` of its start.
    ``floor``: the smallest eigenvalue C may have (σ_y²); a direction with curvature pᵀ C p under half of
    ``floor`` pᵀ p (a Jacobian that is no covariance) or a non-finite v marks the sample unsound."""
    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.ndim - 1)))

    v, p, rr = torch.zeros_like(r), r.clone(), dot(r, r)
    sound = torch.ones_like(rr, dtype=torch.bool)
    stop = rr * rtol**2
    for _ in range(steps):
        # Checked only when asked (rtol > 0): the test syncs a GPU, and the guidance calls this every step.
        if rtol > 0 and bool((rr <= stop).all()):
            break
        ap = matvec(p)
        curvature = dot(p, ap)
        sound &= torch.isfinite(curvature) & (curvature >= 0.5 * floor * dot(p, p))
        step = rr / curvature.clamp_min(1e-30)
        v, r = v + step * p, r - step * ap
        rr_new = dot(r, r)
        p, rr = r + (rr_new / rr.clamp_min(1e-30)) * p, rr_new
    sound &= torch.isfinite(v).flatten(1).all(1).reshape(sound.shape)
    return v, sound


@dataclass
class OperatorConfig:
    """The observation model y = A x (+ σ_y ε): the one declaration of its settings.

    Args:
        name: "inpainting" (A = the keep mask), "blur" (Gaussian blur) or "super_resolution" (average pooling).
        sigma_y: observation noise std in [-1, 1] units: the likelihood's, and the noise added when ``add_noise``.
        blur_std: std of the blur kernel in pixels ("blur").
        blur_kernel_size: odd kernel size ("blur"); None = 2·ceil(3·blur_std) + 1.
        sr_factor: downsampling factor ("super_resolution").
        add_noise: add N(0, σ_y²) noise to A x when forming y (benchmarks on clean images); off for real photos.
    """

    name: Literal["inpainting", "blur", "super_resolution"] = "inpainting"
    sigma_y: float = 0.05
    blur_std: float = 3.0
    blur_kernel_size: int | None = None
    sr_factor: int = 4
    add_noise: bool = False

    def __post_init__(self):
        if self.name not in ("inpainting", "blur", "super_resolution"):
            raise ValueError(f"operator.name must be 'inpainting', 'blur' or 'super_resolution', got {self.name!r}")
        if self.sigma_y < 0:
            raise ValueError(f"operator.sigma_y must be >= 0, got {self.sigma_y}")
        if self.sigma_y == 0:
            warnings.warn("operator.sigma_y = 0: a noiseless likelihood is infinitely sharp; expect the fit to "
                          "struggle (0.01-0.05 is usual)", stacklevel=3)
        if not self.blur_std > 0:
            raise ValueError(f"operator.blur_std must be > 0, got {self.blur_std}")
        if self.blur_kernel_size is not None and (self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0):
            raise ValueError(f"operator.blur_kernel_size must be odd and >= 1 (or null), got {self.blur_kernel_size}")
        if self.sr_factor < 1:
            raise ValueError(f"operator.sr_factor must be >= 1, got {self.sr_factor}")


def make_operator(config: OperatorConfig, keep_mask: Tensor | None = None) -> Operator:
    """The operator ``config`` describes; inpainting needs the batch's keep_mask (B, 1, H, W)."""
    if config.name == "inpainting":
        if keep_mask is None:
            raise ValueError("the inpainting operator needs a keep_mask")
        return Inpainting(keep_mask, config.sigma_y)
    if config.name == "blur":
        return GaussianBlur(config.blur_std, config.blur_kernel_size, config.sigma_y)
    if config.name == "super_resolution":
        return SuperResolution(config.sr_factor, config.sigma_y)
    raise ValueError(f"unknown operator {config.name!r}; expected 'inpainting', 'blur' or 'super_resolution'")

r"""The autoencoder's own error as a stationary Gaussian field, and what the observation says about it
(docs/method.md §5.4).

A latent prior does not generate x = D(z_0) but x = D(z_0) + e: no decoder reproduces an image exactly. On the
shipped CIFAR-10 autoencoder e has RMS 0.113 in [-1, 1] units (25 dB), is correlated across channels (0.55-0.74)
and in space (0.41 at one pixel, 0.25-0.28 at the 4-pixel period of the latent cells). Modelled as a zero-mean
Gaussian field with a stationary (circulant) covariance Σ_e, the error is Gaussian given z_0 and the
observation y = A x + σ_y ε too, with the conditional mean

    E[e | z_0, y] = Σ_e Aᵀ (A Σ_e Aᵀ + σ_y² I)⁻¹ (y − A D(z_0))            (Gaussian conditioning)

so E[x | z_0, y] = D(z_0) + E[e | z_0, y]: where an observed pixel is off by the decoder's error, its hole
neighbours are off by a correlated amount, and the conditional mean removes it; it decays to 0 away from the
observed pixels. VIPaint's refiner returns it (``RefineConfig.decoder_error``).

========================  =========================================================================
symbol                    meaning
========================  =========================================================================
``e``                     x − D(E(x)), (N, C, H, W): the autoencoder's reconstruction error
``S(ω)``                  (C, C) cross-spectral density at each of the H×W frequencies (Hermitian,
                          positive semi-definite): E[ê(ω) ê(ω)ᴴ] / (H W), ê = fft2(e)
``kernel``                ifft2(S): the circular cross-covariance, (C, C, H, W), real; what is stored
``Σ_e v``                 ifft2(S(ω) fft2(v)(ω)): the circulant covariance applied to v, exact
``A``, ``σ_y``, valid     the observation operator, its noise std and valid entries (``operators.py``)
========================  =========================================================================

A circulant covariance is a valid covariance of any size-H×W image (its eigenvalues are those of S); the
wrap-around it implies between opposite borders is weak where the error's correlations are short.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .operators import Operator, conjugate_gradients

__all__ = ["DecoderError", "spectral_density"]


def spectral_density(errors: Tensor) -> Tensor:
    """S(ω) = mean over images of ê(ω) ê(ω)ᴴ / (H W), ê = fft2(e): (H, W, C, C) complex, Hermitian PSD at each ω."""
    if errors.ndim != 4:
        raise ValueError(f"errors must be (N, C, H, W), got shape {tuple(errors.shape)}")
    f = torch.fft.fft2(errors.double())
    return torch.einsum("nchw,ndhw->hwcd", f, f.conj()) / (errors.shape[0] * errors.shape[-2] * errors.shape[-1])


class DecoderError(nn.Module):
    """Σ_e from its circular cross-covariance ``kernel`` (C, C, H, W); a module, so it moves with its prior."""

    def __init__(self, kernel: Tensor):
        super().__init__()
        if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
            raise ValueError(f"the decoder-error kernel must be (C, C, H, W), got shape {tuple(kernel.shape)}")
        self.register_buffer("kernel", kernel.float())
        # S(ω), projected onto the PSD cone (it is PSD up to rounding when estimated by ``spectral_density``).
        s = torch.fft.fft2(kernel.double()).permute(2, 3, 0, 1)
        s = (s + s.conj().transpose(-1, -2)) / 2
        val, vec = torch.linalg.eigh(s)
        s = vec @ torch.diag_embed(val.clamp_min(0).to(vec.dtype)) @ vec.conj().transpose(-1, -2)
        self.register_buffer("spectrum", s.to(torch.complex64), persistent=False)

    @classmethod
    def estimate(cls, errors: Tensor) -> "DecoderError":
        """Σ_e measured on reconstruction errors e = x − D(E(x)) (N, C, H, W) of held-out images."""
        return cls(torch.fft.ifft2(spectral_density(errors).permute(2, 3, 0, 1)).real)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it describes."""
        return (self.kernel.shape[0], *self.kernel.shape[2:])

    @property
    def rms(self) -> float:
        """The error's RMS over channels: sqrt(mean_c Σ_e[c, c] at lag 0)."""
        return float(self.kernel[:, :, 0, 0].diagonal().mean().sqrt())

    def cov(self, v: Tensor) -> Tensor:
        """Σ_e v for v (B, C, H, W)."""
        if tuple(v.shape[1:]) != self.shape:
            raise ValueError(f"the decoder error was measured on {self.shape} images, not {tuple(v.shape[1:])}")
        fv = torch.fft.fft2(v.float())
        return torch.fft.ifft2(torch.einsum("hwcd,bdhw->bchw", self.spectrum, fv)).real.to(v.dtype)

    def conditional_mean(self, y: Tensor, x: Tensor, op: Operator, max_steps: int = 100,
                         rtol: float = 1e-4) -> Tensor:
        """E[e | z_0, y] = Σ_e Aᵀ (A Σ_e Aᵀ + σ_y² I)⁻¹ (y − A x) for decoded x = D(z_0) (N, C, H, W) and y matched
        to it; the inverse by conjugate gradients on the valid entries, per sample, until the residual falls
        under ``rtol`` of its start. σ_y = 0 gets a floor of 1e-3 (Σ_e may be singular)."""
        w = op.valid(y).expand_as(y).to(x.dtype)
        sigma2 = max(op.sigma_y, 1e-3) ** 2

        def matvec(u: Tensor) -> Tensor:
            return w * (op.forward(self.cov(op.adjoint(w * u))) + sigma2 * u)

        v, _ = conjugate_gradients(matvec, w * (y - op.forward(x)), max_steps, rtol=rtol)
        return self.cov(op.adjoint(w * v))

r"""A Gaussian data prior N(m, S) as a ``Prior``: every quantity VIPaint approximates is closed form.

With x_0 ~ N(m, S) (D = C·H·W elements, S a full D×D covariance) and z_t = α_t x_0 + σ_t ε:

==========================  ===========================================================================
``x̂_0(z_t)``                E[x_0 | z_t] = m + α_t S (α_t² S + σ_t² I)^{-1} (z_t - α_t m)
posterior given y           y = x_0[obs] + σ_y ε_y:  x_0 | y ~ N(m + S_{:o} G (y_o - m_o),
                            S - S_{:o} G S_{o:}),  G = (S_{oo} + σ_y² I)^{-1}
``log p(y)``                log N(y_o; m_o, S_{oo} + σ_y² I)
``sample_x0``               x_0 = m + L ε,  L Lᵀ = S (Cholesky),  ε ~ N(0, I)
==========================  ===========================================================================

Used by the tests as ground truth and by the docs (docs/method.md §3.3) as the simplest worked example.
Float64 inside: the solves involve σ_t² as small as 1e-4.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..prior import Prior
from ..schedule import NoiseSchedule

__all__ = ["GaussianPrior", "UpsampledGaussianPrior", "smooth_covariance"]


def smooth_covariance(height: int, width: int, std: float = 0.5, length_scale: float = 2.0, jitter: float = 1e-3) -> Tensor:
    """Squared-exponential covariance over pixel positions of an H×W image, (H·W, H·W) float64.

    Neighbouring pixels are strongly correlated, so observed pixels inform missing ones.
    """
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], dim=1)
    d2 = torch.cdist(pos, pos) ** 2
    return std**2 * (torch.exp(-0.5 * d2 / length_scale**2) + jitter * torch.eye(height * width, dtype=torch.float64))


class GaussianPrior(Prior):
    """Exact-denoiser prior for x_0 ~ N(mean, cov).

    Args:
        mean: (C, H, W) prior mean.
        cov: (D, D) covariance over the flattened (C, H, W) elements, symmetric positive definite.
        schedule: the VP schedule the "network" pretends to be trained on.
    """

    prediction_type = "sample"
    output_range = None  # a Gaussian is not confined to [-1, 1]; clamping would bias the moments

    def __init__(self, mean: Tensor, cov: Tensor, schedule: NoiseSchedule):
        shape = tuple(mean.shape)
        super().__init__(schedule, latent_shape=shape, image_shape=shape)
        d = mean.numel()
        if cov.shape != (d, d):
            raise ValueError(f"cov must be ({d}, {d}) for a mean of shape {shape}, got {tuple(cov.shape)}")
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("cov", cov.to(torch.float64))
        self.data_std = float(cov.diagonal().mean().sqrt())

    def network_output(self, z_t: Tensor, t: Tensor) -> Tensor:
        m, S = self.mean.flatten(), self.cov
        eye = torch.eye(S.shape[0], dtype=torch.float64, device=z_t.device)
        r = z_t.to(torch.float64).flatten(1)
        x0 = torch.empty_like(r)
        # One solve per distinct t with all its samples as right-hand sides: cheaper than a (B, D, D) batch, and
        # batched LU solves fail with more than one thread on some MKL builds (torch 2.14.1 CPU, seen 2026-12-03).
        for tv in torch.unique(t).tolist():
            rows = t == tv
            alpha = float(self.schedule.alpha(int(tv)))
            A = alpha**2 * S + (1.0 - alpha**2) * eye                       # α_t² S + σ_t² I
            x0[rows] = m + alpha * (S @ torch.linalg.solve(A, (r[rows] - alpha * m).T)).T
        return x0.reshape(z_t.shape).to(z_t.dtype)

    def sample_x0(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws x_0 ~ N(m, S), (n, C, H, W) float64: the data the tests observe. One row of ε per draw,
        so the first k draws from a seed are the same whatever n is."""
        L = torch.linalg.cholesky(self.cov)
        eps = torch.randn(n, L.shape[0], generator=generator, dtype=torch.float64)
        return (self.mean.flatten() + eps @ L.T).reshape(n, *self.latent_shape)

    def posterior(self, y: Tensor, keep_mask: Tensor, sigma_y: float) -> tuple[Tensor, Tensor]:
        """Exact p(x_0 | y) for inpainting with noise σ_y, for ONE image.

        Args: y (C,H,W), keep_mask (1,H,W) or (C,H,W) with 1 = observed.
        Returns: mean (C,H,W) and the full covariance (D, D), float64.
        """
        obs = keep_mask.expand_as(y).flatten().bool()
        m, S = self.mean.flatten(), self.cov
        S_oo = S[obs][:, obs] + sigma_y**2 * torch.eye(int(obs.sum()), dtype=torch.float64)
        S_ao = S[:, obs]
        gain = S_ao @ torch.linalg.inv(S_oo)
        mean = m + gain @ (y.flatten().to(torch.float64)[obs] - m[obs])
        cov = S - gain @ S_ao.T
        return mean.reshape(y.shape), cov

    def log_evidence(self, y: Tensor, keep_mask: Tensor, sigma_y: float) -> float:
        """log p(y) for inpainting: the density of the observed entries, log N(y_o; m_o, S_oo + σ_y² I)."""
        obs = keep_mask.expand_as(y).flatten().bool()
        m, S = self.mean.flatten()[obs], self.cov[obs][:, obs]
        cov = S + sigma_y**2 * torch.eye(int(obs.sum()), dtype=torch.float64)
        r = y.flatten().to(torch.float64)[obs] - m
        n = int(obs.sum())
        return float(-0.5 * (r @ torch.linalg.solve(cov, r) + torch.logdet(cov) + n * math.log(2 * math.pi)))


class UpsampledGaussianPrior(GaussianPrior):
    r"""A *latent* Gaussian prior z_0 ~ N(m, S) with a fixed linear decoder: D(z) = U z, nearest ×``factor``
    up-sampling, so one latent element decodes to factor² pixels (an f4 autoencoder's 4×4 cell, without its
    nonlinearity). ``encode`` is U's left inverse, f×f average pooling.

    Pixels x = U z_0 are Gaussian, N(U m, U S Uᵀ), so the posterior given pixel observations is closed form
    (``pixel_posterior``): the same problem posed in pixel space, against which guidance *through the
    decoder* is checked (tests/test_latent_guidance.py).
    """

    def __init__(self, mean: Tensor, cov: Tensor, schedule: NoiseSchedule, factor: int = 4):
        super().__init__(mean, cov, schedule)
        c, h, w = self.latent_shape
        self.factor = int(factor)
        self.image_shape = (c, h * self.factor, w * self.factor)

    @property
    def is_latent(self) -> bool:
        return True

    def encode(self, x: Tensor) -> Tensor:
        return torch.nn.functional.avg_pool2d(x, self.factor)

    def decode(self, z0: Tensor) -> Tensor:
        return torch.nn.functional.interpolate(z0, scale_factor=self.factor, mode="nearest")

    def decoder_matrix(self) -> Tensor:
        """U as a (pixels, latents) float64 matrix."""
        d = self.mean.numel()
        basis = torch.eye(d, dtype=torch.float64).reshape(d, *self.latent_shape)
        return self.decode(basis).reshape(d, -1).T

    def pixel_posterior(self, y: Tensor, keep_mask: Tensor, sigma_y: float) -> tuple[Tensor, Tensor]:
        """Exact p(x_0 | y) for pixel inpainting of ONE image, x_0 = U z_0: y (C, fH, fW), keep_mask (1, fH, fW).
        Returns the pixel mean (C, fH, fW) and covariance (P, P), float64."""
        obs = keep_mask.expand_as(y).flatten().bool()
        U, m, S = self.decoder_matrix(), self.mean.flatten(), self.cov
        H = U[obs]                                                         # A U on the observed pixels
        gain = S @ H.T @ torch.linalg.inv(H @ S @ H.T + sigma_y**2 * torch.eye(int(obs.sum()), dtype=torch.float64))
        z_mean = m + gain @ (y.flatten().to(torch.float64)[obs] - H @ m)
        z_cov = S - gain @ H @ S
        return (U @ z_mean).reshape(y.shape), U @ z_cov @ U.T

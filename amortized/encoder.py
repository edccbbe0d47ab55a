"""The amortized encoder: (encoded observation, keep_mask) -> VIPaint-K's λ = (μ, logvar, γ) per keypoint.

It works at the prior's latent resolution: inputs are z_y = E(Aᵀ-image of y) (C channels) and the
keep_mask resized to the latent grid (1 channel; all ones for blur/super-resolution), outputs are
3·K·C channels read as residuals on top of the hand-made initialisation
(``HierarchicalPosterior.initial_values``):

    λ = λ_init(z_y) + s ⊙ net(z_y, m),   the last convolution zero-initialised

so an untrained encoder reproduces the hand-made λ exactly and training starts from the baseline.
s is (scale_mu, scale_logvar, scale_gamma), so residual units stay comparable across the three groups.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AmortizedEncoder"]


class _ResBlock(nn.Module):
    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                  nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class AmortizedEncoder(nn.Module):
    """Args:
        latent_channels: C of the prior's latent. n_keypoints: K.
        width, depth: hidden channels and residual blocks (full resolution, then one downsampled stage).
        scale_mu, scale_logvar, scale_gamma: output scaling of the residuals per parameter group.
    """

    def __init__(self, latent_channels: int = 3, n_keypoints: int = 2, width: int = 64, depth: int = 2,
                 scale_mu: float = 1.0, scale_logvar: float = 0.5, scale_gamma: float = 2.0):
        super().__init__()
        self.latent_channels, self.n_keypoints = latent_channels, n_keypoints
        groups = min(8, width)
        self.stem = nn.Conv2d(latent_channels + 1, width, 3, padding=1)
        self.high = nn.Sequential(*[_ResBlock(width, groups) for _ in range(depth)])
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.low = nn.Sequential(*[_ResBlock(width, groups) for _ in range(depth)])
        self.out_norm = nn.GroupNorm(groups, width)
        self.out = nn.Conv2d(width, 3 * n_keypoints * latent_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("scales", torch.tensor([scale_mu, scale_logvar, scale_gamma]), persistent=False)

    def forward(self, z_y: Tensor, keep_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Residuals (Δμ, Δlogvar, Δγ), each (B, K, C, h, w), for z_y (B, C, h, w) and keep_mask (B, 1, H, W)."""
        m = F.interpolate(keep_mask.to(z_y.dtype), size=z_y.shape[-2:], mode="area")
        h = self.high(self.stem(torch.cat([z_y, m], dim=1)))
        low = self.low(self.down(h))
        h = h + F.interpolate(low, size=h.shape[-2:], mode="nearest")
        r = self.out(F.silu(self.out_norm(h)))
        B, (C, hh, ww) = z_y.shape[0], z_y.shape[1:]
        r = r.reshape(B, 3, self.n_keypoints, C, hh, ww) * self.scales.to(r.dtype).reshape(1, 3, 1, 1, 1, 1)
        return r[:, 0], r[:, 1], r[:, 2]

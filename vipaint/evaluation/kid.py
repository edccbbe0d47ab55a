r"""Kernel Inception Distance on the offline VGG16 backbone: how far a set of samples is from a set of real images.

KID (Bińkowski et al. 2018) is the unbiased estimate of the squared MMD between two feature sets under the
polynomial kernel k(a, b) = (aᵀb / d + 1)³:

    KID = 1/(m(m-1)) Σ_{i≠j} k(a_i, a_j) + 1/(n(n-1)) Σ_{i≠j} k(b_i, b_j) - 2/(mn) Σ_{i,j} k(a_i, b_j)

Unlike FID it is unbiased at small sample sizes (1,000 here), so its value at the floor (two sets of real images)
is about 0. Features: this project's offline backbone (no Inception weights ship offline), VGG16's relu5_3
(``lpips``' ``slice5``) after LPIPS' input scaling, images upsampled bilinearly to ``FEATURE_SIZE`` (32x32 images
would leave 2x2 cells at that depth), averaged over positions: 512 numbers per image.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from .perceptual import load_lpips

__all__ = ["vgg_features", "kid", "FEATURE_SIZE", "FEATURE_LAYER"]

FEATURE_SIZE = 64
FEATURE_LAYER = "VGG16 relu5_3, spatial mean (512)"


@torch.no_grad()
def vgg_features(x: Tensor, backbone_path: str | os.PathLike | None = None, batch: int = 200) -> Tensor:
    """(N, 512) features of images ``x`` (N, 3, H, W) in [-1, 1] (see the module docstring)."""
    model = load_lpips("vgg", backbone_path, device=x.device)
    out = []
    for i in range(0, x.shape[0], batch):
        h = F.interpolate(x[i:i + batch].float(), size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear",
                          align_corners=False)
        h = model.scaling_layer(h)
        for s in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
            h = s(h)
        out.append(h.mean(dim=(2, 3)))
    return torch.cat(out).double()


def kid(a: Tensor, b: Tensor) -> float:
    """The unbiased KID between feature sets ``a`` (m, d) and ``b`` (n, d), m, n >= 2 (module docstring)."""
    if a.shape[0] < 2 or b.shape[0] < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kid needs two feature sets of >= 2 rows and equal width, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    a, b = a.double(), b.double()
    d, m, n = a.shape[1], a.shape[0], b.shape[0]
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    return float((k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
                 + (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1)) - 2 * k_ab.mean())

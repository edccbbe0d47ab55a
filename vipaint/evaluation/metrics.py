"""Image-quality metrics for inpainting results: PSNR, SSIM, LPIPS, and compositing.

All images are float tensors ``(B, C, H, W)`` in ``[-1, 1]``; posterior samples are
``(B, N, C, H, W)`` (N samples per image); ``keep_mask`` is ``(B, 1, H, W)`` with
1 = observed pixel. Every metric returns one value per image, shape ``(B,)``.

How each metric treats ``[-1, 1]`` inputs:

=======================================  =================================  ===========================
metric                                   conversion of [-1, 1] inputs       formula / backend
=======================================  =================================  ===========================
``psnr``                                 none; data range (peak) = 2        ``10 log10(2^2 / MSE)``
``psnr(..., authors_convention=True)``   none; peak taken as 1              ``10 log10(1 / MSE)``
                                                                            (6.0206 dB lower)
``ssim``                                 ``(x + 1) / 2`` -> [0, 1],         torchmetrics SSIM, gaussian
                                         ``data_range=1.0``                 11x11 window, sigma 1.5,
                                                                            map averaged over the
                                                                            valid region (5-px
                                                                            border cropped)
``lpips_distance``                       none: lpips expects [-1, 1]        ``lpips.LPIPS`` with
                                                                            ``normalize=False``
=======================================  =================================  ===========================

PSNR note: the VIPaint authors compute ``10 log10(1 / MSE)`` directly on ``[-1, 1]`` images,
i.e. with a peak of 1 instead of the true data range 2, which reports values
``10 log10(4) = 6.0206`` dB *lower* than the standard definition. The default here is the
standard one; pass ``authors_convention=True`` to reproduce the authors' numbers.

:func:`composite` pastes the observed pixels back into samples; the benchmarks' one scoring function, built on
these, is ``vipaint.evaluation.scoring.score_inpainting`` (its sample diversity is an RMS in the hole).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from vipaint.evaluation.perceptual import load_lpips

__all__ = [
    "psnr",
    "psnr_from_mse",
    "ssim",
    "ssim_map",
    "lpips_distance",
    "composite",
    "SSIM_KERNEL_SIZE",
    "SSIM_SIGMA",
]

SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
_LPIPS_CHUNK = 64  # images per LPIPS forward pass (bounds memory for large B * N)


def _check_pair(x: Tensor, ref: Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape != ref.shape:
        raise ValueError(f"{name} expects x and ref of equal shape (B, C, H, W); got "
                         f"{tuple(x.shape)} and {tuple(ref.shape)}")


def _check_samples(samples: Tensor, name: str) -> None:
    if samples.dim() != 5:
        raise ValueError(f"{name} expects samples of shape (B, N, C, H, W); got "
                         f"{tuple(samples.shape)}")


def psnr(x: Tensor, ref: Tensor, authors_convention: bool = False) -> Tensor:
    """Per-image PSNR in dB, shape (B,): ``10 log10(peak^2 / MSE)`` over (C, H, W).

    ``peak`` is the data range of ``[-1, 1]``, i.e. 2. With ``authors_convention=True`` the
    peak is 1 (``10 log10(1 / MSE)`` on ``[-1, 1]``, as in the VIPaint code), 6.0206 dB lower.
    Identical images give ``inf``. Computed in float64, returned in ``x.dtype``.
    """
    _check_pair(x, ref, "psnr")
    mse = (x.double() - ref.double()).pow(2).flatten(1).mean(dim=1)
    return psnr_from_mse(mse, peak=1.0 if authors_convention else 2.0).to(x.dtype)


def psnr_from_mse(mse: Tensor, peak: float = 2.0) -> Tensor:
    """``10 log10(peak² / MSE)`` elementwise: the one PSNR formula (whole images here, the hole in ``scoring``)."""
    return 10.0 * torch.log10(peak**2 / mse)


def ssim(x: Tensor, ref: Tensor, crop_border: bool = True) -> Tensor:
    """Per-image SSIM, shape (B,), on images mapped to [0, 1] with ``(x + 1) / 2``.

    Uses ``torchmetrics.functional.image.structural_similarity_index_measure`` (gaussian
    11x11 window, sigma 1.5, data_range 1, K1 0.01, K2 0.03), averaged over pixels and
    channels. torchmetrics reflect-pads the images and averages the SSIM map over the whole
    image; with ``crop_border=True`` (default) the map is instead averaged over the valid
    region only (5-pixel border dropped), as in ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` and Wang et al.'s
    reference code. On 32x32 images the two differ by ~1e-3. ``crop_border=False`` gives
    torchmetrics' value unchanged (``reduction='none'``). Images smaller than the window in
    H or W raise ``ValueError``.
    """
    _check_pair(x, ref, "ssim")
    h, w = x.shape[-2:]
    if h < SSIM_KERNEL_SIZE or w < SSIM_KERNEL_SIZE:
        raise ValueError(f"ssim needs images of at least {SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE} "
                         f"pixels (the gaussian window), got {h}x{w}")
    if not crop_border:
        return _torchmetrics_ssim(x, ref).reshape(x.shape[0]).to(x.dtype)
    pad = (SSIM_KERNEL_SIZE - 1) // 2
    return ssim_map(x, ref)[..., pad:h - pad, pad:w - pad].flatten(1).mean(dim=1).to(x.dtype)


def ssim_map(x: Tensor, ref: Tensor) -> Tensor:
    """The SSIM map (B, C, H, W) behind ``ssim`` (same window and constants, reflect-padded by torchmetrics),
    for averages over a region (the hole, in ``scoring``)."""
    return _torchmetrics_ssim(x, ref, return_full_image=True)[1]


def _torchmetrics_ssim(x: Tensor, ref: Tensor, **kw):
    """torchmetrics' SSIM of images in [-1, 1] mapped to [0, 1], with this module's window and constants."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(((x + 1) / 2).float(), ((ref + 1) / 2).float(), gaussian_kernel=True,
                                               sigma=SSIM_SIGMA, kernel_size=SSIM_KERNEL_SIZE, data_range=1.0,
                                               reduction="none", **kw)


def lpips_distance(
    x: Tensor,
    ref: Tensor,
    net: str = "vgg",
    backbone_path: str | os.PathLike | None = None,
) -> Tensor:
    """Per-image LPIPS distance, shape (B,), with ``normalize=False`` (inputs in [-1, 1]).

    The model comes from :func:`vipaint.evaluation.perceptual.load_lpips` (cached, frozen, on
    ``x.device``); ``backbone_path`` is passed through (see that module for offline use).
    Gradients flow to the inputs.
    """
    _check_pair(x, ref, "lpips_distance")
    if x.shape[1] != 3:
        raise ValueError(f"LPIPS needs 3-channel images, got C={x.shape[1]}")
    if min(x.shape[-2:]) < 32:
        # The backbones pool by 16-32x: a smaller image has no spatial extent left in the deep layers.
        raise ValueError(f"LPIPS needs images of at least 32x32 pixels, got {x.shape[-2]}x{x.shape[-1]}")
    model = load_lpips(net, backbone_path, device=x.device)
    outs = [
        model(x[i:i + _LPIPS_CHUNK], ref[i:i + _LPIPS_CHUNK], normalize=False).reshape(-1)
        for i in range(0, x.shape[0], _LPIPS_CHUNK)
    ]
    return torch.cat(outs) if outs else x.new_zeros(0)


def composite(samples: Tensor, y_or_x: Tensor, keep_mask: Tensor) -> Tensor:
    """``keep_mask * y_or_x + (1 - keep_mask) * samples``: paste the observed pixels back.

    ``samples`` is (B, N, C, H, W) (or (B, C, H, W)); ``y_or_x`` (B, C, H, W) supplies the
    observed pixels (the observation y or the ground truth x: equal where observed);
    ``keep_mask`` (B, 1, H, W), 1 = observed. Image and mask are broadcast over the N dim.
    """
    if samples.dim() not in (4, 5):
        raise ValueError(f"composite expects samples (B, N, C, H, W) or (B, C, H, W); got "
                         f"{tuple(samples.shape)}")
    if y_or_x.dim() != 4 or y_or_x.shape != samples.shape[:1] + samples.shape[-3:]:
        raise ValueError(f"composite: y_or_x must be (B, C, H, W) = "
                         f"{tuple(samples.shape[:1] + samples.shape[-3:])}, got "
                         f"{tuple(y_or_x.shape)}")
    if keep_mask.dim() != 4 or keep_mask.shape[1] != 1 \
            or keep_mask.shape[2:] != y_or_x.shape[2:] \
            or keep_mask.shape[0] not in (1, y_or_x.shape[0]):
        raise ValueError(f"keep_mask must be (B, 1, H, W) = {(y_or_x.shape[0], 1, *y_or_x.shape[2:])}, "
                         f"got {tuple(keep_mask.shape)}")
    m = keep_mask.to(dtype=samples.dtype, device=samples.device)
    y = y_or_x.to(dtype=samples.dtype, device=samples.device)
    if samples.dim() == 5:
        m, y = m.unsqueeze(1), y.unsqueeze(1)
    return m * y + (1 - m) * samples

"""The benchmarks' one scoring function for restoration samples: every method is scored by ``score_inpainting``
(inpainting; deblurring and super-resolution score the whole image as the hole, ``observe`` for consistency).

Inputs: ``samples`` (B, N, C, H, W) raw samples in [-1, 1], ground truth ``x`` (B, C, H, W), observation
``y`` (B, C, H, W, the observed pixels of x plus noise), ``keep_mask`` (B, 1, H, W), 1 = observed.
Every score is per image, (B,):

=====================  =================================================================================
``plausibility_mean``  fraction of the N composited samples that ``classify`` labels as ``labels``
                       (a digit classifier for MNIST: "is the completion the right digit?")
``plausibility_best``  1 if any of the N samples is labelled correctly (best-of-N)
``psnr_hole``          PSNR (data range 2) over the missing pixels only, mean over samples
``ssim_hole``          SSIM map of the composited sample (gaussian 11x11, σ 1.5, reflect-padded) averaged
                       over the missing pixels, mean over samples
``lpips_mean/_best``   LPIPS of the composited samples to x, mean / min over samples; images smaller than
                       64 px are upsampled (bilinear) to 64 and grey is replicated to 3 channels first
                       (LPIPS backbones pool by 16-32x: 28x28 would leave nothing in the deep layers)
``diversity_hole``     mean pairwise RMS distance between the N samples over the missing pixels
``consistency_rms``    RMS of (raw sample - y) over the observed pixels, mean over samples: how tightly
                       the sample itself, before compositing, agrees with what was observed; for other
                       operators (``observe``, with an all-zero ``keep_mask``: every pixel is unknown) the RMS
                       of observe(sample) - y over the whole image
``energy_score``       the energy score of the N samples in the hole (RMS units; ``evaluation.proper``): a
                       proper scoring rule, lower is better; rewards spread only where the truth is uncertain
``pit_coverage_*``     share of hole pixels (_50, _90) whose randomised PIT among the samples lies in the central
                       50% / 90% (``evaluation.proper``): 0.5 / 0.9 when calibrated, for any N, pixels where truth
                       and all samples tie left out (NaN for an image with none; rows average with nanmean).
                       Values at the clamp (|v| >= 0.98, as ``saturated_hole``) count as exactly at it, in
                       truth and samples alike (``at_ends``)
``saturated_hole``     share of the missing pixels' values within 0.02 of the range's ends (|x| >= 0.98),
                       mean over samples: the symptom of guidance pushed past what the prior knows
=====================  =================================================================================
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch import Tensor

from .metrics import composite, lpips_distance, psnr_from_mse, ssim_map
from .perceptual import lpips_ready
from .proper import coverage, energy_score

__all__ = ["score_inpainting", "at_ends"]

SATURATED = 0.98   # |x| at or above this counts as at the clamp


def at_ends(v: Tensor) -> Tensor:
    """``v`` with values at the clamp (|v| >= ``SATURATED``) set to exactly ±1, for the coverage: MNIST's background
    is −1 in truth and −0.99 in samples, and the PIT would put every such pixel's truth below all samples. A
    monotone map, applied to truth and samples alike, keeps a calibrated sampler calibrated."""
    return torch.where(v.abs() >= SATURATED, v.sign(), v)


@torch.no_grad()
def score_inpainting(samples: Tensor, x: Tensor, y: Tensor, keep_mask: Tensor,
                     classify: Callable[[Tensor], Tensor] | None = None, labels: Tensor | None = None,
                     lpips_net: str | None = "alex", lpips_backbone: str | os.PathLike | None = None,
                     observe: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """Score N samples per image (module docstring); ``classify`` maps (M, C, H, W) images to (M,) labels.
    ``lpips_net=None`` skips LPIPS. ``observe``: for deblurring or super-resolution, the observation of an image
    batch (M, C, H, W) as an image like ``y`` (``Operator.to_image(Operator.forward(.))``); None: inpainting."""
    if samples.dim() != 5 or samples.shape[0] != x.shape[0] or samples.shape[2:] != x.shape[1:]:
        raise ValueError(f"samples must be (B, N, C, H, W) matching x {tuple(x.shape)}, got {tuple(samples.shape)}")
    B, N = samples.shape[:2]
    samples, x, y, keep = samples.float(), x.float(), y.float(), keep_mask.float()
    comp = composite(samples, x, keep)                               # (B, N, C, H, W)
    hole = (1 - keep).unsqueeze(1).expand_as(samples)                # (B, N, C, H, W)
    obs = 1 - hole
    n_hole = hole.flatten(2).sum(2).clamp_min(1)                     # (B, N)
    n_obs = obs.flatten(2).sum(2).clamp_min(1)
    se = (samples - x.unsqueeze(1)) ** 2
    mse_hole = (se * hole).flatten(2).sum(2) / n_hole
    out = {"psnr_hole": psnr_from_mse(mse_hole.clamp_min(1e-10)).mean(1)}
    flat = comp.reshape(B * N, *comp.shape[2:])
    refs = x.unsqueeze(1).expand_as(comp).reshape(B * N, *x.shape[1:])
    smap = ssim_map(flat, refs).reshape(B, N, *x.shape[1:])
    out["ssim_hole"] = ((smap * hole).flatten(2).sum(2) / n_hole).mean(1)
    if observe is None:
        consistency = ((samples - y.unsqueeze(1)) ** 2 * obs).flatten(2).sum(2) / n_obs
    else:
        seen = observe(samples.reshape(B * N, *samples.shape[2:])).reshape(B, N, *y.shape[1:])
        consistency = ((seen - y.unsqueeze(1)) ** 2).flatten(2).mean(2)
    out["consistency_rms"] = consistency.sqrt().mean(1)
    out["saturated_hole"] = (((samples.abs() >= SATURATED) * hole).flatten(2).sum(2) / n_hole).mean(1)
    if N >= 2:
        i, j = torch.triu_indices(N, N, offset=1)
        d2 = ((samples[:, i] - samples[:, j]) ** 2 * hole[:, i]).flatten(2).sum(2) / n_hole[:, i]
        out["diversity_hole"] = d2.sqrt().mean(1)
        out["energy_score"] = energy_score(samples, x, 1 - keep)
        ends, x_ends = at_ends(samples), at_ends(x)
        out["pit_coverage_50"] = coverage(ends, x_ends, 1 - keep, 0.5)
        out["pit_coverage_90"] = coverage(ends, x_ends, 1 - keep, 0.9)
    if classify is not None:
        if labels is None:
            raise ValueError("plausibility needs the true labels")
        pred = classify(flat).reshape(B, N)
        correct = (pred == labels.to(pred.device).reshape(B, 1)).float()
        out["plausibility_mean"] = correct.mean(1)
        out["plausibility_best"] = correct.max(1).values
    if lpips_net is not None:
        lp = lpips_distance(lpips_ready(flat), lpips_ready(refs), net=lpips_net, backbone_path=lpips_backbone)
        lp = lp.reshape(B, N)
        out["lpips_mean"], out["lpips_best"] = lp.mean(1), lp.min(1).values
    return out

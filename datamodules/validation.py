"""Validation of one (image, keep_mask) item before it reaches a model.

Conventions: images are float ``(C, H, W)`` in [-1, 1]; ``keep_mask`` is
float ``(1, H, W)`` with **1 = observed, 0 = missing**.

Every problem raises ``ValueError`` naming the item, because a bad file in a
folder of hundreds is otherwise hard to find.

Decisions:

* **Non-binary masks are thresholded at 0.5** (values >= 0.5 count as
  observed) with a ``warnings.warn`` that names the item and the fraction of
  non-binary values. Anti-aliased or JPEG-compressed mask files are common,
  and rejecting them would be unhelpful; silently thresholding would hide a
  mask that is really a soft weight map.
* **Channel adaptation** (only when the caller asks for ``channels``): a
  1-channel image is repeated to 3 channels and a 4-channel (RGBA) image
  drops its alpha, both with a logged warning. Any other mismatch
  (e.g. a 2-channel grey+alpha image for an RGB prior) is an error.
"""

from __future__ import annotations

import logging
import warnings

import torch

__all__ = ["adapt_channels", "check_image_and_mask", "check_image"]

log = logging.getLogger(__name__)

# bicubic resampling and float round trips overshoot [-1, 1] by a hair; only
# clearly out-of-range data (e.g. [0, 255]) should be an error.
_RANGE_TOLERANCE = 1e-2


def adapt_channels(x: torch.Tensor, channels: int | None, name: str) -> torch.Tensor:
    """Return ``x`` with ``channels`` channels, converting only the safe cases."""
    if x.ndim != 3:
        raise ValueError(f"image '{name}' must have shape (C, H, W), got {tuple(x.shape)}")
    have = x.shape[0]
    if channels is None or have == channels:
        return x
    if channels == 3 and have == 1:
        log.warning("image '%s' is grayscale; repeating it to 3 channels", name)
        return x.expand(3, -1, -1).clone()
    if channels == 3 and have == 4:
        log.warning("image '%s' is RGBA; dropping the alpha channel", name)
        return x[:3].clone()
    raise ValueError(
        f"image '{name}' has {have} channel(s) but {channels} are expected "
        f"(only grayscale->RGB and RGBA->RGB are converted automatically)"
    )


def check_image(x: torch.Tensor, name: str, channels: int | None = None) -> torch.Tensor:
    """Validate one image tensor: shape, finiteness, value range, channel count."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"image '{name}' must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"image '{name}' must have shape (C, H, W), got {tuple(x.shape)}")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"image '{name}' is empty: shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"image '{name}' contains {bad} NaN/inf value(s)")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"image '{name}' has values in [{lo:.3g}, {hi:.3g}] but images must be in [-1, 1]"
        )
    return adapt_channels(x.clamp(-1.0, 1.0), channels, name)


def _check_mask(keep_mask: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(keep_mask, torch.Tensor):
        raise ValueError(f"mask for '{name}' must be a torch.Tensor, got {type(keep_mask).__name__}")
    if keep_mask.ndim == 2:
        keep_mask = keep_mask.unsqueeze(0)
    if keep_mask.ndim != 3 or keep_mask.shape[0] != 1:
        raise ValueError(
            f"mask for '{name}' must have shape (1, H, W) or (H, W), got {tuple(keep_mask.shape)}"
        )
    keep_mask = keep_mask.to(torch.float32)
    if not torch.isfinite(keep_mask).all():
        raise ValueError(f"mask for '{name}' contains NaN/inf values")
    lo, hi = float(keep_mask.min()), float(keep_mask.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"mask for '{name}' has values in [{lo:.3g}, {hi:.3g}] but must be in [0, 1] "
            f"(1 = observed, 0 = missing)"
        )
    non_binary = ((keep_mask != 0) & (keep_mask != 1)).float().mean().item()
    if non_binary > 0:
        warnings.warn(
            f"mask for '{name}' is not binary ({non_binary:.1%} of values are neither 0 nor 1); "
            f"thresholding at 0.5",
            stacklevel=3,
        )
        keep_mask = (keep_mask >= 0.5).to(torch.float32)
    return keep_mask


def check_image_and_mask(
    x: torch.Tensor,
    keep_mask: torch.Tensor,
    name: str,
    channels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one item and return ``(x, keep_mask)`` as float32 ``(C,H,W)``, ``(1,H,W)``.

    Raises ``ValueError`` (naming ``name``) for: wrong shapes, mask/image size
    mismatch, unsupported channel counts, NaN/inf or out-of-range values, a
    mask with nothing observed, and a mask with nothing missing.
    """
    x = check_image(x, name, channels)
    keep_mask = _check_mask(keep_mask, name)
    (h, w), (mh, mw) = x.shape[1:], keep_mask.shape[1:]
    if (mh, mw) != (h, w):
        raise ValueError(f"mask {mh}x{mw} does not match image {h}x{w} (HxW) for '{name}'")
    observed = int(keep_mask.sum())
    if observed == 0:
        raise ValueError(
            f"mask for '{name}' has nothing observed (all 0; 1 = observed, 0 = missing): "
            f"there is nothing to condition on"
        )
    if observed == keep_mask.numel():
        raise ValueError(
            f"mask for '{name}' has nothing missing (all 1; 1 = observed, 0 = missing): "
            f"there is nothing to inpaint"
        )
    return x, keep_mask

"""Reading image and mask files with PIL.

* ``read_image`` returns float ``(C, H, W)`` in [-1, 1] with the file's own
  channel count (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) unless ``channels`` is
  given, in which case :func:`datamodules.validation.adapt_channels` applies.
* ``read_mask`` returns float ``(1, H, W)`` in [0, 1]. **Mask file
  convention: white (255) = observed / keep, black (0) = missing.** So a
  mask painted white over the hole must be inverted before use. Modes 'L',
  '1', 'RGB' (channels averaged), 'P' and 16-bit grey are accepted; an alpha
  channel is ignored. Grey levels are kept as they are; thresholding (with a
  warning) happens in :func:`datamodules.validation.check_image_and_mask`.
* EXIF orientation is applied to both, so a photo and its mask line up the
  way image viewers show them.

Any file that cannot be decoded raises ``ValueError("cannot read image
{path}: {reason}")``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .validation import adapt_channels

__all__ = ["IMAGE_EXTENSIONS", "read_image", "read_mask", "pil_to_unit_tensor"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")


def pil_to_unit_tensor(image: Image.Image, where: str) -> torch.Tensor:
    """PIL image -> float ``(C, H, W)`` in [0, 1], keeping the channel count."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode in _TO_RGB:
        image = image.convert("RGB")
    elif mode == "1":
        image = image.convert("L")
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        array = np.asarray(image, dtype=np.float32) / 255.0
    elif mode in _SIXTEEN_BIT:
        array = np.asarray(image).astype(np.float32)
        if array.min() < 0 or array.max() > 65535:
            raise ValueError(f"cannot read image {where}: integer values outside 16-bit range")
        array = array / 65535.0
    else:
        raise ValueError(f"cannot read image {where}: unsupported PIL mode {mode!r}")
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _load(path: str | Path) -> Image.Image:
    path = Path(path)
    try:
        with Image.open(path) as image:
            # load() forces a full decode, so truncated files fail here and not
            # later inside a model.
            image.load()
            return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ValueError(f"cannot read image {path}: file does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"cannot read image {path}: it is a directory") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports corrupt files through all three (UnidentifiedImageError
        # is an OSError).
        reason = str(error) or type(error).__name__
        raise ValueError(f"cannot read image {path}: {reason}") from None


def read_image(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """Read an image file as float ``(C, H, W)`` in [-1, 1]."""
    x = pil_to_unit_tensor(_load(path), str(path)) * 2.0 - 1.0
    return adapt_channels(x, channels, Path(path).name)


def read_mask(path: str | Path) -> torch.Tensor:
    """Read a mask file as float ``(1, H, W)`` in [0, 1]; white = observed."""
    m = pil_to_unit_tensor(_load(path), str(path))
    if m.shape[0] in (2, 4):
        m = m[:-1]
    if m.shape[0] == 3:
        m = m.mean(dim=0, keepdim=True)
    return m

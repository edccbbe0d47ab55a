"""Sheets a person can read: images in a grid with column titles and row names burned in, the one layout of
TensorBoard's image grids (``tensorboard.log_grid``) and the run's ``overview.png`` (``writer.write_overview``).

Columns of a result: observation | samples (observed pixels pasted back for inpainting) | mean | std | input
(the image the observation was made from: the ground truth where the run has one).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..atomic import to_uint8
from .results import ImageResult

__all__ = ["titled_sheet", "result_row", "result_titles", "STD_SCALE"]

# The std column maps std / STD_SCALE, clipped to [0, 1], to black..white. The scale is FIXED (not the per-image
# max) so that std maps are comparable across images and runs: in [-1, 1] units a std of 1 is half the range,
# a completely uncertain pixel, and shows white; an observed pixel (std 0) is black.
STD_SCALE = 1.0
_MIN_SIDE = 96     # small images (28x28 digits) are upscaled (nearest) to at least this many pixels


def std_image(std: torch.Tensor) -> torch.Tensor:
    """The std map (1, H, W) in [-1, 1] units for display: mean over channels, / STD_SCALE, clipped."""
    return (std.clamp_min(0).mean(dim=0, keepdim=True) / STD_SCALE).clamp(0, 1) * 2.0 - 1.0


def result_titles(n_samples: int, composite: bool) -> list[str]:
    word = "composite" if composite else "sample"
    return ["observation", *[f"{word} {i + 1}" for i in range(n_samples)], "mean", "std", "input"]


def result_row(r: ImageResult) -> list[torch.Tensor]:
    """The columns of ``result_titles`` for one finished image, each (C, H, W) in [-1, 1]."""
    return [r.y_image, *r.shown, r.mean, std_image(r.std), r.x]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def titled_sheet(rows: Sequence[Sequence[torch.Tensor | np.ndarray | Image.Image]], col_titles: Sequence[str],
                 row_titles: Sequence[str], pad: int = 4) -> Image.Image:
    """One RGB image: ``rows`` of equally sized cells ((C, H, W) tensors in [-1, 1], uint8 arrays or PIL images),
    ``col_titles`` above the columns and ``row_titles`` left of the rows."""
    cells = [[_as_pil(c) for c in row] for row in rows]
    w, h = cells[0][0].size
    scale = max(1, -(-_MIN_SIDE // min(w, h)))
    w, h = w * scale, h * scale
    font = _font(12)
    title_h, label_w = 18, max(60, 7 * max((len(t) for t in row_titles), default=0) + 8)
    cols = max(len(r) for r in cells)
    sheet = Image.new("RGB", (label_w + cols * (w + pad) + pad, title_h + len(cells) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(col_titles[:cols]):
        draw.text((label_w + pad + j * (w + pad), 3), title, fill="black", font=font)
    for i, row in enumerate(cells):
        top = title_h + pad + i * (h + pad)
        draw.text((4, top + h // 2 - 6), row_titles[i] if i < len(row_titles) else "", fill="black", font=font)
        for j, cell in enumerate(row):
            sheet.paste(cell.convert("RGB").resize((w, h), Image.NEAREST), (label_w + pad + j * (w + pad), top))
    return sheet


def _as_pil(cell) -> Image.Image:
    if isinstance(cell, Image.Image):
        return cell
    if isinstance(cell, torch.Tensor):
        cell = to_uint8(cell)
    arr = np.asarray(cell)
    return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)

"""The per-image result of one inference step: what ``module.VIPaintModule`` returns and ``writer.VIPaintWriter``
writes. Typed, so the writer trusts it instead of validating a dict again.

``status`` is ``OK``, or ``SKIPPED`` (finished by an earlier run with the same settings: the writer leaves its
folder untouched), or a one-sentence reason the image failed (bad file, wrong size, a NaN in the fit).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..evaluation.metrics import composite

__all__ = ["ImageResult", "OK", "SKIPPED"]

OK, SKIPPED = "ok", "skipped"


@dataclass
class ImageResult:
    """One image: samples (N, C, H, W), mean/std/y_image (C, H, W) on the CPU in [-1, 1] (std: its own units),
    keep_mask (1, H, W) for inpainting, x the ground truth where the run knows it (test mode, benchmarks);
    tensors are None unless ``status == OK``. bound: the terms of the bound; meta: how it was made."""

    name: str
    status: str = OK
    samples: Tensor | None = None
    mean: Tensor | None = None
    std: Tensor | None = None
    y_image: Tensor | None = None
    keep_mask: Tensor | None = None
    x: Tensor | None = None
    bound: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def shown(self) -> Tensor:
        """The samples as written and shown, (N, C, H, W): for inpainting the composites (observed pixels of y pasted
        back, ``evaluation.metrics.composite``: exact there), else the samples themselves."""
        if self.keep_mask is None:
            return self.samples
        return composite(self.samples[None], self.y_image[None], self.keep_mask[None])[0]

"""Seeded inpainting mask generators.

Every generator is a small class whose ``__init__`` is fully typed (so
LightningCLI / jsonargparse can build it from a config) and whose
``__call__(size, generator)`` returns a float ``keep_mask`` of shape
``(1, H, W)`` with **1 = observed, 0 = missing**.

Guarantees shared by all generators:

* Deterministic: the only randomness comes from the ``torch.Generator``
  passed in, so the same seed always gives the same mask.
* Never degenerate: at least one observed and one missing pixel, because a
  mask with nothing missing has nothing to inpaint and a mask with nothing
  observed gives the posterior nothing to condition on.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence

import torch

__all__ = [
    "MaskGenerator",
    "BoxMask",
    "RandomBoxesMask",
    "HalfMask",
    "StrokesMask",
    "RandomPixelsMask",
    "CheckerboardMask",
    "MixedMask",
    "Mix4Mask",
    "PRESETS",
    "MIX4",
    "MASKS",
    "mask_from_name",
    "make_mask",
]


def _check_ratio(value: float, what: str) -> float:
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{what} must be strictly between 0 and 1, got {value}")
    return float(value)


def _check_range(min_ratio: float, max_ratio: float) -> tuple[float, float]:
    lo = _check_ratio(min_ratio, "min_ratio")
    hi = _check_ratio(max_ratio, "max_ratio")
    if lo > hi:
        raise ValueError(f"min_ratio ({lo}) must not exceed max_ratio ({hi})")
    return lo, hi


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator).item())


def _count_bounds(n: int, min_ratio: float, max_ratio: float, h: int, w: int) -> tuple[int, int]:
    """Smallest and largest missing-pixel counts that respect the ratio range."""
    # The epsilon keeps e.g. 0.3 * 100 from rounding up to 31 through float error.
    need = max(1, math.ceil(min_ratio * n - 1e-9))
    cap = min(n - 1, math.floor(max_ratio * n + 1e-9))
    if need > cap:
        raise ValueError(
            f"no {h}x{w} mask has a missing ratio in [{min_ratio}, {max_ratio}] "
            f"with at least one observed and one missing pixel; widen the range"
        )
    return need, cap


def _draw_target(need: int, cap: int, n: int, min_ratio: float, max_ratio: float, generator) -> int:
    """Missing count to aim for, uniform over the range so ratios spread across it."""
    target = math.ceil(_uniform(min_ratio, max_ratio, generator) * n - 1e-9)
    return min(max(target, need), cap)


def _fill_to(missing: torch.Tensor, need: int, generator: torch.Generator) -> torch.Tensor:
    """Mark random observed pixels missing until ``need`` are missing.

    Only reached when rejection sampling ran out of tries; it keeps the
    ratio guarantee at the cost of a few scattered pixels.
    """
    flat = missing.flatten().clone()
    short = need - int(flat.sum())
    if short > 0:
        observed = torch.nonzero(~flat).squeeze(1)
        order = torch.randperm(observed.numel(), generator=generator)
        flat[observed[order[:short]]] = True
    return flat.view_as(missing)


class MaskGenerator:
    """Base class: subclasses implement ``_missing(h, w, generator)``."""

    def __call__(self, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        if len(size) != 2:
            raise ValueError(f"mask size must be (H, W), got {tuple(size)}")
        h, w = int(size[0]), int(size[1])
        if h < 1 or w < 1 or h * w < 2:
            raise ValueError(f"mask size must have at least 2 pixels, got {h}x{w}")
        missing = self._missing(h, w, generator).to(torch.bool)
        missing = self._ensure_not_degenerate(missing, generator)
        return (~missing).to(torch.float32).unsqueeze(0)

    def _missing(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _ensure_not_degenerate(missing: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flat = missing.flatten().clone()
        n_missing = int(flat.sum())
        if 0 < n_missing < flat.numel():
            return missing
        # Flipping one random pixel is the smallest change that restores both classes.
        pick = _randint(0, flat.numel() - 1, generator)
        flat[pick] = n_missing == 0
        return flat.view_as(missing)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class BoxMask(MaskGenerator):
    """Centred box covering ``ratio`` of the image, with the image's aspect ratio."""

    def __init__(self, ratio: float = 0.5) -> None:
        self.ratio = _check_ratio(ratio, "BoxMask ratio")

    def _missing(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        target = self.ratio * h * w
        bh = min(h, max(1, round(h * math.sqrt(self.ratio))))
        # Picking the width from the rounded height keeps the area closer to the
        # target than rounding both sides independently.
        bw = min(w, max(1, round(target / bh)))
        top, left = (h - bh) // 2, (w - bw) // 2
        missing = torch.zeros(h, w, dtype=torch.bool)
        missing[top : top + bh, left : left + bw] = True
        return missing


class RandomBoxesMask(MaskGenerator):
    """Random rectangles added until the missing ratio reaches [min_ratio, max_ratio].

    A box that would push the ratio above ``max_ratio`` is rejected and
    another is drawn, for at most ``max_tries`` draws.
    """

    def __init__(
        self,
        min_ratio: float = 0.3,
        max_ratio: float = 0.7,
        min_box_frac: float = 0.1,
        max_box_frac: float = 0.5,
        max_tries: int = 200,
    ) -> None:
        self.min_ratio, self.max_ratio = _check_range(min_ratio, max_ratio)
        if not 0.0 < min_box_frac <= max_box_frac <= 1.0:
            raise ValueError(
                f"need 0 < min_box_frac <= max_box_frac <= 1, got {min_box_frac}, {max_box_frac}"
            )
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.min_box_frac, self.max_box_frac = float(min_box_frac), float(max_box_frac)
        self.max_tries = int(max_tries)

    def _missing(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        need, cap = _count_bounds(h * w, self.min_ratio, self.max_ratio, h, w)
        need = _draw_target(need, cap, h * w, self.min_ratio, self.max_ratio, generator)
        missing = torch.zeros(h, w, dtype=torch.bool)
        count = 0
        for _ in range(self.max_tries):
            if count >= need:
                break
            bh = _randint(max(1, round(self.min_box_frac * h)), max(1, round(self.max_box_frac * h)), generator)
            bw = _randint(max(1, round(self.min_box_frac * w)), max(1, round(self.max_box_frac * w)), generator)
            top, left = _randint(0, h - bh, generator), _randint(0, w - bw, generator)
            candidate = missing.clone()
            candidate[top : top + bh, left : left + bw] = True
            new_count = int(candidate.sum())
            if new_count <= cap:
                missing, count = candidate, new_count
        return _fill_to(missing, need, generator)


class HalfMask(MaskGenerator):
    """Half-plane through the image centre is missing (about 50% of pixels).

    ``angle`` (degrees, counter-clockwise from "right", y pointing up) is the
    direction of the missing side: 0 = right half, 90 = top half. ``None``
    draws it uniformly from [0, 360) for every mask.
    """

    def __init__(self, angle: float | None = None) -> None:
        self.angle = None if angle is None else float(angle)

    def _missing(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        angle = _uniform(0.0, 360.0, generator) if self.angle is None else self.angle
        theta = math.radians(angle)
        ys = torch.arange(h, dtype=torch.float64) + 0.5 - h / 2
        xs = torch.arange(w, dtype=torch.float64) + 0.5 - w / 2
        # Rows grow downwards, so "up" is -y in pixel coordinates.
        side = xs[None, :] * math.cos(theta) - ys[:, None] * math.sin(theta)
        return side > 1e-9


class StrokesMask(MaskGenerator):
    """Free-form brush strokes: thick random walks, until the ratio is in range.

    Strokes are drawn segment by segment; a segment that would push the ratio
    above ``max_ratio`` ends its stroke. At most ``max_tries`` segments are
    proposed per mask.
    """

    def __init__(
        self,
        min_ratio: float = 0.2,
        max_ratio: float = 0.5,
        max_width_frac: float = 0.1,
        max_vertices: int = 8,
        max_tries: int = 400,
    ) -> None:
        self.min_ratio, self.max_ratio = _check_range(min_ratio, max_ratio)
        if not 0.0 < max_width_frac <= 1.0:
            raise ValueError(f"max_width_frac must be in (0, 1], got {max_width_frac}")
        if max_vertices < 2:
            raise ValueError(f"max_vertices must be >= 2, got {max_vertices}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.max_width_frac = float(max_width_frac)
        self.max_vertices = int(max_vertices)
        self.max_tries = int(max_tries)

    @staticmethod
    def _segment(ys, xs, p0, p1, radius: float) -> torch.Tensor:
        (y0, x0), (y1, x1) = p0, p1
        dy, dx = y1 - y0, x1 - x0
        length2 = dy * dy + dx * dx
        if length2 == 0.0:
            t = torch.zeros_like(ys * xs)
        else:
            t = (((ys - y0) * dy + (xs - x0) * dx) / length2).clamp(0.0, 1.0)
        dist2 = (ys - (y0 + t * dy)) ** 2 + (xs - (x0 + t * dx)) ** 2
        return dist2 <= radius * radius

    def _missing(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        need, cap = _count_bounds(h * w, self.min_ratio, self.max_ratio, h, w)
        need = _draw_target(need, cap, h * w, self.min_ratio, self.max_ratio, generator)
        side = min(h, w)
        ys = torch.arange(h, dtype=torch.float32)[:, None]
        xs = torch.arange(w, dtype=torch.float32)[None, :]
        missing = torch.zeros(h, w, dtype=torch.bool)
        count, tries = 0, 0
        while count < need and tries < self.max_tries:
            width = _randint(1, max(1, round(self.max_width_frac * side)), generator)
            # Below ~0.75 px a short diagonal segment can miss every pixel centre.
            radius = max(width / 2, 0.75)
            point = (_uniform(0, h - 1, generator), _uniform(0, w - 1, generator))
            heading = _uniform(0.0, 2 * math.pi, generator)
            for _ in range(_randint(1, self.max_vertices - 1, generator)):
                tries += 1
                heading += _uniform(-math.pi / 2, math.pi / 2, generator)
                step = _uniform(0.05, 0.3, generator) * side
                nxt = (
                    min(max(point[0] + step * math.sin(heading), 0.0), h - 1.0),
                    min(max(point[1] + step * math.cos(heading), 0.0), w - 1.0),
                )
                candidate = missing | self._segment(ys, xs, point, nxt, radius)
                new_count = int(candidate.sum())
                if new_count > cap:
                    break
                missing, count, point = candidate, new_count, nxt
                if count >= need or tries >= self.max_tries:
                    break
        return _fill_to(missing, need, generator)


class RandomPixelsMask(MaskGenerator):
    """Each pixel is missing independently with probability ``ratio``."""

    def __init__(self, ratio: float = 0.5) -> None:
        self.ratio = _check_ratio(ratio, "RandomPixelsMask ratio")

    def _missing(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(h, w, generator=generator) < self.ratio


# Named settings of the generators above: the benchmark's masks (bench/compare.py) and the mixes built from
# them, declared once so training and evaluation draw from the same definitions.
class CheckerboardMask(MaskGenerator):
    """Every other square block of a checkerboard missing (about half the pixels): a family no training mix here
    holds, to ask how far a model trained on given mask families carries. ``block``: pixels per block side; the
    board's phase (which blocks are missing) is drawn per call."""

    def __init__(self, block: int = 7) -> None:
        if int(block) < 1:
            raise ValueError(f"block must be >= 1 pixel, got {block}")
        self.block = int(block)

    def _missing(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        phase = _randint(0, 1, generator)
        rows, cols = torch.arange(h) // self.block, torch.arange(w) // self.block
        return (rows[:, None] + cols[None, :] + phase) % 2 == 1


PRESETS: dict[str, MaskGenerator] = {
    "half": HalfMask(angle=270.0),  # bottom half
    "half_any": HalfMask(),  # a half-plane at a random angle
    "box50": BoxMask(0.5),
    "strokes": StrokesMask(0.2, 0.5),
    "pixels90": RandomPixelsMask(0.9),
    "random_boxes": RandomBoxesMask(0.3, 0.7),
    "half_left": HalfMask(angle=180.0),  # left half: not in the MNIST training mix (MIX4)
    "checker7": CheckerboardMask(7),     # missing 7x7 blocks of a checkerboard: not in any training mix
}
MIX4 = ("half", "box50", "strokes", "pixels90")  # the MNIST benchmark's four mask kinds


class MixedMask(MaskGenerator):
    """One of several presets (``PRESETS`` names), chosen uniformly per call: training the amortized encoder
    on every mask type it will meet. The default mixes box 50%, random boxes 30-70%, any half and strokes."""

    def __init__(self, kinds: Sequence[str] = ("box50", "random_boxes", "half_any", "strokes")) -> None:
        unknown = [k for k in kinds if k not in PRESETS]
        if unknown or not kinds:
            raise ValueError(f"MixedMask kinds must be non-empty names from {', '.join(PRESETS)}; got {list(kinds)}")
        self.kinds = tuple(kinds)

    def _missing(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        kind = self.kinds[_randint(0, len(self.kinds) - 1, generator)]
        return PRESETS[kind]._missing(h, w, generator)


class Mix4Mask(MixedMask):
    """The MNIST benchmark's mix: bottom half, centre box 50%, strokes 20-50%, random pixels 90%."""

    def __init__(self) -> None:
        super().__init__(MIX4)


MASKS: dict[str, type[MaskGenerator]] = {
    "box": BoxMask,
    "random_boxes": RandomBoxesMask,
    "half": HalfMask,
    "strokes": StrokesMask,
    "pixels": RandomPixelsMask,
    "checkerboard": CheckerboardMask,
    "mixed": MixedMask,
    "mix4": Mix4Mask,
}


def mask_from_name(name: str, **kwargs) -> MaskGenerator:
    """Build a generator from its short name, e.g. ``mask_from_name("box", ratio=0.3)``."""
    if name not in MASKS:
        raise ValueError(f"unknown mask {name!r}; choose one of {', '.join(MASKS)}")
    cls = MASKS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"mask {name!r} does not accept {', '.join(unknown)}; it accepts: {', '.join(accepted) or 'nothing'}"
        )
    return cls(**kwargs)


def make_mask(name: str, ratio: float | Sequence[float] | None = None) -> MaskGenerator:
    """Build a generator from the datamodules' ``mask`` / ``mask_ratio`` arguments.

    ``ratio`` is the missing fraction: a float for "box" and "pixels"; for
    "random_boxes" and "strokes" either a ``[min, max]`` pair or a float ``r``
    meaning ``[r - 0.05, r + 0.05]``. "half" is always ~50%, so a ratio is
    ignored with a warning. ``None`` keeps each generator's default.
    """
    if ratio is None:
        return mask_from_name(name)
    is_pair = isinstance(ratio, Sequence) and not isinstance(ratio, str)
    if name in ("box", "pixels"):
        if is_pair:
            raise ValueError(f"mask {name!r} takes a single mask_ratio, got {list(ratio)}")
        return mask_from_name(name, ratio=float(ratio))
    if name in ("random_boxes", "strokes"):
        if is_pair:
            if len(ratio) != 2:
                raise ValueError(f"mask_ratio range must be [min, max], got {list(ratio)}")
            lo, hi = float(ratio[0]), float(ratio[1])
        else:
            r = _check_ratio(float(ratio), "mask_ratio")
            lo, hi = max(r - 0.05, r / 2), min(r + 0.05, (1 + r) / 2)
        return mask_from_name(name, min_ratio=lo, max_ratio=hi)
    if name == "half":
        warnings.warn(
            f"mask 'half' always hides about 50% of the image; mask_ratio={ratio} is ignored "
            f"(pass mask_ratio=None to silence this)"
        )
        return mask_from_name(name)
    return mask_from_name(name)  # raises the "unknown mask" error

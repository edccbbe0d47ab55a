"""Properties of the seeded mask generators in datamodules.masks."""

from __future__ import annotations

import pytest
import torch

from datamodules.masks import (
    MASKS,
    BoxMask,
    HalfMask,
    RandomBoxesMask,
    RandomPixelsMask,
    StrokesMask,
    make_mask,
    mask_from_name,
)

SEEDS = range(8)
SIZES = [(32, 32), (48, 64), (7, 5)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def missing_ratio(keep_mask: torch.Tensor) -> float:
    return float((keep_mask == 0).float().mean())


@pytest.mark.parametrize("name", list(MASKS))
@pytest.mark.parametrize("size", SIZES)
def test_shape_dtype_binary_and_not_degenerate(name, size):
    generator = mask_from_name(name)
    for seed in SEEDS:
        m = generator(size, gen(seed))
        assert m.shape == (1, *size)
        assert m.dtype == torch.float32
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert (m == 1).any(), f"{name} {size} seed {seed}: nothing observed"
        assert (m == 0).any(), f"{name} {size} seed {seed}: nothing missing"


@pytest.mark.parametrize("name", list(MASKS))
def test_deterministic_given_seed(name):
    generator = mask_from_name(name)
    a, b = generator((32, 32), gen(3)), generator((32, 32), gen(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["random_boxes", "half", "strokes", "pixels"])
def test_different_seeds_differ(name):
    generator = mask_from_name(name)
    masks = [generator((32, 32), gen(seed)) for seed in SEEDS]
    assert any(not torch.equal(masks[0], m) for m in masks[1:])


def test_degenerate_tiny_image_still_has_both():
    for name in MASKS:
        m = mask_from_name(name)((1, 2), gen(0))
        assert m.sum() == 1, name


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.8])
@pytest.mark.parametrize("size", [(32, 32), (48, 64), (64, 40)])
def test_box_ratio_and_centred(ratio, size):
    m = BoxMask(ratio)(size, gen(0))
    h, w = size
    # The box side is an integer, so the area is off by at most about one row/column.
    assert abs(missing_ratio(m) - ratio) <= (h + w) / (h * w)
    rows = torch.nonzero((m[0] == 0).any(dim=1)).squeeze(1)
    cols = torch.nonzero((m[0] == 0).any(dim=0)).squeeze(1)
    assert abs(int(rows[0]) - (h - 1 - int(rows[-1]))) <= 1
    assert abs(int(cols[0]) - (w - 1 - int(cols[-1]))) <= 1
    # A box is a solid rectangle.
    assert int((m[0] == 0).sum()) == rows.numel() * cols.numel()


@pytest.mark.parametrize("lo,hi", [(0.3, 0.7), (0.1, 0.2), (0.5, 0.52)])
@pytest.mark.parametrize("size", [(32, 32), (64, 48)])
def test_random_boxes_ratio_in_range(lo, hi, size):
    generator = RandomBoxesMask(min_ratio=lo, max_ratio=hi)
    for seed in SEEDS:
        assert lo <= missing_ratio(generator(size, gen(seed))) <= hi


@pytest.mark.parametrize("lo,hi", [(0.2, 0.5), (0.05, 0.1), (0.4, 0.45)])
@pytest.mark.parametrize("size", [(32, 32), (40, 56)])
def test_strokes_ratio_in_range(lo, hi, size):
    generator = StrokesMask(min_ratio=lo, max_ratio=hi)
    for seed in SEEDS:
        assert lo <= missing_ratio(generator(size, gen(seed))) <= hi


def test_ranged_masks_spread_over_the_range():
    ratios = [missing_ratio(RandomBoxesMask()((32, 32), gen(s))) for s in range(20)]
    assert max(ratios) - min(ratios) > 0.15


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (31, 33)])
def test_half_mask_is_about_half(size):
    for seed in SEEDS:
        assert abs(missing_ratio(HalfMask()(size, gen(seed))) - 0.5) <= 0.05


def test_half_mask_angle_convention():
    right = HalfMask(angle=0)((8, 8), gen(0))[0]
    assert (right[:, 4:] == 0).all() and (right[:, :4] == 1).all()
    top = HalfMask(angle=90)((8, 8), gen(0))[0]
    assert (top[:4] == 0).all() and (top[4:] == 1).all()


def test_half_mask_random_angles_cover_directions():
    # Each missing half's centroid direction; random angles should not all agree.
    centroids = []
    for seed in range(12):
        miss = HalfMask()((32, 32), gen(seed))[0] == 0
        ys, xs = torch.nonzero(miss, as_tuple=True)
        centroids.append((float(xs.float().mean()) - 15.5, float(ys.float().mean()) - 15.5))
    assert any(x > 3 for x, _ in centroids) and any(x < -3 for x, _ in centroids)


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.9])
def test_random_pixels_ratio(ratio):
    for seed in SEEDS:
        # 4096 Bernoulli draws: 5 standard deviations is under 0.04.
        assert abs(missing_ratio(RandomPixelsMask(ratio)((64, 64), gen(seed))) - ratio) < 0.04


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: BoxMask(0.0), "strictly between 0 and 1"),
        (lambda: BoxMask(1.0), "strictly between 0 and 1"),
        (lambda: RandomBoxesMask(0.7, 0.3), "must not exceed max_ratio"),
        (lambda: StrokesMask(0.2, 1.5), "max_ratio"),
        (lambda: RandomPixelsMask(-0.1), "strictly between 0 and 1"),
        (lambda: mask_from_name("circle"), "unknown mask 'circle'"),
        (lambda: mask_from_name("box", min_ratio=0.2), "does not accept min_ratio"),
        (lambda: make_mask("box", (0.2, 0.4)), "single mask_ratio"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_impossible_range_for_size_raises():
    with pytest.raises(ValueError, match="widen the range"):
        RandomBoxesMask(0.51, 0.52)((2, 2), gen(0))
    with pytest.raises(ValueError, match="at least 2 pixels"):
        BoxMask()((1, 1), gen(0))


def test_make_mask_maps_ratio_arguments():
    assert make_mask("box", 0.3).ratio == 0.3
    assert make_mask("pixels", 0.4).ratio == 0.4
    boxes = make_mask("random_boxes", 0.4)
    assert boxes.min_ratio == pytest.approx(0.35) and boxes.max_ratio == pytest.approx(0.45)
    strokes = make_mask("strokes", [0.1, 0.3])
    assert (strokes.min_ratio, strokes.max_ratio) == (0.1, 0.3)
    assert isinstance(make_mask("half"), HalfMask)
    with pytest.warns(UserWarning, match="ignored"):
        make_mask("half", 0.3)


def test_mix4_draws_each_benchmark_mask():
    """The amortized encoder trains on the benchmark's masks: over 40 seeds every kind of MIX4 appears."""
    from datamodules.masks import MIX4, Mix4Mask

    assert MIX4 == ("half", "box50", "strokes", "pixels90")
    seen = set()
    for seed in range(40):
        m = Mix4Mask()((28, 28), gen(seed))
        r = missing_ratio(m)
        if r > 0.8:
            seen.add("pixels90")
        elif (m[0, 14:] == 0).all() and (m[0, :14] == 1).all():
            seen.add("half")                    # the bottom half, as the benchmark's HalfMask(angle=270)
        elif (m[0, 4:24, 4:24] == 0).all() and r == pytest.approx(20 * 20 / 784, abs=0.01):
            seen.add("box50")                   # a centred box of half the area
        elif 0.15 <= r <= 0.55:
            seen.add("strokes")
    assert seen == set(MIX4)


def test_mixed_mask_rejects_unknown_kinds():
    from datamodules.masks import MixedMask

    with pytest.raises(ValueError, match="pixels90"):      # the message lists the valid names
        MixedMask(("half", "circle"))


def test_checkerboard_and_left_half_presets():
    from datamodules.masks import PRESETS

    m = PRESETS["checker7"]((28, 28), gen(0))[0]
    assert missing_ratio(m) == 0.5                                # 4x4 blocks of 7x7, half of them missing
    blocks = m.reshape(4, 7, 4, 7).permute(0, 2, 1, 3).reshape(16, 49)
    assert torch.all(blocks.min(1).values == blocks.max(1).values)   # each block wholly missing or observed
    board = blocks[:, 0].reshape(4, 4)
    assert torch.all(board[:, 1:] != board[:, :-1]) and torch.all(board[1:] != board[:-1])   # neighbours alternate
    phases = {int(PRESETS["checker7"]((28, 28), gen(s))[0, 0, 0]) for s in SEEDS}
    assert phases == {0, 1}                                       # both phases occur
    left = PRESETS["half_left"]((28, 28), gen(0))[0]
    assert torch.all(left[:, :14] == 0) and torch.all(left[:, 14:] == 1)

"""KID (``evaluation.kid.kid``): the unbiased MMD² under the cubic polynomial kernel, checked against its
definition written out pairwise, ~0 for two samples of one distribution, and growing with a shift."""
from __future__ import annotations

import pytest
import torch

from vipaint.evaluation.kid import kid


def test_kid_matches_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    k = lambda u, v: (float(u @ v) / 3 + 1) ** 3   # noqa: E731
    aa = sum(k(a[i], a[j]) for i in range(5) for j in range(5) if i != j) / 20
    bb = sum(k(b[i], b[j]) for i in range(4) for j in range(4) if i != j) / 12
    ab = sum(k(a[i], b[j]) for i in range(5) for j in range(4)) / 20
    assert kid(a, b) == pytest.approx(aa + bb - 2 * ab, rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(800, 16, generator=g), torch.randn(800, 16, generator=g)
    same = kid(a, b)
    assert abs(same) < 0.05
    assert kid(a, b + 0.5) > kid(a, b + 0.25) > same + 0.05
    with pytest.raises(ValueError, match="equal width"):
        kid(a, b[:, :3])

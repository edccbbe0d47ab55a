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


def test_vgg_feature_path(lpips_dir):
    """``vgg_features``: VGG16's relu5_3 of LPIPS' backbone on the scaled, upsampled images, averaged over positions
    (512 per image); KID on them separates real images from blurred and from noise images."""
    import torch.nn.functional as F

    from datamodules.demo import CIFAR10_DEMO_DIR
    from datamodules.io import read_image
    from vipaint.evaluation.kid import FEATURE_SIZE, vgg_features
    from vipaint.evaluation.perceptual import load_lpips

    x = torch.stack([read_image(f) for f in sorted((CIFAR10_DEMO_DIR / "images").glob("*.png"))])   # 24 real images
    f = vgg_features(x, lpips_dir, batch=7)                 # batching must not change the features
    assert f.shape == (24, 512) and f.dtype == torch.float64 and (f >= 0).all()   # ReLU outputs, averaged
    model = load_lpips("vgg", lpips_dir)
    with torch.no_grad():
        h = model.scaling_layer(F.interpolate(x[:3], size=(FEATURE_SIZE,) * 2, mode="bilinear", align_corners=False))
        want = model.net(h).relu5_3.mean(dim=(2, 3)).double()
    torch.testing.assert_close(f[:3], want, rtol=1e-5, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    noise = (torch.rand(12, 3, 32, 32, generator=g) * 2 - 1)
    blurred = F.avg_pool2d(x[12:], 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    real = kid(f[:12], f[12:])
    assert real < kid(f[:12], vgg_features(blurred, lpips_dir)) < kid(f[:12], vgg_features(noise, lpips_dir))

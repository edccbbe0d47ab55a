"""vipaint.evaluation.metrics against hand-computed values (PSNR, SSIM vs skimage, LPIPS vs lpips directly)."""
from __future__ import annotations

import math

import pytest
import torch

from vipaint.evaluation.metrics import composite, lpips_distance, psnr, ssim
from vipaint.evaluation.perceptual import load_lpips


def _imgs(b=2, c=3, h=32, w=32, seed=0, lo=-1.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(b, c, h, w, generator=g)


# --------------------------------------------------------------------------------------- PSNR

def test_psnr_constant_offset_exact():
    x = _imgs(lo=-0.9, hi=0.9).double()
    p = psnr(x + 0.1, x)
    assert p.shape == (2,)
    torch.testing.assert_close(p, torch.full((2,), 10 * math.log10(4 / 0.01), dtype=torch.float64),
                               rtol=0, atol=1e-9)


def test_psnr_authors_convention_is_6dB_lower():
    x = _imgs()
    y = _imgs(seed=1)
    gap = psnr(x, y) - psnr(x, y, authors_convention=True)
    torch.testing.assert_close(gap, torch.full((2,), 6.0206), rtol=0, atol=1e-4)
    x64 = x.double()
    torch.testing.assert_close(psnr(x64 + 0.1, x64, authors_convention=True),
                               torch.full((2,), 20.0, dtype=torch.float64), rtol=0, atol=1e-9)


def test_psnr_per_image_and_identical_is_inf():
    x = _imgs()
    y = x.clone()
    y[1] += 0.2
    p = psnr(y, x)
    assert math.isinf(p[0].item()) and p[0] > 0
    assert p[1].item() == pytest.approx(10 * math.log10(4 / 0.04), abs=1e-4)


def test_psnr_shape_mismatch():
    with pytest.raises(ValueError):
        psnr(_imgs(), _imgs(h=16))


# --------------------------------------------------------------------------------------- SSIM

def test_ssim_identity_is_one():
    x = _imgs()
    torch.testing.assert_close(ssim(x, x), torch.ones(2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("noise", [0.05, 0.3, 1.0])
def test_ssim_matches_skimage_on_cifar_size(noise):
    skm = pytest.importorskip("skimage.metrics")
    x = _imgs(b=2)
    y = (x + noise * _imgs(b=2, seed=1)).clamp(-1, 1)
    got = ssim(x, y)
    assert got.shape == (2,)
    for i in range(2):
        a = ((x[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        b = ((y[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        ref = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=1.0,
                                        channel_axis=-1)
        assert abs(got[i].item() - ref) < 1e-5, (got[i].item(), ref)  # brief asks 1e-3
    assert (got < 1).all()


def test_ssim_maps_minus1_1_to_0_1_and_uncropped_is_torchmetrics():
    # SSIM on [0,1] is not shift-invariant (C1, C2 fixed), so the mapping matters: ssim(x, y,
    # crop_border=False) must equal torchmetrics on (x+1)/2 with data_range 1.
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    x, y = _imgs(), _imgs(seed=3)
    want = tm_ssim((x + 1) / 2, (y + 1) / 2, data_range=1.0, reduction="none")
    torch.testing.assert_close(ssim(x, y, crop_border=False), want)
    # a different quantity from the (default) border-cropped one
    assert not torch.allclose(ssim(x, y), want, rtol=0, atol=1e-5)


def test_ssim_11x11_is_one_window():
    # with a single valid window the cropped SSIM is the gaussian-weighted SSIM formula by hand
    x, y = _imgs(b=1, h=11, w=11), _imgs(b=1, h=11, w=11, seed=4)
    a, b = ((x + 1) / 2).double(), ((y + 1) / 2).double()
    t = torch.arange(11, dtype=torch.float64) - 5
    g1 = torch.exp(-t**2 / (2 * 1.5**2))
    g1 = g1 / g1.sum()
    wgt = g1[:, None] * g1[None, :]
    mu_a, mu_b = (wgt * a).sum((-2, -1)), (wgt * b).sum((-2, -1))
    va = (wgt * a * a).sum((-2, -1)) - mu_a**2
    vb = (wgt * b * b).sum((-2, -1)) - mu_b**2
    cov = (wgt * a * b).sum((-2, -1)) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    by_hand = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
               / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))).mean(1)
    torch.testing.assert_close(ssim(x, y).double(), by_hand, rtol=0, atol=1e-5)


def test_ssim_too_small_raises():
    x = _imgs(h=8, w=8)
    with pytest.raises(ValueError, match="11x11"):
        ssim(x, x)


# -------------------------------------------------------------------------------------- LPIPS

def test_lpips_zero_and_symmetric(lpips_dir):
    x, y = _imgs(h=32, w=32), _imgs(seed=1)
    d0 = lpips_distance(x, x, net="alex", backbone_path=lpips_dir)
    assert d0.shape == (2,)
    torch.testing.assert_close(d0, torch.zeros(2), rtol=0, atol=1e-6)
    dxy = lpips_distance(x, y, net="alex", backbone_path=lpips_dir)
    dyx = lpips_distance(y, x, net="alex", backbone_path=lpips_dir)
    torch.testing.assert_close(dxy, dyx, rtol=1e-5, atol=1e-6)
    assert (dxy > 0).all()


def test_lpips_alex_equals_lpips_forward(lpips_dir):
    x, y = _imgs(), _imgs(seed=2)
    model = load_lpips("alex", lpips_dir)
    want = model(x, y, normalize=False).reshape(-1)
    got = lpips_distance(x, y, net="alex", backbone_path=lpips_dir)
    torch.testing.assert_close(got, want)


def test_lpips_vgg_default_runs(lpips_dir):
    x, y = _imgs(b=1), _imgs(b=1, seed=1)
    d = lpips_distance(x, y, backbone_path=lpips_dir)
    assert d.shape == (1,) and d.item() > 0


# ---------------------------------------------------------------------------------- composite

def test_composite_keeps_observed_pixels():
    b, n = 2, 3
    x = _imgs(b=b)
    samples = torch.stack([_imgs(b=b, seed=10 + k) for k in range(n)], dim=1)
    keep = (torch.rand(b, 1, 32, 32, generator=torch.Generator().manual_seed(5)) > 0.5).float()
    out = composite(samples, x, keep)
    assert out.shape == samples.shape
    m = keep.bool().unsqueeze(1).expand_as(samples)
    xs = x.unsqueeze(1).expand_as(samples)
    assert torch.equal(out[m], xs[m])
    assert torch.equal(out[~m], samples[~m])
    # 4-D samples work too
    assert torch.equal(composite(samples[:, 0], x, keep), out[:, 0])


def test_composite_bad_mask():
    with pytest.raises(ValueError):
        composite(_imgs().unsqueeze(1), _imgs(), torch.ones(2, 3, 32, 32))

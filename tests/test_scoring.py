"""``score_inpainting``: the benchmarks' one scoring function, checked on cases with known answers."""
from __future__ import annotations

import math

import torch

from vipaint.evaluation.perceptual import lpips_ready
from vipaint.evaluation.scoring import score_inpainting


def case(B=2, N=3, H=16):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 1, H, H, generator=g) * 2 - 1
    keep = torch.ones(B, 1, H, H)
    keep[..., H // 2:, :] = 0
    y = x + 0.05 * torch.randn(x.shape, generator=g)
    return x, y, keep


def test_perfect_samples():
    x, y, keep = case()
    s = x.unsqueeze(1).repeat(1, 3, 1, 1, 1)
    out = score_inpainting(s, x, y, keep, lpips_net=None)
    assert torch.all(out["psnr_hole"] > 90) and torch.allclose(out["ssim_hole"], torch.ones(2))
    assert torch.allclose(out["diversity_hole"], torch.zeros(2))
    rms = (((x - y) ** 2 * keep).flatten(1).sum(1) / keep.flatten(1).sum(1)).sqrt()
    assert torch.allclose(out["consistency_rms"], rms, atol=1e-6)


def test_hole_error_and_diversity_are_measured_in_the_hole_only():
    x, y, keep = case()
    s = x.unsqueeze(1).repeat(1, 2, 1, 1, 1)
    s[:, 0] += 0.1 * (1 - keep)          # hole off by +0.1 in sample 0, -0.1 in sample 1
    s[:, 1] -= 0.1 * (1 - keep)
    s[:, :, :, :4] += 5.0 * keep[:, None, :, :4]   # large error on observed pixels: must not count in the hole
    out = score_inpainting(s, x, y, keep, lpips_net=None)
    assert torch.allclose(out["psnr_hole"], torch.full((2,), 10 * math.log10(4 / 0.01)), atol=1e-3)
    assert torch.allclose(out["diversity_hole"], torch.full((2,), 0.2), atol=1e-5)
    assert torch.all(out["consistency_rms"] > 1.0)


def test_plausibility_counts_correct_labels():
    _, y, keep = case(B=2, N=4)
    x = -torch.ones(2, 1, 16, 16)                        # dark digits; a "1" is a bright completion
    s = x.unsqueeze(1).repeat(1, 4, 1, 1, 1)
    s[0, :3] = 1.0                                       # three of image 0's samples fill the hole brightly
    s[1, :, :, :8] = 1.0                                 # image 1's samples are bright only where observed
    classify = lambda im: (im.flatten(1).mean(1) > -0.5).long()
    out = score_inpainting(s, x, y, keep, classify=classify, labels=torch.tensor([1, 1]), lpips_net=None)
    # Scored on composited samples: image 1's bright observed half is replaced by the truth.
    assert out["plausibility_mean"].tolist() == [0.75, 0.0]
    assert out["plausibility_best"].tolist() == [1.0, 0.0]


def test_lpips_ready_shapes():
    assert lpips_ready(torch.zeros(5, 1, 28, 28)).shape == (5, 3, 64, 64)
    assert lpips_ready(torch.zeros(5, 3, 128, 96)).shape == (5, 3, 128, 96)


def test_other_operators_score_the_whole_image_and_consistency_through_the_operator():
    from vipaint.operators import SuperResolution

    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    op = SuperResolution(2)
    y_low = op.forward(x) + 0.05 * torch.randn(2, 1, 4, 4, generator=g)
    y = op.to_image(y_low)
    s = x.unsqueeze(1).repeat(1, 2, 1, 1, 1)
    s[:, 1] += 0.2                                     # sample 1 off everywhere, so also through A
    out = score_inpainting(s, x, y, torch.zeros(2, 1, 8, 8), lpips_net=None,
                           observe=lambda im: op.to_image(op.forward(im)))
    # The hole is the whole image: sample 0 exact, sample 1 off by 0.2 -> MSE 0.02 on average over the two.
    assert torch.allclose(out["psnr_hole"], 0.5 * (10 * torch.log10(torch.tensor(4 / 1e-10)) +
                                                   10 * math.log10(4 / 0.04)), atol=1e-3)
    rms0 = ((op.forward(x) - y_low) ** 2).flatten(1).mean(1).sqrt()
    rms1 = ((op.forward(x) + 0.2 - y_low) ** 2).flatten(1).mean(1).sqrt()
    assert torch.allclose(out["consistency_rms"], (rms0 + rms1) / 2, atol=1e-6)


def test_coverage_reads_values_at_the_clamp_as_at_it():
    """Truth and samples from one distribution with an atom at the clamp (calibrated), the samples' atom landing at
    −0.99 as a network's does: the coverage is still the level. Unsnapped, the PIT would put every truth at −1
    below all samples at −0.99, outside the central 50%."""
    g = torch.Generator().manual_seed(1)
    B, N, H = 200, 8, 8
    draw = lambda *shape: (torch.randn(*shape, generator=g) * 0.6 - 1.0).clamp(-1, 1)   # noqa: E731   half at -1
    x, samples = draw(B, 1, H, H), draw(B, N, 1, H, H)
    samples = torch.where(samples == -1, torch.full_like(samples, -0.99), samples)
    keep = torch.zeros(B, 1, H, H)
    out = score_inpainting(samples, x, x, keep, lpips_net=None)
    c50, c90 = out["pit_coverage_50"].nanmean().item(), out["pit_coverage_90"].nanmean().item()
    assert abs(c50 - 0.5) < 0.02 and abs(c90 - 0.9) < 0.015, (c50, c90)
    from vipaint.evaluation.proper import coverage
    assert coverage(samples, x, 1 - keep, 0.5).nanmean() < 0.4          # what the snap prevents

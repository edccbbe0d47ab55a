"""The autoencoder's error field (``vipaint/decoder_error.py``): Σ_e is the circulant covariance its kernel says,
its estimate recovers a known field, and its conditional mean is Gaussian conditioning, checked against the dense
formula Σ Aᵀ (A Σ Aᵀ + σ_y² I)⁻¹ (y − A x) for a mask and for a blur; the refiner returns D(z_0) plus that mean."""
from __future__ import annotations

import pytest
import torch

from vipaint.decoder_error import DecoderError
from vipaint.operators import GaussianBlur, Inpainting

C, H, W = 2, 6, 6


def dense(field: DecoderError) -> torch.Tensor:
    """Σ_e as a (CHW, CHW) matrix, column j = Σ_e applied to the j-th basis image."""
    n = C * H * W
    return field.cov(torch.eye(n).reshape(n, C, H, W)).reshape(n, n).T.double()


def correlated(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n errors of a known circulant field, e = L ε (L: a circular 3x3 blur per channel, then a channel mix), and
    its covariance L Lᵀ."""
    g = torch.Generator().manual_seed(seed)
    blur = torch.tensor([[0.5, 1.0, 0.5], [1.0, 2.0, 1.0], [0.5, 1.0, 0.5]]) / 4
    mix = torch.tensor([[1.0, 0.0], [0.6, 0.8]]) * 0.1

    def apply(eps: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(eps, (1, 1, 1, 1), mode="circular")
        smooth = torch.nn.functional.conv2d(padded, blur.expand(C, 1, 3, 3).contiguous(), groups=C)
        return torch.einsum("cd,bdhw->bchw", mix, smooth)

    basis = apply(torch.eye(C * H * W).reshape(-1, C, H, W)).reshape(C * H * W, -1).T.double()
    return apply(torch.randn(n, C, H, W, generator=g)), basis @ basis.T


def test_cov_is_the_circulant_of_its_kernel():
    """Σ_e[(c, p), (d, q)] = kernel[c, d, p − q] (circularly), symmetric and positive semi-definite."""
    field = DecoderError.estimate(correlated(50)[0])
    m = dense(field).reshape(C, H, W, C, H, W)
    k = field.kernel.double()
    for (c, d, p, q) in [(0, 0, (0, 0), (0, 0)), (0, 1, (2, 3), (1, 1)), (1, 0, (5, 0), (0, 4)), (1, 1, (3, 3), (4, 5))]:
        lag = ((p[0] - q[0]) % H, (p[1] - q[1]) % W)
        assert m[c, p[0], p[1], d, q[0], q[1]].item() == pytest.approx(k[c, d, lag[0], lag[1]].item(), abs=1e-7)
    m = m.reshape(C * H * W, -1)
    torch.testing.assert_close(m, m.T, atol=1e-7, rtol=0)
    assert torch.linalg.eigvalsh(m).min() > -1e-7


def test_rms_is_the_errors_rms():
    """Parseval: the estimate's lag-0 variance, averaged over channels, is the mean square of the errors, exactly."""
    errors = correlated(64, seed=5)[0] + 0.02
    assert DecoderError.estimate(errors).rms == pytest.approx(errors.pow(2).mean().sqrt().item(), rel=1e-5)


def test_estimate_recovers_a_known_field():
    """From 4,000 draws of e = L ε the estimate is L Lᵀ to 6% of its largest entry (the sampling error ~2%), and
    its RMS the field's."""
    errors, truth = correlated(4000)
    field = DecoderError.estimate(errors)
    assert (dense(field) - truth).abs().max() < 0.06 * truth.abs().max()
    assert field.rms == pytest.approx(truth.diagonal().mean().sqrt().item(), rel=0.03)


@pytest.mark.parametrize("kind", ["inpainting", "blur"])
def test_conditional_mean_is_gaussian_conditioning(kind):
    errors, _ = correlated(500, seed=1)
    field = DecoderError.estimate(errors)
    g = torch.Generator().manual_seed(2)
    if kind == "inpainting":
        op = Inpainting((torch.rand(1, 1, H, W, generator=g) < 0.6).float(), sigma_y=0.05)
    else:
        op = GaussianBlur(std=1.0, kernel_size=3, sigma_y=0.05)
    x = torch.randn(1, C, H, W, generator=g) * 0.5
    y = op.observe(x + errors[:1], g)
    n = C * H * W
    a = op.expand(n).forward(torch.eye(n).reshape(n, C, H, W)).reshape(n, -1).T.double()   # (m, n): rows of A
    rows = op.valid(y).expand_as(y).reshape(-1).bool()
    a = a[rows]
    s = dense(field)
    resid = (y - op.forward(x)).reshape(-1)[rows].double()
    expect = s @ a.T @ torch.linalg.solve(a @ s @ a.T + op.sigma_y**2 * torch.eye(len(a), dtype=s.dtype), resid)
    got = field.conditional_mean(y, x, op).reshape(-1).double()
    torch.testing.assert_close(got, expect, atol=1e-3 * expect.abs().max().item(), rtol=0)   # CG to rtol 1e-4
    assert torch.equal(field.conditional_mean(op.forward(x), x, op), torch.zeros_like(x))   # nothing to explain


def test_without_noise_the_mean_interpolates_the_observed_pixels():
    """σ_y → 0 (floored at 1e-3): D(z_0) + E[e | z_0, y] reproduces y on the observed pixels."""
    errors, _ = correlated(500, seed=3)
    field = DecoderError.estimate(errors)
    g = torch.Generator().manual_seed(4)
    keep = (torch.rand(1, 1, H, W, generator=g) < 0.5).float()
    op = Inpainting(keep, sigma_y=0.0)
    x = torch.randn(1, C, H, W, generator=g) * 0.5
    y = op.forward(x + errors[:1])
    completed = x + field.conditional_mean(y, x, op)
    residual = keep * (completed - y)
    assert residual.abs().max() < 0.02 * (keep * (y - x)).abs().max()


def test_a_kernel_of_another_shape_is_refused():
    field = DecoderError(torch.zeros(C, C, H, W))
    with pytest.raises(ValueError, match="measured on"):
        field.cov(torch.zeros(1, C, H + 2, W))
    with pytest.raises(ValueError, match=r"\(C, C, H, W\)"):
        DecoderError(torch.zeros(C, C + 1, H, W))

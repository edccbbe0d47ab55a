"""Tests for vipaint.evaluation.perceptual: offline LPIPS loading and masked LPIPS.

They need the LPIPS backbones (safetensors, lpips state-dict keys): the ``lpips_dir`` fixture
(``vipaint.resources``, $VIPAINT_LPIPS_BACKBONE_DIR) skips them when it is not configured
(no download is ever attempted here).
"""

from __future__ import annotations

import urllib.error

import pytest
import torch

from vipaint.evaluation import perceptual
from vipaint.evaluation.perceptual import load_lpips, masked_lpips
from vipaint.resources import RESOURCES

ENV = RESOURCES["lpips"].env
# LPIPS-alex of _pair() (seed 1234, 1x3x32x32), computed once on CPU in float32.
GOLDEN_ALEX = 0.0104803825


def _pair(seed: int = 1234, shape=(1, 3, 32, 32)):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(shape, generator=g)).clamp(-1, 1)
    return a, b


@pytest.fixture(scope="module")
def alex(lpips_dir):
    return load_lpips("alex", backbone_path=lpips_dir / "alex_backbone.safetensors")


def test_loaded_model_is_frozen_and_cached(alex, lpips_dir):
    assert not alex.training
    assert all(not p.requires_grad for p in alex.parameters())
    # Directory form and file form resolve to the same cached instance.
    assert load_lpips("alex", backbone_path=lpips_dir) is alex
    # The backbone really is the file's (not the random init).
    from safetensors.torch import load_file

    ref = load_file(str(lpips_dir / "alex_backbone.safetensors"))
    assert torch.equal(alex.net.slice1[0].weight, ref["net.slice1.0.weight"])


def test_env_var_is_used(monkeypatch, alex, lpips_dir):
    monkeypatch.setenv(ENV, str(lpips_dir))
    assert load_lpips("alex") is alex


def test_identity_and_symmetry(alex):
    a, b = _pair(shape=(2, 3, 32, 32))
    assert torch.allclose(alex(a, a), torch.zeros(2, 1, 1, 1), atol=1e-7)
    d_ab, d_ba = alex(a, b).flatten(), alex(b, a).flatten()
    assert torch.all(d_ab > 0)
    assert torch.allclose(d_ab, d_ba, atol=1e-6)


def _lpips_by_hand(model, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """LPIPS recomputed from the model's pieces, following the paper's definition."""
    shift = model.scaling_layer.shift
    scale = model.scaling_layer.scale
    total = torch.zeros(x0.shape[0])
    h0, h1 = (x0 - shift) / scale, (x1 - shift) / scale
    for sl, lin in zip([model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4,
                        model.net.slice5], model.lins):
        h0, h1 = sl(h0), sl(h1)
        # Unit-normalise each spatial feature vector over channels (eps as in lpips).
        f0 = h0 / (h0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        f1 = h1 / (h1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = lin.model[-1].weight.reshape(-1)  # 1x1 conv, no bias: per-channel weights
        assert lin.model[-1].bias is None
        per_pixel = torch.einsum("bchw,c->bhw", (f0 - f1) ** 2, w)
        total = total + per_pixel.mean(dim=(1, 2))
    return total


def test_golden_value_matches_hand_computation(alex):
    a, b = _pair()
    with torch.no_grad():
        value = alex(a, b).flatten()
        by_hand = _lpips_by_hand(alex, a, b)
    assert torch.allclose(value, by_hand, atol=1e-5), (value, by_hand)
    # Frozen golden value (CPU, float32) guards against silent changes of weights or lpips.
    assert value.item() == pytest.approx(GOLDEN_ALEX, rel=1e-4)


def test_masked_lpips(alex):
    a, b = _pair(shape=(2, 3, 32, 32))
    keep = torch.zeros(2, 1, 32, 32)
    keep[0, :, :, :16] = 1  # image 0: left half observed; image 1: nothing observed
    d = masked_lpips(alex, a, b, keep)
    assert d.shape == (2,)
    # Upsampled to LPIPS_MIN_SIZE first (32 px would reach the deepest layers as 1-2 cells), in the loss as in
    # the scores: the one preparation, lpips_ready.
    up = lambda u: torch.nn.functional.interpolate(u, size=(64, 64), mode="bilinear", align_corners=False)  # noqa: E731
    assert torch.allclose(d, alex(up(keep * a), up(keep * b)).flatten(), atol=1e-6)
    assert not torch.allclose(d, alex(keep * a, keep * b).flatten(), atol=1e-4)
    assert d[0] > 0 and d[1].abs() < 1e-7
    # Differences only in the unobserved region are invisible.
    assert masked_lpips(alex, a, torch.where(keep.bool(), a, b), keep).abs().max() < 1e-7
    # Gradients flow to the inputs even though the model is frozen.
    a_req = a.clone().requires_grad_(True)
    masked_lpips(alex, a_req, b, keep).sum().backward()
    assert a_req.grad is not None and a_req.grad[0].abs().sum() > 0
    assert torch.allclose(masked_lpips(alex, a, b, None), alex(up(a), up(b)).flatten(), atol=1e-6)
    with pytest.raises(ValueError, match="keep_mask"):
        masked_lpips(alex, a, b, keep[:, :, :8])


def test_wrong_backbone_file_raises_clear_error(lpips_dir):
    with pytest.raises(ValueError, match="does not match net='alex'"):
        load_lpips("alex", backbone_path=lpips_dir / "vgg_backbone.safetensors")


def test_missing_file_and_unknown_net(tmp_path):
    with pytest.raises(FileNotFoundError, match="alex_backbone.safetensors"):
        load_lpips("alex", backbone_path=tmp_path)
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        load_lpips("resnet", backbone_path=tmp_path)


def test_offline_download_failure_is_explained(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)

    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(perceptual.lpips, "LPIPS", no_internet)
    with pytest.raises(RuntimeError, match=ENV):
        load_lpips("vgg")

"""The conditional model that ships in ``weights/mnist-inpaint`` holds real, trained weights: it uses the
observation. On the demo digits with their own masks (held-out MNIST test digits, ``demo/mnist``; the bottom half,
a centre box and strokes, families it trained on), noised to t = 500 (ᾱ ≈ 0.08: the hole is decided by then), its
x̂_0 must be far closer to the truth in the hole than the unconditional prior's, which sees the same z_t but not y.
A network that ignores its extra channels scores as the prior does. Measured with the shipped weights: the card.
"""
from __future__ import annotations

import json

import torch

from datamodules.demo import MNIST_DEMO_DIR
from datamodules.io import read_image, read_mask
from vipaint.priors.conditional import load_conditional
from vipaint.priors.external import PixelPrior
from vipaint.priors.shipped import SHIPPED_CONDITIONAL
from vipaint.prior import convert_prediction
from vipaint.schedule import q_sample

T = 500
SIGMA_Y = 0.05


def _demo() -> tuple[torch.Tensor, torch.Tensor]:
    files = sorted((MNIST_DEMO_DIR / "images").glob("*.png"))
    x = torch.stack([read_image(f) for f in files])
    keep = torch.stack([read_mask(MNIST_DEMO_DIR / "masks" / f.name) for f in files])
    return x, keep


def test_shipped_conditional_loads_with_its_card():
    folder = SHIPPED_CONDITIONAL["vipaint-mnist-inpaint"]
    model = load_conditional("vipaint-mnist-inpaint")
    assert model.image_shape == (1, 28, 28)
    config = json.loads((folder / "config.json").read_text())
    assert config["in_channels"] == 3 and config["out_channels"] == 1
    card = (folder / "README.md").read_text()
    assert "python train.py fit --config configs/conditional_mnist.yaml" in card and "CC BY-SA 3.0" in card
    assert (folder / "diffusion_pytorch_model.safetensors").stat().st_size < 10 * 2**20


def test_shipped_conditional_uses_the_observation():
    x, keep = _demo()
    assert x.shape == (24, 1, 28, 28) and keep.shape == (24, 1, 28, 28)
    model, prior = load_conditional("vipaint-mnist-inpaint"), PixelPrior("vipaint-mnist")
    g = torch.Generator().manual_seed(0)
    y = keep * (x + SIGMA_Y * torch.randn(x.shape, generator=g))
    ab = model.schedule.alpha_bar(T).float()
    z = q_sample(x, torch.randn(x.shape, generator=g), ab)
    with torch.no_grad():
        x0_cond, _ = convert_prediction(model(z, T, torch.cat([y, keep], 1)), z, ab.sqrt(), (1 - ab).sqrt(), "epsilon")
        x0_prior = prior.x0_hat(z, T)
    hole = 1 - keep

    def hole_mse(x0):
        return float((hole * (x0.clamp(-1, 1) - x) ** 2).sum() / hole.sum())

    mse_cond, mse_prior = hole_mse(x0_cond), hole_mse(x0_prior)
    print(f"t={T}: hole MSE of x̂_0, conditional {mse_cond:.4f}, prior {mse_prior:.4f}")
    # Margin: the trained model is well under this bound (the card); one that ignores y, m is not.
    assert mse_cond < 0.8 * mse_prior

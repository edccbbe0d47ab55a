"""The prior that ships in ``weights/mnist-ddpm`` holds real, trained weights (not a random network).

The check uses the demo digits shipped beside it (held-out MNIST test digits, ``demo/mnist``), so it needs
no data set: noised to t = 200 (ᾱ ≈ 0.66, noise std ≈ 0.58 in [-1, 1] units), the prior's x̂_0 must be far
closer to the clean digit than the mean digit is. Measured with the shipped weights: see the model card;
a random network's x̂_0 is worse than the mean digit.
"""
from __future__ import annotations

import json

import torch

from datamodules.demo import MNIST_DEMO_DIR
from datamodules.io import read_image
from vipaint.priors.external import PixelPrior
from vipaint.priors.shipped import SHIPPED_PRIORS


def demo_digits() -> torch.Tensor:
    files = sorted((MNIST_DEMO_DIR / "images").glob("*.png"))
    assert len(files) == 24
    return torch.stack([read_image(f) for f in files])


def test_shipped_prior_loads_with_its_card():
    folder = SHIPPED_PRIORS["vipaint-mnist"]
    prior = PixelPrior("vipaint-mnist")
    assert prior.image_shape == (1, 28, 28) and prior.prediction_type == "epsilon"
    config = json.loads((folder / "config.json").read_text())
    assert config["sample_size"] == 28 and config["in_channels"] == 1
    card = (folder / "README.md").read_text()
    assert "python train.py fit --config configs/prior_mnist.yaml" in card and "CC BY-SA 3.0" in card
    weights = folder / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 10 * 2**20


def test_shipped_prior_denoises_held_out_digits():
    prior = PixelPrior("vipaint-mnist")
    x = demo_digits()
    assert x.shape == (24, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    ab = prior.schedule.alpha_bar(200).float()
    z = ab.sqrt() * x + (1 - ab).sqrt() * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        x0 = prior.x0_hat(z, 200)
    mse_prior = float(((x0 - x) ** 2).mean())
    mse_mean_digit = float(((x.mean(0, keepdim=True) - x) ** 2).mean())
    print(f"t=200: x̂_0 MSE {mse_prior:.4f}, mean-digit MSE {mse_mean_digit:.4f}")
    # Margin: a trained prior is >= 5x closer than the mean digit (measured in the card); noise alone is not.
    assert mse_prior < 0.2 * mse_mean_digit


def test_a_registered_prior_not_in_the_checkout_says_so(tmp_path, monkeypatch):
    """A name in the registry whose folder holds no weights fails in one sentence naming the folder and the recipe."""
    import pytest

    from vipaint.priors import shipped
    from vipaint.priors.external import PriorLoadError, load_prior

    monkeypatch.setitem(shipped.SHIPPED_PRIORS, "vipaint-cifar10", tmp_path / "cifar10-ddpm")
    with pytest.raises(PriorLoadError, match="not shipped yet.*configs/prior_cifar10.yaml"):
        load_prior("vipaint-cifar10")


def test_shipped_prior_deblurs_held_out_digits():
    """Deblurring (std 1.5 px, σ_y = 0.05) with the shipped prior and its tuned settings: every sample finite (the
    diagonal reach made them all NaN: ``likelihood.py``) and the posterior mean closer to the digit than the
    blurred observation is."""
    from vipaint.jobs.api import Inpainter
    from vipaint.operators import OperatorConfig

    x = demo_digits()[:2]
    op = OperatorConfig(name="blur", blur_std=1.5, sigma_y=0.05, add_noise=True)
    out = Inpainter("vipaint-mnist", n_samples=2, init="hand", operator=op)(x, None, torch.Generator().manual_seed(0))
    assert not out.failed and torch.isfinite(out.samples).all()
    mse_mean, mse_observed = float(((out.mean - x) ** 2).mean()), float(((out.y_image - x) ** 2).mean())
    print(f"deblurring: MSE of the posterior mean {mse_mean:.4f}, of the observation {mse_observed:.4f}")
    assert mse_mean < 0.7 * mse_observed

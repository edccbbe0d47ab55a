"""The encoders that ship in ``weights/mnist-amortized`` and ``weights/cifar10-ldm-amortized`` are trained, not the
zero-initialised one.

An untrained encoder reproduces the hand-made λ exactly (``test_amortized.py``), so the check is on what it
buys: on the 24 held-out demo images of its prior (digits; CIFAR-10 test images), each under its own mask, the
bound at the encoder's λ — before any fit iteration — must be far above the bound at the hand-made λ. Same
observation noise and Monte Carlo draws for both (measured with the shipped weights: see the cards and MARGIN).
"""
from __future__ import annotations

import json

import pytest
import torch

from amortized.encoder import CONFIG_NAME, WEIGHTS_NAME, AmortizedInit, load_encoder, shipped_encoder_for
from datamodules.demo import CIFAR10_DEMO_DIR, MNIST_DEMO_DIR
from datamodules.io import read_image, read_mask
from vipaint.bound import evaluate_bound
from vipaint.priors.external import PixelPrior, load_prior
from vipaint.priors.shipped import SHIPPED_ENCODERS, SHIPPED_PRIORS
from vipaint.likelihood import make_likelihood
from vipaint.operators import Inpainting
from vipaint.posterior import HierarchicalPosterior
from vipaint.pipeline import VIPaintConfig, resolve_keypoints

# Bound per image at the initial λ, 8 samples, measured with the shipped weights: MNIST (2026-12-01) -278.8 nats
# hand-made against -142.8 with the encoder; CIFAR-10 latent (2026-12-04) -2356.9 against -2253.8 (the decoder's
# reconstruction floor dominates both). An untrained encoder gives exactly the hand-made λ (difference 0).
MARGIN = {"vipaint-mnist": 50.0, "vipaint-cifar10-latent": 50.0}
DEMO = {"vipaint-mnist": MNIST_DEMO_DIR, "vipaint-cifar10-latent": CIFAR10_DEMO_DIR}
FOLDER = SHIPPED_ENCODERS[SHIPPED_PRIORS["vipaint-mnist"]]


def test_shipped_encoder_has_its_card_and_fits_the_shipped_prior():
    prior = PixelPrior("vipaint-mnist")
    assert shipped_encoder_for(prior) == str(FOLDER)
    assert (FOLDER / WEIGHTS_NAME).stat().st_size < 5 * 2**20
    card = (FOLDER / "README.md").read_text()
    assert "python train.py fit --config configs/amortized_mnist.yaml" in card and "CC BY-SA 3.0" in card
    cfg = json.loads((FOLDER / CONFIG_NAME).read_text())
    assert cfg["keypoints"] == [550, 400] and cfg["operator"] == {"name": "inpainting", "sigma_y": 0.05}
    encoder, _ = load_encoder(FOLDER)
    assert encoder.out.weight.abs().max() > 0          # trained: the zero-initialised head has moved


@pytest.mark.parametrize("name", list(MARGIN))
def test_shipped_encoder_raises_the_bound_on_held_out_images(name):
    demo = DEMO[name]
    names = sorted(p.stem for p in (demo / "images").glob("*.png"))
    x = torch.stack([read_image(demo / "images" / f"{n}.png") for n in names])
    keep = torch.stack([read_mask(demo / "masks" / f"{n}.png") for n in names])
    prior = load_prior(name)
    encoder, _ = load_encoder(SHIPPED_ENCODERS[SHIPPED_PRIORS[name]])
    keypoints = resolve_keypoints(prior, VIPaintConfig())
    op = Inpainting(keep, 0.05)
    y = op.observe(x, torch.Generator().manual_seed(0))
    lik = make_likelihood(VIPaintConfig().likelihood, op, prior)   # the likelihood inference uses (reach "auto")
    hand = HierarchicalPosterior(keypoints, prior.latent_shape, batch=len(x))
    hand.initialize(prior, prior.encode(op.to_image(y)))
    amortized = AmortizedInit(encoder, keep)(prior, op, y, keypoints, VIPaintConfig())
    with torch.no_grad():
        bounds = {name: float(evaluate_bound(prior, post, lik, y, 8, generator=torch.Generator().manual_seed(1))
                              .elbo.mean())
                  for name, post in (("hand", hand), ("amortized", amortized))}
    print(f"bound per image at the initial λ: {bounds}")
    assert bounds["amortized"] > bounds["hand"] + MARGIN[name]


def test_infer_finds_the_shipped_encoder_without_a_path():
    import pytest

    from vipaint.fit import FitConfig
    from vipaint.jobs.module import VIPaintModule
    from vipaint.refine import RefineConfig
    from vipaint.pipeline import VIPaintConfig

    prior = PixelPrior("vipaint-mnist")
    settings = VIPaintConfig(n_eval_samples=0, fit=FitConfig(n_iter=2, n_samples=2), refine=RefineConfig(n_steps=2))
    module = VIPaintModule(prior=prior, init="amortized", vipaint=settings, n_samples=2, progress=False)
    assert module.encoder is not None
    names = sorted(p.stem for p in (MNIST_DEMO_DIR / "images").glob("*.png"))[:2]
    batch = {"x": torch.stack([read_image(MNIST_DEMO_DIR / "images" / f"{n}.png") for n in names]),
             "keep_mask": torch.stack([read_mask(MNIST_DEMO_DIR / "masks" / f"{n}.png") for n in names]),
             "name": names, "index": torch.tensor([0, 1])}
    out = module._run(batch, 0)
    assert [r.status for r in out] == ["ok", "ok"] and all(torch.isfinite(r.samples).all() for r in out)
    with pytest.raises(ValueError, match="trained for keypoints"):
        VIPaintModule(prior=prior, init="amortized", vipaint=VIPaintConfig(keypoints=(600, 300)))


def test_auto_init_uses_the_encoder_only_where_it_fits():
    from vipaint.jobs.module import VIPaintModule
    from vipaint.pipeline import VIPaintConfig
    from vipaint.schedule import DEFAULT_KEYPOINTS

    prior = PixelPrior("vipaint-mnist")
    assert VIPaintModule(prior=prior).init == "amortized"                     # the default: shipped prior + encoder
    for other in ((600, 300), DEFAULT_KEYPOINTS[4]):                            # keypoints the encoder was not trained for
        assert VIPaintModule(prior=prior, vipaint=VIPaintConfig(keypoints=other)).init == "hand"
    assert VIPaintModule(prior=prior, method="dps").encoder is None             # baselines never load it
    assert VIPaintModule(prior=prior, init="hand").init == "hand"
    from vipaint.operators import OperatorConfig

    blur = OperatorConfig(name="blur", blur_std=1.5)                           # trained on inpainting observations only
    assert VIPaintModule(prior=prior, operator=blur).init == "hand"
    with pytest.raises(ValueError, match="trained on inpainting observations"):
        VIPaintModule(prior=prior, operator=blur, init="amortized")


def test_cifar_encoder_ships_with_its_card_and_names_its_prior(tmp_path):
    from vipaint.priors.shipped import shipped_name

    folder = SHIPPED_ENCODERS[SHIPPED_PRIORS["vipaint-cifar10-latent"]]
    assert shipped_encoder_for(load_prior("vipaint-cifar10-latent")) == str(folder)
    assert "python train.py fit --config configs/amortized_cifar10.yaml" in (folder / "README.md").read_text()
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    assert cfg["keypoints"] == [550, 400] and cfg["prior"] == "vipaint-cifar10-latent"   # a name, not a path
    assert shipped_name(SHIPPED_PRIORS["vipaint-cifar10-latent"]) == "vipaint-cifar10-latent"
    assert shipped_name(tmp_path) == str(tmp_path) and shipped_name(None) is None

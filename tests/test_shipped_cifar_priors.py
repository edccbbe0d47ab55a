"""The CIFAR-10 priors that ship in ``weights/`` hold real, trained weights: their denoisers beat the best linear
(Gaussian) denoiser on held-out test images (``vipaint.evaluation.denoiser``), which no random or untrained
network does. The Gaussian is fitted to 2,000 class-balanced training images; the test images are the 128 of the
benchmarks' dev split (``datamodules.cifar10.bench_images``), never trained on. Seeded: the numbers are the same
on every run (quoted in each model card with the full table of ``bench.cifar_priors``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.prior_quality import load_images
from datamodules.cifar10 import bench_images
from vipaint.evaluation.denoiser import linear_denoiser_gain
from vipaint.priors.external import load_prior
from vipaint.priors.shipped import SHIPPED_PRIORS

#: name -> {t: least gain in dB}: the measured gains less a margin, at the t where the model card claims a gain.
#: Both priors are v-prediction models (2026-12-06), which fixed x̂_0 at high t: as ε-models they were 3.3 dB (latent)
#: and 9.8 dB (pixel) below the Gaussian at t = 850, where sampling starts, and the pixel one sampled colour fields.
#: Measured here: latent +0.79 / +0.33 / +0.09 / -0.02 dB at t = 100 / 300 / 500 / 850 (the ε-model: +0.80 / +0.34 /
#: 0.00 / -3.3); pixel +1.49 / +0.46 / +0.01 / -0.01 dB after 1,500 more v-steps (2026-12-07; before them +1.47 /
#: +0.35 / -0.09 / -0.02). At t = 500 the aim is +0.1 dB: the latent prior has it on the quality table's 256 test images
#: (+0.10); the pixel prior is above the Gaussian there (+0.06) but short of it.
EXPECTED = {"vipaint-cifar10-latent": {100: 0.4, 300: 0.15, 500: 0.03, 850: -0.3},
            "vipaint-cifar10": {100: 1.2, 300: 0.3, 500: -0.02, 850: -0.3}}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shipped_cifar_prior_beats_the_linear_denoiser(name, cifar10_zip):
    folder = SHIPPED_PRIORS[name]
    if not ((folder / "config.json").is_file() or (folder / "unet" / "config.json").is_file()):
        pytest.skip(f"{name} is not shipped yet ({folder} is empty: CIFAR-10 priors issue)")
    torch.manual_seed(0)
    prior = load_prior(name)
    test = bench_images(128, "dev", zip_path=str(cifar10_zip))[0]
    fit = load_images("cifar10", "train", 2000, str(cifar10_zip))
    with torch.no_grad():
        test, fit = prior.encode(test), torch.cat([prior.encode(fit[i:i + 500]) for i in range(0, len(fit), 500)])
    gains = linear_denoiser_gain(prior, fit, test, sorted(EXPECTED[name]))
    print({t: round(v["gain_db"], 3) for t, v in gains.items()})
    for t, least in EXPECTED[name].items():
        assert gains[str(t)]["gain_db"] > least, (t, gains[str(t)])


def test_shipped_latent_prior_fills_a_centre_box_without_saturating():
    """Issue 25's symptom, pinned: through the decoder the guidance once overshot, leaving 15-60% of a large hole at
    the clamp (bench/README.md, "Latent priors"). With VIPaint's guidance (the residual reach and the decoder solve,
    docs/method.md §5.2) the shipped latent prior's fill of a centre box keeps under 2% of the hole at |x| >= 0.98
    (1.5%; the issue asked for under 1%: the residual reach alone gives 0.25%, fills duller than the images); the
    per-pixel reach without the decoder solve leaves over 5% (the test can fail). The decoder error's conditional
    mean (§5.4, on by default) gives back some of the autoencoder's contrast: 2.3%, still fewer than the true
    images have there (3.7% for these two; 2.7% over the 24-image benchmark's boxes)."""
    from PIL import Image

    from datamodules.masks import PRESETS
    from vipaint import Inpainter
    from vipaint.evaluation.scoring import SATURATED
    from vipaint.likelihood import LikelihoodConfig
    from vipaint.pipeline import VIPaintConfig
    from vipaint.refine import RefineConfig

    demo = Path(__file__).resolve().parents[1] / "demo" / "cifar10" / "images"
    names = ["test_cat_0997.png", "test_ship_0998.png"]
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(demo / n).convert("RGB"))).permute(2, 0, 1)
                     for n in names]).float() / 127.5 - 1
    keep = torch.stack([PRESETS["box50"]((32, 32), torch.Generator().manual_seed(i)) for i in range(len(names))])
    hole = (1 - keep).expand_as(x).unsqueeze(1).bool()

    def saturated(reach: str, cg_steps: int | None = None, decoder_error: bool = True) -> float:
        cfg = VIPaintConfig(likelihood=LikelihoodConfig(reach=reach, cg_steps=cg_steps),
                            refine=RefineConfig(decoder_error=decoder_error))
        out = Inpainter("vipaint-cifar10-latent", vipaint=cfg, n_samples=2, init="hand")(
            x, keep, torch.Generator().manual_seed(0))
        s = out.samples.abs() >= SATURATED
        return float(s[hole.expand_as(s)].float().mean())

    truth = float((x.abs() >= SATURATED)[hole[:, 0]].float().mean())
    assert truth > 0.03
    assert saturated("auto", decoder_error=False) < 0.02
    assert saturated("auto") < truth
    assert saturated("diagonal", cg_steps=0, decoder_error=False) > 0.05   # the overshoot this replaced, on the same images and seed


@pytest.mark.slow
def test_shipped_latent_prior_saturates_no_mask_of_the_demo():
    """The same on all 24 CIFAR-10 demo images, each under its own demo mask (box, half, strokes, 90% pixels),
    measured against the true images' own share at the clamp in the same holes: the guidance alone (no decoder
    error) exceeds it by under 5 points on every image and stays under it on average, and so does the default (with
    the decoder error's mean). (An absolute bound of 5% per image failed on 2026-12-07 before the decoder error:
    8.6% on ship_0998's strokes, white sky and hull; 1.2% on average.) Passed on 2026-12-07 in 9.5 minutes at one
    thread beside a bench."""
    from datamodules.demo import Cifar10DemoDataModule
    from vipaint import Inpainter
    from vipaint.evaluation.scoring import SATURATED
    from vipaint.pipeline import VIPaintConfig
    from vipaint.refine import RefineConfig

    data = Cifar10DemoDataModule(batch_size=24)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    x, keep = batch["x"], batch["keep_mask"]
    hole = (1 - keep).unsqueeze(1)

    def share(images: torch.Tensor) -> torch.Tensor:   # per image: the hole's share at |x| >= SATURATED
        return ((images.abs() >= SATURATED) * hole).flatten(1).sum(1) / hole.expand_as(images).flatten(1).sum(1)

    def run(decoder_error: bool) -> torch.Tensor:
        cfg = VIPaintConfig(refine=RefineConfig(decoder_error=decoder_error))
        return Inpainter("vipaint-cifar10-latent", vipaint=cfg, n_samples=2, init="hand")(
            x, keep, torch.Generator().manual_seed(0)).samples

    truth = share(x.unsqueeze(1))
    for decoder_error in (False, True):
        got = share(run(decoder_error))
        assert bool((got < truth + 0.05).all()) and float(got.mean()) < float(truth.mean()), (decoder_error, got, truth)

"""The weights this project trained and ships in ``weights/``, by name, and loading a prior from a name, a
folder or a hub id: the one registry (the Lightning module, the Python API, the benches and the amortized
encoder all look here).

| name | folder | what |
|---|---|---|
| ``vipaint-mnist`` (default) | ``weights/mnist-ddpm`` | pixel DDPM of MNIST digits, 28x28 |
| ``vipaint-cifar10-latent`` | ``weights/cifar10-ldm`` | latent DDPM of CIFAR-10: f4 autoencoder + UNet on 8x8x4 |
| ``vipaint-cifar10`` | ``weights/cifar10-ddpm`` | pixel DDPM of CIFAR-10, 32x32x3 |

Each folder carries its model card (``README.md``) and, where VIPaint's defaults were tuned for that prior,
``vipaint.json``: the tuned settings (``pipeline.TUNABLE``), applied where a run leaves them unset (None).
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["WEIGHTS", "SHIPPED_PRIORS", "SHIPPED_ENCODERS", "DEFAULT_PRIOR", "TUNED_FILE", "load_prior", "tuned_settings"]

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SHIPPED_PRIORS: dict[str, Path] = {"vipaint-mnist": WEIGHTS / "mnist-ddpm",
                                   "vipaint-cifar10-latent": WEIGHTS / "cifar10-ldm",
                                   "vipaint-cifar10": WEIGHTS / "cifar10-ddpm"}
# Shipped prior folder -> the encoder trained on it (`python train.py fit --config configs/amortized_mnist.yaml`).
SHIPPED_ENCODERS: dict[Path, Path] = {WEIGHTS / "mnist-ddpm": WEIGHTS / "mnist-amortized"}
DEFAULT_PRIOR = "vipaint-mnist"
TUNED_FILE = "vipaint.json"


def tuned_settings(folder: str | Path | None) -> dict[str, float]:
    """The settings tuned for the prior in ``folder`` (its ``vipaint.json``: ``{"refine.scale": 2.0}``), or {}."""
    if folder is None or not (Path(folder) / TUNED_FILE).is_file():
        return {}
    path = Path(folder) / TUNED_FILE
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"cannot read the tuned settings {path}: {e}") from None
    return {k: v for k, v in data.items() if not k.startswith("_")}   # "_why" keys document the measurement


def load_prior(pretrained: str = DEFAULT_PRIOR, **kwargs):
    """A ``Prior`` from a shipped name, a local diffusers folder or a hub id: ``LatentPrior`` where the folder
    holds ``unet/`` beside ``vae/`` or ``vqvae/`` (the hub's latent layout), else ``PixelPrior``."""
    from .external import LatentPrior, PixelPrior

    folder = SHIPPED_PRIORS.get(pretrained, Path(pretrained).expanduser())
    latent = (folder / "unet").is_dir() and ((folder / "vae").is_dir() or (folder / "vqvae").is_dir())
    return (LatentPrior if latent else PixelPrior)(pretrained, **kwargs)

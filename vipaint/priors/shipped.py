"""The weights this project trained and ships in ``weights/``, by name: the one registry (``external.load_prior``,
the Python API, the benches and the amortized encoder all look here). Stdlib only: the adapters import it, never
the other way round.

| name | folder | what |
|---|---|---|
| ``vipaint-mnist`` (default) | ``weights/mnist-ddpm`` | pixel DDPM of MNIST digits, 28x28 |
| ``vipaint-cifar10-latent`` | ``weights/cifar10-ldm`` | latent DDPM of CIFAR-10: f4 autoencoder + UNet on 8x8x4 |
| ``vipaint-cifar10`` | ``weights/cifar10-ddpm`` | pixel DDPM (v-prediction) of CIFAR-10, 32x32x3 (quality: its card) |
| ``vipaint-mnist-inpaint`` | ``weights/mnist-inpaint`` | not a prior: a conditional DDPM of MNIST trained for inpainting |
|  |  | (``priors.conditional``, the "conditional" method) |

Each folder carries its model card (``README.md``) and, where VIPaint's defaults were tuned for that prior,
``vipaint.json``: the tuned settings (``pipeline.TUNABLE``), applied where a run leaves them unset (None).
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["WEIGHTS", "SHIPPED_PRIORS", "SHIPPED_CONDITIONAL", "SHIPPED_ENCODERS", "DEFAULT_PRIOR", "RECIPES", "TUNED_FILE", "NotShipped",
           "shipped_folder", "shipped_name", "tuned_settings"]

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SHIPPED_PRIORS: dict[str, Path] = {"vipaint-mnist": WEIGHTS / "mnist-ddpm",
                                   "vipaint-cifar10-latent": WEIGHTS / "cifar10-ldm",
                                   "vipaint-cifar10": WEIGHTS / "cifar10-ddpm"}
# Models trained for the task, not priors (``priors.conditional.load_conditional``).
SHIPPED_CONDITIONAL: dict[str, Path] = {"vipaint-mnist-inpaint": WEIGHTS / "mnist-inpaint"}
# Shipped prior folder -> the encoder trained on it (`python train.py fit --config configs/amortized_{mnist,cifar10}.yaml`).
SHIPPED_ENCODERS: dict[Path, Path] = {WEIGHTS / "mnist-ddpm": WEIGHTS / "mnist-amortized",
                                      WEIGHTS / "cifar10-ldm": WEIGHTS / "cifar10-ldm-amortized"}
DEFAULT_PRIOR = "vipaint-mnist"
#: The training config each shipped prior comes from (its model card has the full recipe).
RECIPES: dict[str, str] = {"vipaint-mnist": "configs/prior_mnist.yaml",
                           "vipaint-cifar10-latent": "configs/prior_cifar10_latent.yaml",
                           "vipaint-cifar10": "configs/prior_cifar10.yaml",
                           "vipaint-mnist-inpaint": "configs/conditional_mnist.yaml"}
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


class NotShipped(FileNotFoundError):
    """A registered name whose folder is not in this checkout."""


def shipped_folder(name: str) -> Path:
    """The folder of the shipped prior (``SHIPPED_PRIORS``) or conditional model (``SHIPPED_CONDITIONAL``) ``name``;
    ``NotShipped`` in one sentence if it is absent."""
    path = {**SHIPPED_PRIORS, **SHIPPED_CONDITIONAL}[name]
    if (path / "config.json").is_file() or (path / "unet" / "config.json").is_file():
        return path
    recipe = RECIPES.get(name)
    how = f"train it with `python train.py fit --config {recipe}` and publish it there" if recipe else "re-clone"
    what = "model" if name in SHIPPED_CONDITIONAL else "prior"
    raise NotShipped(f"the {what} '{name}' is not in this checkout ({path} holds no weights): it is not shipped yet "
                     f"or the checkout is incomplete; {how}")


def shipped_name(folder: str | Path | None) -> str | None:
    """The registered name of the shipped prior loaded from ``folder`` (so records name it, not this machine's
    path), else ``folder`` as given (a hub id, a user's folder) or None."""
    if folder is None:
        return None
    resolved = Path(folder).resolve()
    return next((name for name, path in SHIPPED_PRIORS.items() if path.resolve() == resolved), str(folder))

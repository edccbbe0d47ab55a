"""Small classifiers trained by the benchmarks themselves, for the plausibility score ("is the completion of the
right class?"): one for MNIST digits, one for CIFAR-10.

    python -m bench.classifier mnist [MNIST_DIR]     # train (minutes at one CPU thread) or show the cached one
    python -m bench.classifier cifar10 [ZIP]

Trained on the train split only (MNIST: the 59,000 digits the prior was trained on; CIFAR-10: its 50,000 training
images), Adam; the clean test accuracy on the whole test split is stored with the weights and printed by every
bench that uses it. Cached in ``$VIPAINT_CACHE/<data>`` (default ``~/.cache/vipaint``), keyed by the architecture
and recipe version, so a change retrains.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DigitClassifier", "Cifar10Classifier", "RECIPES", "load_or_train", "train"]


class _Classifier(nn.Module):
    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Labels (M,) of images (M, C, H, W) in [-1, 1]."""
        self.eval()
        return torch.cat([self(x[i:i + 1024]).argmax(1) for i in range(0, x.shape[0], 1024)])


class DigitClassifier(_Classifier):
    """Two conv blocks and two linear layers (~0.2 M parameters): ~99% clean test accuracy on MNIST."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x):  # x: (M, 1, 28, 28) in [-1, 1]
        return self.head(self.features(x))


class Cifar10Classifier(_Classifier):
    """Three VGG-style conv blocks with batch norm and a linear head (~0.3 M parameters) for 32x32x3 images."""

    def __init__(self):
        super().__init__()

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                    nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, 10))

    def forward(self, x):  # x: (M, 3, 32, 32) in [-1, 1]
        return self.head(self.features(x))


def _shift(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """The batch rolled by a random offset in [-pixels, pixels] on each axis (one offset per batch)."""
    return torch.roll(x, shifts=tuple(torch.randint(-pixels, pixels + 1, (2,)).tolist()), dims=(2, 3))


def _mnist(root, split):
    from datamodules.mnist import load_mnist

    x, labels = load_mnist(root, split)
    return (x[:59000], labels[:59000]) if split == "train" else (x, labels)   # the last 1,000: the prior's validation


def _cifar10(root, split):
    from datamodules.cifar10 import Cifar10Zip

    source = Cifar10Zip(root, split)
    return torch.stack([source.load_image(i) for i in range(len(source))]), torch.tensor(source.labels)


@dataclass(frozen=True)
class Recipe:
    """How one data set's classifier is built and trained. ``augment``: a batch's random transformation (small
    shifts make it robust to slightly off-centre completions; CIFAR-10 adds horizontal flips)."""

    model: type[_Classifier]
    load: Callable[[str | None, str], tuple[torch.Tensor, torch.Tensor]]
    epochs: int
    augment: Callable[[torch.Tensor], torch.Tensor]
    lr: float = 1e-3
    one_cycle: bool = False     # Adam at a constant ``lr`` (MNIST, as its tables were measured) or one cycle to it
    version: int = 1


def _flip_shift(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0]) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return _shift(x, 2)


RECIPES = {"mnist": Recipe(DigitClassifier, _mnist, epochs=3, augment=lambda x: _shift(x, 2)),
           "cifar10": Recipe(Cifar10Classifier, _cifar10, epochs=12, augment=_flip_shift, lr=2e-3, one_cycle=True)}
_CACHE_NAMES = {"mnist": "digit_classifier", "cifar10": "cifar10_classifier"}


def _cache_dir(data: str) -> Path:
    return Path(os.environ.get("VIPAINT_CACHE", Path.home() / ".cache" / "vipaint")) / _CACHE_NAMES[data]


def train(data: str, root: str | None = None, seed: int = 0, epochs: int | None = None) -> tuple[_Classifier, dict]:
    """Train ``data``'s classifier (``RECIPES``) on its train split; its clean accuracy on the test split."""
    recipe = RECIPES[data]
    torch.manual_seed(seed)
    x, labels = recipe.load(root, "train")
    model = recipe.model()
    epochs = recipe.epochs if epochs is None else epochs
    opt = torch.optim.Adam(model.parameters(), recipe.lr)
    steps = epochs * -(-len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=steps) if recipe.one_cycle else None
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(model(recipe.augment(x[idx])), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    x_test, y_test = recipe.load(root, "test")
    acc = float((model.classify(x_test) == y_test).float().mean())
    info = {"data": data, "version": recipe.version, "test_accuracy": acc, "epochs": epochs,
            "train_images": len(x), "seconds": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d")}
    return model.eval(), info


def load_or_train(data: str, root: str | None = None) -> tuple[_Classifier, dict]:
    """The cached classifier of ``data`` ("mnist" or "cifar10"), trained first if missing or stale."""
    from safetensors.torch import load_file, save_file

    if data not in RECIPES:
        raise ValueError(f"no classifier for data {data!r}; one of {sorted(RECIPES)}")
    d = _cache_dir(data)
    meta = d / "info.json"
    if meta.exists() and json.loads(meta.read_text()).get("version") == RECIPES[data].version:
        model = RECIPES[data].model()
        model.load_state_dict(load_file(d / "model.safetensors"))
        return model.eval(), json.loads(meta.read_text())
    model, info = train(data, root)
    d.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), d / "model.safetensors")
    meta.write_text(json.dumps(info, indent=1))
    return model, info


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in RECIPES:
        raise SystemExit(f"usage: python -m bench.classifier {{{','.join(RECIPES)}}} [DATA_PATH]")
    _, info = load_or_train(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps(info, indent=1), f"\ncached in {_cache_dir(sys.argv[1])}")

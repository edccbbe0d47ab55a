"""A small MNIST digit classifier, trained by the benchmarks themselves, for the plausibility score.

    python -m bench.digit_classifier [MNIST_DIR]   # train (about a minute on 2 CPU cores) or show the cached one

Trained on the MNIST train split only (the 59,000 digits the prior was trained on; the test split stays
held out), 3 epochs of Adam; its clean test accuracy is measured on all 10,000 test digits and stored
with the weights. Cached in ``$VIPAINT_CACHE/digit_classifier`` (default ``~/.cache/vipaint``): the cache is
keyed by the architecture and recipe version, so a change retrains.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

VERSION = 1


class DigitClassifier(nn.Module):
    """Two conv blocks and two linear layers (~0.2 M parameters): ~99% clean test accuracy."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x):  # x: (M, 1, 28, 28) in [-1, 1]
        return self.head(self.features(x))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        self.eval()
        return torch.cat([self(x[i:i + 1024]).argmax(1) for i in range(0, x.shape[0], 1024)])


def _cache_dir() -> Path:
    return Path(os.environ.get("VIPAINT_CACHE", Path.home() / ".cache" / "vipaint")) / "digit_classifier"


def train(mnist_root: str | None = None, epochs: int = 3, seed: int = 0) -> tuple[DigitClassifier, dict]:
    from datamodules.mnist import load_mnist

    torch.manual_seed(seed)
    x, labels = load_mnist(mnist_root, "train")
    x, labels = x[:59000], labels[:59000]          # the prior's training digits; the last 1,000 are validation
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(128):
            # Small random shifts make the classifier robust to slightly off-centre completions.
            xb = torch.roll(x[idx], shifts=tuple(torch.randint(-2, 3, (2,)).tolist()), dims=(2, 3))
            loss = F.cross_entropy(model(xb), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    x_test, y_test = load_mnist(mnist_root, "test")
    acc = float((model.classify(x_test) == y_test).float().mean())
    info = {"version": VERSION, "test_accuracy": acc, "epochs": epochs, "train_digits": len(x),
            "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d")}
    return model.eval(), info


def load_or_train(mnist_root: str | None = None) -> tuple[DigitClassifier, dict]:
    """The cached classifier, trained first if missing or stale."""
    from safetensors.torch import load_file, save_file

    d = _cache_dir()
    meta = d / "info.json"
    if meta.exists() and json.loads(meta.read_text()).get("version") == VERSION:
        model = DigitClassifier()
        model.load_state_dict(load_file(d / "model.safetensors"))
        return model.eval(), json.loads(meta.read_text())
    model, info = train(mnist_root)
    d.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), d / "model.safetensors")
    meta.write_text(json.dumps(info, indent=1))
    return model, info


if __name__ == "__main__":
    _, info = load_or_train(sys.argv[1] if len(sys.argv) > 1 else None)
    print(json.dumps(info, indent=1), f"\ncached in {_cache_dir()}")

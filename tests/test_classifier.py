"""The benches' own classifiers (``bench.classifier``, the plausibility score): the CIFAR-10 recipe learns a
separable fake data set from its zip layout, and the cache returns the same model without retraining."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import torch
from PIL import Image

from bench import classifier


def _zip(path, n_train=48, n_test=16):
    """A zip in cifar10_jpeg.zip's layout whose two classes differ in colour: airplanes reddish, cats bluish."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for split, n in (("train", n_train), ("test", n_test)):
            for c, cls in enumerate(("airplane", "cat")):
                for i in range(n):
                    im = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
                    im[..., 0 if c == 0 else 2] += 120
                    buf = io.BytesIO()
                    Image.fromarray(im).save(buf, format="JPEG")
                    z.writestr(f"{split}/{cls}/{i:04d}.jpg", buf.getvalue())
    return path


def test_cifar10_classifier_learns_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPAINT_CACHE", str(tmp_path / "cache"))
    path = str(_zip(tmp_path / "c.zip"))
    monkeypatch.setitem(classifier.RECIPES, "cifar10",
                        classifier.Recipe(classifier.Cifar10Classifier, classifier._cifar10, epochs=25,
                                          augment=classifier._flip_shift, lr=2e-3, one_cycle=True))
    torch.set_num_threads(1)
    model, info = classifier.load_or_train("cifar10", path)
    assert info["data"] == "cifar10" and info["train_images"] == 96 and info["test_accuracy"] == 1.0
    x_test, y_test = classifier._cifar10(path, "test")
    calls = []
    monkeypatch.setattr(classifier, "train", lambda *a, **k: calls.append(a))
    again, info2 = classifier.load_or_train("cifar10", path)           # from the cache: no training
    assert not calls and info2 == json.loads(json.dumps(info))
    assert torch.equal(again.classify(x_test), model.classify(x_test)) and torch.equal(again.classify(x_test), y_test)

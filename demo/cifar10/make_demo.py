"""Build the CIFAR-10 demo set of ``python infer.py --config configs/infer_cifar10.yaml``: 24 test images, one per
mask, from the *end* of each class's test list (so the set is disjoint from the validation images the training
runs use, ``Cifar10DataModule``'s first test images per class, and from the benchmarks', which count from the start).

    VIPAINT_CIFAR10_ZIP=/path/to/cifar10_jpeg.zip python demo/cifar10/make_demo.py

Masks cycle through the four kinds of the natural-images issue: a centre box of 50%, the bottom half, free-form
strokes, 90% random pixels. White = observed, black = missing (``datamodules.io``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from datamodules.cifar10 import CIFAR10_CLASSES, Cifar10Zip  # noqa: E402
from datamodules.masks import PRESETS  # noqa: E402

N = 24
KINDS = ("box50", "half", "strokes", "pixels90")


def main() -> None:
    import torch

    out = Path(__file__).resolve().parent
    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    source = Cifar10Zip(split="test")
    last = {}   # the last index of each class in the sorted member list
    for i, label in enumerate(source.labels):
        last[label] = i
    table = {}
    for k in range(N):
        label = k % len(CIFAR10_CLASSES)
        index = last[label] - k // len(CIFAR10_CLASSES)
        name, kind = source.name(index), KINDS[k % len(KINDS)]
        x = source.load_image(index)
        keep = PRESETS[kind]((32, 32), torch.Generator().manual_seed(k))[0]
        Image.fromarray(((x + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()).save(
            out / "images" / f"{name}.png")
        Image.fromarray((keep.numpy() * 255).astype(np.uint8)).save(out / "masks" / f"{name}.png")
        table[name] = {"class": CIFAR10_CLASSES[label], "mask": kind, "missing_fraction": round(1 - float(keep.mean()), 3)}
    (out / "demo.json").write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {N} images and masks to {out}")


if __name__ == "__main__":
    main()

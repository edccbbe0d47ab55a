"""Build the demo set of ``python infer.py``: the first 24 MNIST test digits and a seeded mask for each.

    VIPAINT_MNIST_DIR=/path/to/mnist python demo/mnist/make_demo.py

Masks cycle through the three kinds of the default job: the bottom half missing, a centred box of 50%,
free-form strokes (20-50%). White = observed, black = missing (``datamodules.io``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from datamodules.masks import BoxMask, HalfMask, StrokesMask  # noqa: E402
from datamodules.mnist import load_mnist  # noqa: E402

N = 24
KINDS = {"half": HalfMask(angle=270.0), "box": BoxMask(0.5), "strokes": StrokesMask()}


def main() -> None:
    import torch

    out = Path(__file__).resolve().parent
    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    x, labels = load_mnist(None, "test")
    table = {}
    for i in range(N):
        name = f"test_{i:05d}"
        kind = list(KINDS)[i % len(KINDS)]
        keep = KINDS[kind]((28, 28), torch.Generator().manual_seed(i))[0]
        img = ((x[i, 0] + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(img, mode="L").save(out / "images" / f"{name}.png")
        Image.fromarray((keep.numpy() * 255).astype(np.uint8), mode="L").save(out / "masks" / f"{name}.png")
        table[name] = {"label": int(labels[i]), "mask": kind, "missing_fraction": round(1 - float(keep.mean()), 3)}
    (out / "demo.json").write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {N} digits and masks to {out}")


if __name__ == "__main__":
    main()

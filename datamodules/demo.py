"""Real photos bundled inside the scikit-image wheel, for demos and smoke tests.

Only images shipped in the wheel itself are offered: some ``skimage.data``
images (e.g. ``eagle``, ``brain``, ``lily``) are fetched with pooch on first
use, which fails offline, so they are deliberately left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import ImageMaskDataModule, ImageMaskDataset, ImageSource
from .folder import FolderDataModule

__all__ = ["DEMO_IMAGES", "DEFAULT_DEMO_IMAGES", "MNIST_DEMO_DIR", "SkimageSource", "DemoDataModule",
           "MnistDemoDataModule", "Cifar10DemoDataModule", "CIFAR10_DEMO_DIR", "load_skimage"]

# The demo sets shipped in the repository (demo/*/README.md: provenance, attribution and licence).
MNIST_DEMO_DIR = Path(__file__).resolve().parents[1] / "demo" / "mnist"
CIFAR10_DEMO_DIR = Path(__file__).resolve().parents[1] / "demo" / "cifar10"

# name -> loader; the colour photos come first and are the default set.
DEFAULT_DEMO_IMAGES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
)
DEMO_IMAGES: tuple[str, ...] = DEFAULT_DEMO_IMAGES + (
    "cat",
    "colorwheel",
    "retina",
    "camera",  # grayscale: repeated to 3 channels
    "moon",  # grayscale
    "coins",  # grayscale
)


def load_skimage(name: str) -> torch.Tensor:
    """One bundled photo as float ``(C, H, W)`` in [-1, 1] (C = 1 for grayscale)."""
    if name not in DEMO_IMAGES:
        raise ValueError(f"unknown demo image {name!r}; choose from {', '.join(DEMO_IMAGES)}")
    import skimage.data  # deferred: importing scikit-image costs ~1 s

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype != np.uint8:
        raise ValueError(f"demo image {name!r} has dtype {array.dtype}, expected uint8")
    if array.ndim == 2:
        array = array[:, :, None]
    x = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()
    return x / 127.5 - 1.0


class SkimageSource(ImageSource):
    def __init__(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in DEMO_IMAGES]
        if unknown:
            raise ValueError(
                f"unknown demo image(s) {', '.join(map(repr, unknown))}; choose from {', '.join(DEMO_IMAGES)}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"demo image names must be unique, got {names}")
        if not names:
            raise ValueError("names must list at least one demo image")
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        return self.names[index]

    def load_image(self, index: int) -> torch.Tensor:
        return load_skimage(self.names[index])


class DemoDataModule(ImageMaskDataModule):
    """A handful of real photos from scikit-image, needing no download.

    Args:
        names: which photos (default: the six colour ones in ``DEFAULT_DEMO_IMAGES``).
        image_size: centre-crop to a square and resize (antialiased) to this side.
        mask, mask_ratio, seed: generated masks, as in ``FolderDataModule``.
        limit: use only the first ``limit`` photos.
    """

    def __init__(
        self,
        names: list[str] | None = None,
        image_size: int = 32,
        mask: str = "box",
        mask_ratio: float | tuple[float, float] | None = 0.3,
        seed: int = 0,
        limit: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> None:
        super().__init__(mask=mask, mask_ratio=mask_ratio, seed=seed, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        if image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit}")
        chosen = list(DEFAULT_DEMO_IMAGES if names is None else names)[:limit]
        # Validated now (no image is decoded yet) so a typo fails at config time.
        self.source = SkimageSource(chosen)
        self.image_size = image_size

    def _build_dataset(self) -> ImageMaskDataset:
        return ImageMaskDataset(
            self.source,
            mask=self.mask_generator,
            seed=self.seed,
            image_size=self.image_size,
            channels=3,
        )


class MnistDemoDataModule(FolderDataModule):
    """The 24 held-out MNIST test digits shipped in ``demo/mnist`` with their masks (half, box, strokes):
    the input of the default ``python infer.py``. No download, no configuration.

    Args:
        limit: use only the first ``limit`` digits. batch_size, num_workers: loading.
    """

    def __init__(self, limit: int | None = None, batch_size: int = 24, num_workers: int = 0) -> None:
        super().__init__(image_dir=str(MNIST_DEMO_DIR / "images"), mask_dir=str(MNIST_DEMO_DIR / "masks"),
                         image_size=28, channels=1, limit=limit, batch_size=batch_size, num_workers=num_workers)


class Cifar10DemoDataModule(FolderDataModule):
    """The 24 held-out CIFAR-10 test images shipped in ``demo/cifar10`` with their masks (centre box, half, strokes,
    90% pixels): the input of ``configs/infer_cifar10.yaml``. No download, no configuration.

    Args:
        limit: use only the first ``limit`` images. batch_size, num_workers: loading.
    """

    def __init__(self, limit: int | None = None, batch_size: int = 24, num_workers: int = 0) -> None:
        super().__init__(image_dir=str(CIFAR10_DEMO_DIR / "images"), mask_dir=str(CIFAR10_DEMO_DIR / "masks"),
                         image_size=32, channels=3, limit=limit, batch_size=batch_size, num_workers=num_workers)

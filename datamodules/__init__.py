"""Datasets and Lightning datamodules for inpainting.

Items are dicts ``{"x": (C,H,W) float in [-1,1], "keep_mask": (1,H,W) float
(1 = observed, 0 = missing), "name": str, "index": int}``.
"""

from __future__ import annotations

import importlib

# Resolved lazily (PEP 562) so that e.g. ``from datamodules.masks import BoxMask``
# does not pay for importing Lightning.
_EXPORTS = {
    "base": ["ImageMaskDataModule", "ImageMaskDataset", "ImageSource", "PlainImages", "collate_items", "resize_square"],
    "cifar10": ["Cifar10DataModule", "Cifar10Zip", "TorchvisionCifar10"],
    "mnist": ["IDX_FILES", "MnistDataModule", "MnistIdx", "TensorImages", "TorchvisionMnist", "load_mnist", "read_idx"],
    "demo": ["CIFAR10_DEMO_DIR", "Cifar10DemoDataModule", "DEFAULT_DEMO_IMAGES", "DEMO_IMAGES", "DemoDataModule",
             "MNIST_DEMO_DIR", "MnistDemoDataModule", "SkimageSource"],
    "folder": ["FileSource", "FolderDataModule", "FolderDataset"],
    "io": ["IMAGE_EXTENSIONS", "read_image", "read_mask"],
    "masks": ["MASKS", "MIX4", "PRESETS", "BoxMask", "HalfMask", "MaskGenerator", "Mix4Mask", "MixedMask",
              "RandomBoxesMask", "RandomPixelsMask", "StrokesMask", "make_mask", "mask_from_name"],
    "validation": ["adapt_channels", "check_image", "check_image_and_mask"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)  # every name of _EXPORTS, declared once there


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

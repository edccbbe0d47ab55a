"""MNIST from its original IDX files (or downloaded with torchvision), for training priors and evaluation.

The folder (``root`` or ``VIPAINT_MNIST_DIR``, see ``vipaint.resources``) holds the four files of the
official release, gzipped or not: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``. Digits are 28x28 grey, mapped to [-1, 1]
(0 -> -1, 255 -> 1). Items are named ``<split>_<NNNNN>`` (index in the official order).

Splits: ``train`` trains priors and encoders, except its last ``val_holdout`` digits, kept back for
validation during training; ``test`` is held out for evaluation only.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .base import ImageMaskDataModule, ImageMaskDataset, ImageSource, PlainImages

__all__ = ["IDX_FILES", "read_idx", "load_mnist", "MnistIdx", "TorchvisionMnist", "MnistDataModule", "TensorImages"]

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"MNIST file {root / stem}[.gz] is missing (expected the official IDX release in {root})")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array of its declared shape.

    Raises ``ValueError`` naming the file if the magic number, the dtype or the size do not agree.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = raw[2], raw[3]
    if dtype != 0x08:
        raise ValueError(f"{path}: IDX data type 0x{dtype:02x} is not unsigned byte (0x08)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: its header is incomplete")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    need = int(np.prod(shape))
    if len(raw) - header != need:
        raise ValueError(f"{path} is truncated or corrupt: header declares shape {shape} = {need} bytes, "
                         f"the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(root: str | Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N,1,28,28) float in [-1,1], labels (N,) int64)`` of ``split`` from the IDX folder."""
    from vipaint.resources import resolve

    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = resolve("mnist", root, "--data.init_args.root")
    img_file, lab_file = (_find_file(folder, s) for s in IDX_FILES[split])
    images, labels = read_idx(img_file), read_idx(lab_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{img_file}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{lab_file}: {labels.shape[0] if labels.ndim else 0} labels for {images.shape[0]} images")
    x = torch.from_numpy(images.copy()).float().div_(127.5).sub_(1.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


class TensorImages(ImageSource):
    """Images held in memory, ``(N, C, H, W)`` in [-1, 1], named ``<prefix>_<index>``."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None, prefix: str, offset: int = 0) -> None:
        self.x, self.labels, self.prefix, self.offset = x, labels, prefix, offset

    def __len__(self) -> int:
        return self.x.shape[0]

    def name(self, index: int) -> str:
        return f"{self.prefix}_{index + self.offset:05d}"

    def load_image(self, index: int) -> torch.Tensor:
        return self.x[index]


class MnistIdx(TensorImages):
    """One MNIST split from the IDX folder, optionally a contiguous range ``[start, stop)`` of it."""

    def __init__(self, root: str | None, split: str = "test", start: int = 0, stop: int | None = None) -> None:
        x, labels = load_mnist(root, split)
        super().__init__(x[start:stop], labels[start:stop], split, offset=start)


class TorchvisionMnist(TensorImages):
    """MNIST through ``torchvision.datasets.MNIST`` (``download=True`` for users with internet)."""

    def __init__(self, root: str, split: str = "test", download: bool = False, start: int = 0,
                 stop: int | None = None) -> None:
        from torchvision.datasets import MNIST

        try:
            ds = MNIST(root, train=split == "train", download=download)
        except RuntimeError as e:
            raise ValueError(f"cannot load torchvision MNIST from {root}: {e}") from None
        x = ds.data.float().div(127.5).sub(1.0).unsqueeze(1)
        super().__init__(x[start:stop], ds.targets[start:stop], split, offset=start)


class MnistDataModule(ImageMaskDataModule):
    """MNIST digits with generated masks (predict/test) and a training split for priors and encoders.

    Args:
        source: "idx" (files in ``root`` / ``VIPAINT_MNIST_DIR``) or "torchvision" (``root`` is its folder).
        root: the IDX folder, or torchvision's download folder.
        download: let torchvision download (source="torchvision" only).
        split: split of predict/test ("test" by default: the held-out digits).
        limit: only the first ``limit`` digits of ``split``.
        val_holdout: the last this many training digits are not trained on; the first ``val_limit`` of
            them form the validation batch (``val_split="train"``).
        val_split: "train" (the held-back training digits) or "test": the *last* ``val_limit`` test digits,
            held out from training and disjoint from the first test digits that the benchmarks score.
        train_masks: training items carry fresh masks (amortized encoder) or only digits (prior).
        mask, mask_ratio, seed, batch_size, num_workers: as in ``ImageMaskDataModule``.
    """

    def __init__(self, source: str = "idx", root: str | None = None, download: bool = False, split: str = "test",
                 limit: int | None = None, val_holdout: int = 1000, val_limit: int = 256, val_split: str = "train",
                 train_masks: bool = False,
                 mask: str = "half", mask_ratio: float | tuple[float, float] | None = None, seed: int = 0,
                 batch_size: int = 16, num_workers: int = 0) -> None:
        super().__init__(mask=mask, mask_ratio=mask_ratio, seed=seed, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        if source not in ("idx", "torchvision"):
            raise ValueError(f"source must be 'idx' or 'torchvision', got {source!r}")
        if split not in IDX_FILES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit}")
        if val_split not in IDX_FILES:
            raise ValueError(f"val_split must be 'train' or 'test', got {val_split!r}")
        if not 0 < val_limit <= val_holdout:
            raise ValueError(f"need 0 < val_limit <= val_holdout, got {val_limit}, {val_holdout}")
        self.source, self.root, self.download, self.split, self.limit = source, root, download, split, limit
        self.val_holdout, self.val_limit, self.train_masks = val_holdout, val_limit, train_masks
        self.val_split = val_split
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    def prepare_data(self) -> None:
        if self.source == "torchvision" and self.download:
            for split in IDX_FILES:
                TorchvisionMnist(self.root or "data/mnist", split, download=True)

    def _source(self, split: str, start: int = 0, stop: int | None = None) -> TensorImages:
        if self.source == "idx":
            return MnistIdx(self.root, split, start, stop)
        return TorchvisionMnist(self.root or "data/mnist", split, False, start, stop)

    @staticmethod
    def _slice(src: TensorImages, start: int, stop: int) -> TensorImages:
        labels = None if src.labels is None else src.labels[start:stop]
        return TensorImages(src.x[start:stop], labels, src.prefix, src.offset + start)

    def _build_dataset(self) -> ImageMaskDataset:
        return ImageMaskDataset(self._source(self.split, 0, self.limit), mask=self.mask_generator, seed=self.seed,
                                channels=1)

    def setup(self, stage: str | None = None) -> None:
        if stage != "fit":
            return super().setup(stage)
        if self.train_dataset is not None:
            return
        full = self._source("train")
        n_train = len(full) - self.val_holdout
        if n_train < 1:
            raise ValueError(f"val_holdout={self.val_holdout} leaves no training digit of {len(full)}")
        train = self._slice(full, 0, n_train)
        self.train_dataset = (ImageMaskDataset(train, mask=self.mask_generator, channels=1, random_masks=True)
                              if self.train_masks else PlainImages(train.x))
        if self.val_split == "train":
            val = self._slice(full, n_train, n_train + self.val_limit)
        else:
            test = self._source("test")
            val = self._slice(test, len(test) - self.val_limit, len(test))
        self.val_dataset = ImageMaskDataset(val, mask=self.mask_generator, seed=self.seed, channels=1)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        if self.train_masks:
            return self._loader(self.train_dataset, shuffle=True, drop_last=True)
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.val_dataset, shuffle=False)

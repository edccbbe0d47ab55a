"""CIFAR-10, read straight from a zip of JPEGs or downloaded with torchvision.

The zip holds members ``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg``
(32x32 RGB). Its location comes from ``zip_path``, else the environment variable
``VIPAINT_CIFAR10_ZIP`` (``vipaint.resources``). Items are named ``<split>_<class>_<NNNN>``, e.g.
``test_cat_0001``; the torchvision source numbers images per class in
dataset order so names have the same shape.
"""

from __future__ import annotations

import io
import os
import re
import zipfile

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vipaint.resources import ResourceNotFound, resolve

from .base import ImageMaskDataModule, ImageMaskDataset, ImageSource, PlainImages
from .io import pil_to_unit_tensor

__all__ = ["CIFAR10_CLASSES", "BENCH_SPLITS", "Cifar10Zip", "TorchvisionCifar10", "Cifar10DataModule", "bench_images"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
SPLITS = ("train", "test")
_MEMBER = re.compile(r"^(train|test)/([^/]+)/([^/]+)\.(?:jpe?g|png)$", re.IGNORECASE)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


class Cifar10Zip(Dataset, ImageSource):
    """CIFAR-10 images from ``cifar10_jpeg.zip``, in sorted member order.

    As a ``Dataset`` an item is ``{"x": (3,32,32) in [-1,1], "label": int,
    "name": str, "index": int}``; as an ``ImageSource`` it feeds
    :class:`ImageMaskDataset`. The zip handle is opened lazily and reopened
    in each worker process, because zip file handles are not fork-safe.
    """

    def __init__(self, zip_path: str | None = None, split: str = "test") -> None:
        self.split = _check_split(split)
        try:
            self.zip_path = resolve("cifar10", zip_path, "--data.init_args.zip_path")
        except ResourceNotFound as error:
            raise ResourceNotFound(f"{error}; or use source='torchvision' to download") from None
        try:
            with zipfile.ZipFile(self.zip_path) as archive:
                members = archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise ValueError(f"cannot read CIFAR-10 zip {self.zip_path}: {error}") from None
        self.members: list[str] = []
        self.labels: list[int] = []
        self.names: list[str] = []
        for member in sorted(members):
            match = _MEMBER.match(member)
            if match is None or match.group(1) != split:
                continue
            cls = match.group(2)
            if cls not in CIFAR10_CLASSES:
                raise ValueError(f"unknown CIFAR-10 class {cls!r} in {self.zip_path} member {member}")
            self.members.append(member)
            self.labels.append(CIFAR10_CLASSES.index(cls))
            self.names.append(f"{split}_{cls}_{match.group(3)}")
        if not self.members:
            raise ValueError(f"no '{split}/<class>/*.jpg' images in {self.zip_path}")
        self._archive: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_archive"], state["_pid"] = None, None
        return state

    def _zip(self) -> zipfile.ZipFile:
        if self._archive is None or self._pid != os.getpid():
            self._archive = zipfile.ZipFile(self.zip_path)
            self._pid = os.getpid()
        return self._archive

    def __len__(self) -> int:
        return len(self.members)

    def name(self, index: int) -> str:
        return self.names[index]

    def load_image(self, index: int) -> torch.Tensor:
        member = self.members[index]
        where = f"{self.zip_path}:{member}"
        try:
            with Image.open(io.BytesIO(self._zip().read(member))) as image:
                image = image.convert("RGB")
        except (OSError, SyntaxError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"cannot read image {where}: {error}") from None
        return pil_to_unit_tensor(image, where) * 2.0 - 1.0

    def __getitem__(self, index: int) -> dict:
        return {"x": self.load_image(index), "label": self.labels[index], "name": self.names[index], "index": index}


class TorchvisionCifar10(ImageSource):
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` (downloads when asked)."""

    def __init__(self, root: str, split: str = "test", download: bool = False) -> None:
        from torchvision.datasets import CIFAR10

        self.split = _check_split(split)
        try:
            self.dataset = CIFAR10(root, train=split == "train", download=download)
        except RuntimeError as error:
            raise ValueError(f"cannot load torchvision CIFAR-10 from {root}: {error}") from None
        seen = [0] * len(CIFAR10_CLASSES)
        self.labels: list[int] = list(self.dataset.targets)
        self.names: list[str] = []
        for label in self.labels:
            self.names.append(f"{split}_{CIFAR10_CLASSES[label]}_{seen[label]:04d}")
            seen[label] += 1

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return self.names[index]

    def load_image(self, index: int) -> torch.Tensor:
        image, _ = self.dataset[index]
        return pil_to_unit_tensor(image, f"CIFAR-10 {self.names[index]}") * 2.0 - 1.0


class _Subset(ImageSource):
    """The first ``limit`` images taking one per class in turn.

    Sorted order groups images by class, so a plain prefix would be all
    airplanes; round-robin keeps small evaluation subsets class-balanced.
    """

    def __init__(self, source: Cifar10Zip | TorchvisionCifar10, limit: int) -> None:
        rank, seen = [], [0] * len(CIFAR10_CLASSES)
        for label in source.labels:
            rank.append(seen[label])
            seen[label] += 1
        order = sorted(range(len(source)), key=lambda i: (rank[i], source.labels[i]))
        self.source, self.indices = source, order[:limit]

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        return self.source.name(self.indices[index])

    def load_image(self, index: int) -> torch.Tensor:
        return self.source.load_image(self.indices[index])


#: Held-out test images for the benchmarks, by the index of an image within its class (``test/<class>/NNNN.jpg``):
#: disjoint from the first images per class (training runs validate on ``val_limit`` of them, one per class in
#: turn) and from the demo set (``demo/cifar10``: the last three per class). "dev" is where settings are tuned,
#: "eval" where they are measured.
BENCH_SPLITS: dict[str, range] = {"eval": range(100, 900), "dev": range(900, 990)}


def bench_images(n: int, split: str = "eval", seed: int = 0, zip_path: str | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` class-balanced test images of a benchmark split (``BENCH_SPLITS``): image i is of class i mod 10, its
    index within the class drawn without replacement from the split's range by ``seed``. Returns (x (n, 3, 32, 32)
    in [-1, 1], labels (n,), names)."""
    if split not in BENCH_SPLITS:
        raise ValueError(f"split must be one of {sorted(BENCH_SPLITS)}, got {split!r}")
    allowed = BENCH_SPLITS[split]
    per_class = -(-n // len(CIFAR10_CLASSES))
    if per_class > len(allowed):
        raise ValueError(f"the {split!r} split holds {len(allowed)} images per class; asked for {n} images")
    source = Cifar10Zip(zip_path, "test")
    where = {name: i for i, name in enumerate(source.names)}
    g = torch.Generator().manual_seed(seed)
    picks = [[allowed[j] for j in torch.randperm(len(allowed), generator=g)[:per_class].tolist()]
             for _ in CIFAR10_CLASSES]
    names = [f"test_{CIFAR10_CLASSES[i % 10]}_{picks[i % 10][i // 10]:04d}" for i in range(n)]
    missing = [nm for nm in names if nm not in where]
    if missing:
        raise ValueError(f"{source.zip_path} lacks the test images {missing[:3]}...: is it the full CIFAR-10 zip?")
    x = torch.stack([source.load_image(where[nm]) for nm in names])
    return x, torch.tensor([i % 10 for i in range(n)]), names


class Cifar10DataModule(ImageMaskDataModule):
    """CIFAR-10 with generated masks.

    ``test``/``predict`` loaders iterate ``split`` in order; ``train_dataloader``
    iterates the train split shuffled, with random horizontal flips and masks
    that change every epoch, for training priors.

    Args:
        source: "zip" (``zip_path`` / ``VIPAINT_CIFAR10_ZIP``) or "torchvision".
        zip_path: path to ``cifar10_jpeg.zip``.
        root: torchvision download folder (source="torchvision" only).
        split: "test" or "train", the split used for test/predict.
        limit: use only ``limit`` images of ``split``, taken one per class in
            turn (test_airplane_0000, test_automobile_0000, ...).
        train_limit: the same for the training split.
        train_masks: training items carry fresh masks (amortized encoder) or only images (priors and
            autoencoders: the train split is then decoded once into memory, 150 MB as bytes, instead of per item).
        mask, mask_ratio, seed: generated masks, as in ``FolderDataModule``.
    """

    def __init__(
        self,
        source: str = "zip",
        zip_path: str | None = None,
        root: str = "data/cifar10",
        split: str = "test",
        limit: int | None = None,
        train_limit: int | None = None,
        val_limit: int = 64,
        train_masks: bool = True,
        mask: str = "box",
        mask_ratio: float | tuple[float, float] | None = None,
        seed: int = 0,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> None:
        super().__init__(mask=mask, mask_ratio=mask_ratio, seed=seed, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        if source not in ("zip", "torchvision"):
            raise ValueError(f"source must be 'zip' or 'torchvision', got {source!r}")
        for arg, value in (("limit", limit), ("train_limit", train_limit)):
            if value is not None and value < 1:
                raise ValueError(f"{arg} must be a positive integer or None, got {value}")
        self.source = source
        self.zip_path = zip_path
        self.root = root
        self.split = _check_split(split)
        self.limit = limit
        self.train_limit = train_limit
        self.val_limit = val_limit
        self.train_masks = train_masks
        self.train_dataset: ImageMaskDataset | None = None
        self.val_dataset: ImageMaskDataset | None = None

    def prepare_data(self) -> None:
        # Lightning runs prepare_data on one process only: the place to download.
        if self.source == "torchvision":
            for split in SPLITS:
                TorchvisionCifar10(self.root, split, download=True)

    def _source(self, split: str, limit: int | None) -> ImageSource:
        if self.source == "zip":
            source: Cifar10Zip | TorchvisionCifar10 = Cifar10Zip(self.zip_path, split)
        else:
            source = TorchvisionCifar10(self.root, split, download=False)
        return source if limit is None else _Subset(source, limit)

    def _build_dataset(self) -> ImageMaskDataset:
        return ImageMaskDataset(self._source(self.split, self.limit), mask=self.mask_generator, seed=self.seed)

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit":
            if self.train_dataset is None and not self.train_masks:
                source = self._source("train", self.train_limit)
                images = torch.stack([source.load_image(i) for i in range(len(source))])
                self.train_dataset = PlainImages(images.add(1).mul(127.5).round().to(torch.uint8), hflip=True)
            if self.train_dataset is None:
                self.train_dataset = ImageMaskDataset(
                    self._source("train", self.train_limit),
                    mask=self.mask_generator,
                    hflip=True,
                    random_masks=True,
                )
            if self.val_dataset is None:
                # A fixed held-out batch (test split, seeded masks): the same images every validation.
                self.val_dataset = ImageMaskDataset(self._source("test", self.val_limit), mask=self.mask_generator,
                                                    seed=self.seed)
        else:
            super().setup(stage)

    def val_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.val_dataset, shuffle=False, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        # drop_last keeps batch statistics and step counts stable across epochs.
        return self._loader(self.train_dataset, shuffle=True, drop_last=len(self.train_dataset) >= self.batch_size)

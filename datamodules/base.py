"""Shared dataset / datamodule plumbing for every image source.

A source (files in a folder, bundled scikit-image photos, CIFAR-10) only has
to say how many images it has, what each is called and how to load it; the
rest - resizing, flipping, mask generation, validation, batching - lives
here once.

Items are dicts::

    {"x": (C,H,W) float in [-1,1], "keep_mask": (1,H,W) float (1 = observed),
     "name": str (unique), "index": int}
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate

from .masks import make_mask
from .validation import check_image_and_mask

__all__ = ["ImageSource", "ImageMaskDataset", "ImageMaskDataModule", "PlainImages", "collate_items", "resize_square"]

MaskFn = Callable[[tuple[int, int], torch.Generator], torch.Tensor]


class ImageSource(abc.ABC):
    """What a dataset of images has to provide."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def name(self, index: int) -> str:
        """Unique, filesystem-safe name of image ``index``."""

    @abc.abstractmethod
    def load_image(self, index: int) -> torch.Tensor:
        """Float ``(C, H, W)`` in [-1, 1]."""

    def load_mask(self, index: int) -> torch.Tensor | None:
        """Float ``(1, H, W)`` keep_mask in [0, 1], or ``None`` to generate one."""
        return None


def resize_square(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Centre-crop ``(C, H, W)`` to a square, then resize to ``size`` x ``size``.

    Cropping first is the same as "resize the shorter side, then crop" but
    avoids rounding the longer side twice.
    """
    h, w = t.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    t = t[:, top : top + side, left : left + side]
    if side == size:
        return t.contiguous()
    if mode == "nearest":
        # nearest-exact samples pixel centres, so the crop is not shifted by half a pixel.
        out = F.interpolate(t[None].float(), size=(size, size), mode="nearest-exact")
    else:
        out = F.interpolate(t[None].float(), size=(size, size), mode=mode, antialias=True, align_corners=False)
        # bicubic overshoots at edges; images must stay in [-1, 1].
        out = out.clamp(-1.0, 1.0)
    return out[0]


class ImageMaskDataset(Dataset):
    """Wraps an :class:`ImageSource` into validated ``{"x", "keep_mask", "name", "index"}`` items.

    Masks come from the source when it has them, otherwise from ``mask``
    called with a generator seeded by ``seed + index``, so an image always
    gets the same mask whatever the batch size, worker count or process
    count. With ``random_masks=True`` (training) the seed is drawn from the
    global torch RNG instead, so masks change every epoch yet stay
    reproducible under ``seed_everything(..., workers=True)``.
    """

    def __init__(
        self,
        source: ImageSource,
        mask: MaskFn | None,
        seed: int = 0,
        image_size: int | None = None,
        channels: int | None = 3,
        hflip: bool = False,
        random_masks: bool = False,
    ) -> None:
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be a positive integer or None, got {image_size}")
        self.source = source
        self.mask = mask
        self.seed = int(seed)
        self.image_size = image_size
        self.channels = channels
        self.hflip = hflip
        self.random_masks = random_masks
        #: (C, H, W) the model takes (``ImageMaskDataModule.expect``): other items become error items.
        self.expected_shape: tuple[int, int, int] | None = None

    def __len__(self) -> int:
        return len(self.source)

    def _generator(self, index: int) -> torch.Generator:
        if self.random_masks:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        else:
            seed = self.seed + index
        return torch.Generator().manual_seed(seed)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        name = self.source.name(index)
        try:
            item = self._load(index, name)
        except ValueError as error:
            # One bad file costs only itself: the item carries the reason, the batch goes on (``collate_items``).
            return {"x": None, "keep_mask": None, "name": name, "index": index, "error": str(error)}
        want = self.expected_shape
        if want is not None and tuple(item["x"].shape) != tuple(want):
            c, h, w = item["x"].shape
            fix = (f"resize it (--data.init_args.image_size {want[1]})" if (h, w) != tuple(want[1:])
                   else f"convert it to {want[0]} channel(s)")
            return {**item, "x": None, "keep_mask": None,
                    "error": f"'{name}' is {c}x{h}x{w} (CxHxW), the prior expects {want[0]}x{want[1]}x{want[2]}: {fix}"}
        if want is not None:
            # Checked in full against the model's shape: the model need not check it again (``checked_for``).
            item["checked_for"] = torch.tensor(want)
        return item

    def _load(self, index: int, name: str) -> dict:
        x = self.source.load_image(index)
        keep_mask = self.source.load_mask(index)
        if keep_mask is not None and self.image_size is not None:
            # Checked at native resolution first so a wrong-size mask file is
            # reported instead of being resized into agreement.
            x, keep_mask = check_image_and_mask(x, keep_mask, name, self.channels)
            x = resize_square(x, self.image_size, "bicubic")
            keep_mask = resize_square(keep_mask, self.image_size, "nearest")
        elif keep_mask is None:
            if self.mask is None:
                raise ValueError(f"no mask for '{name}': provide a mask file or a mask generator")
            if self.image_size is not None:
                x = resize_square(x, self.image_size, "bicubic")
            keep_mask = self.mask((x.shape[-2], x.shape[-1]), self._generator(index))
        if self.hflip and bool(torch.rand(()) < 0.5):
            x, keep_mask = x.flip(-1), keep_mask.flip(-1)
        # The one check of the item as the model gets it (after a resize: again, for holes that vanished).
        x, keep_mask = check_image_and_mask(x, keep_mask, name, self.channels)
        return {"x": x.contiguous(), "keep_mask": keep_mask.contiguous(), "name": name, "index": index}


class PlainImages(Dataset):
    """Plain ``{"x", "index"}`` items from one tensor (N, C, H, W): what prior and autoencoder training need,
    without decoding or mask generation per item. ``hflip``: a random horizontal flip per item."""

    def __init__(self, x: torch.Tensor, hflip: bool = False) -> None:
        self.x, self.hflip = x, hflip

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict:
        x = self.x[i]
        if x.dtype == torch.uint8:   # stored as bytes: 4x less memory for a whole training split
            x = x.float().div(127.5).sub(1.0)
        if self.hflip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return {"x": x, "index": i}


def collate_items(batch: Sequence[dict]) -> dict:
    """``default_collate`` of the good items, plus ``error``: per item None or why it could not be loaded.

    A bad item (``"error"``) gets zero tensors shaped like the good ones, so the rest of its batch still runs;
    the model skips it and the writer records why. Good images of different sizes are an error for the batch,
    with the fix (only reachable without ``expect``, which turns wrong sizes into bad items).
    """
    good = [item for item in batch if item.get("error") is None]
    first = good[0] if good else None
    for item in good[1:]:
        if item["x"].shape != first["x"].shape:
            raise ValueError(
                f"cannot batch images of different sizes: '{first['name']}' is "
                f"{tuple(first['x'].shape)} but '{item['name']}' is {tuple(item['x'].shape)}; "
                f"set image_size to resize them, or use batch_size=1"
            )
    if len(good) == len(batch) and "error" not in first:   # plain training items ({"x", "index"})
        return default_collate(list(batch))
    x0 = first["x"] if first else torch.zeros(1, 1, 1)
    m0 = first["keep_mask"] if first else torch.ones(1, 1, 1)
    spare = {"checked_for": torch.zeros(3, dtype=torch.long)} if first is not None and "checked_for" in first else {}
    items = [item if item.get("error") is None else
             {**item, "x": torch.zeros_like(x0), "keep_mask": torch.ones_like(m0), **spare} for item in batch]
    out = default_collate([{k: v for k, v in item.items() if k != "error"} for item in items])
    out["error"] = [item.get("error") for item in batch]
    return out


class ImageMaskDataModule(L.LightningDataModule):
    """Base datamodule: subclasses implement ``_build_dataset`` for the eval split."""

    def __init__(
        self,
        mask: str = "box",
        mask_ratio: float | tuple[float, float] | None = None,
        seed: int = 0,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        # Built now so a typo in the mask name fails at config time, not mid-run.
        self.mask_generator = make_mask(mask, mask_ratio)
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dataset: ImageMaskDataset | None = None
        self._expected_shape: tuple[int, int, int] | None = None

    def _build_dataset(self) -> ImageMaskDataset:
        raise NotImplementedError(f"{type(self).__name__} must implement _build_dataset()")

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = self._build_dataset()
            self.dataset.expected_shape = self._expected_shape

    def expect(self, shape: tuple[int, int, int]) -> None:
        """The (C, H, W) the model takes: an image of another shape becomes a bad item (skipped with its fix)."""
        self._expected_shape = tuple(int(s) for s in shape)
        if self.dataset is not None:
            self.dataset.expected_shape = self._expected_shape

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_items,
            drop_last=drop_last,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self) -> DataLoader:
        self.setup()
        return self._loader(self.dataset, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()

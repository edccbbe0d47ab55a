"""A folder of images, with mask files from ``mask_dir`` or generated masks.

Only the top level of ``image_dir`` is read (no recursion); hidden files are
skipped. Images are sorted by file name, and each item's ``name`` is its file
stem, which must therefore be unique. A mask file pairs with the image that
has the same stem, whatever either extension is, and follows the convention
of :mod:`datamodules.io`: white = observed, black = missing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import ImageMaskDataModule, ImageMaskDataset, ImageSource
from .io import IMAGE_EXTENSIONS, read_image, read_mask
from .masks import MaskGenerator, make_mask

__all__ = ["FileSource", "FolderDataset", "FolderDataModule", "list_images"]


def list_images(directory: str | Path, what: str = "images") -> dict[str, Path]:
    """Map stem -> path for the image files directly inside ``directory``."""
    directory = Path(directory)
    if not directory.exists():
        raise ValueError(f"{what} folder {directory} does not exist")
    if not directory.is_dir():
        raise ValueError(f"{what} folder {directory} is not a directory")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(path.stem, []).append(path)
    clashes = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if clashes:
        stem, paths = next(iter(clashes.items()))
        raise ValueError(
            f"{len(clashes)} name clash(es) in {directory}: {', '.join(p.name for p in paths)} share the "
            f"stem '{stem}'; names must be unique, so rename or remove one"
        )
    if not by_stem:
        patterns = ", ".join(f"*{ext}" for ext in IMAGE_EXTENSIONS)
        raise ValueError(f"no {what} found in {directory} (looked for {patterns})")
    return {stem: paths[0] for stem, paths in by_stem.items()}


class FileSource(ImageSource):
    """Image files, optionally paired with mask files."""

    def __init__(self, images: list[Path], masks: list[Path] | None = None, channels: int | None = 3) -> None:
        if masks is not None and len(masks) != len(images):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks")
        self.images = list(images)
        self.masks = None if masks is None else list(masks)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return self.images[index].stem

    def load_image(self, index: int) -> torch.Tensor:
        return read_image(self.images[index], self.channels)

    def load_mask(self, index: int) -> torch.Tensor | None:
        return None if self.masks is None else read_mask(self.masks[index])


class FolderDataset(ImageMaskDataset):
    """Images in ``image_dir``; masks from ``mask_dir`` when given, else generated.

    The folder is scanned eagerly so that a missing folder, an empty folder
    or an image without a mask file fails here rather than mid-run; files are
    decoded lazily, so a corrupt file raises ``ValueError`` from
    ``__getitem__``.
    """

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path | None = None,
        mask: str | MaskGenerator = "box",
        mask_ratio: float | tuple[float, float] | None = None,
        seed: int = 0,
        image_size: int | None = None,
        channels: int | None = 3,
        limit: int | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit}")
        images = list_images(image_dir)
        stems = list(images)[:limit]
        masks = None
        if mask_dir is not None:
            mask_files = list_images(mask_dir, what="mask images")
            lacking = [stem for stem in stems if stem not in mask_files]
            if lacking:
                shown = ", ".join(lacking[:5]) + (", ..." if len(lacking) > 5 else "")
                raise ValueError(
                    f"no mask file in {mask_dir} for {len(lacking)} image(s): {shown} "
                    f"(a mask must have the same file stem as its image, e.g. cat.jpg -> cat.png)"
                )
            masks = [mask_files[stem] for stem in stems]
        generator = make_mask(mask, mask_ratio) if isinstance(mask, str) else mask
        super().__init__(
            FileSource([images[s] for s in stems], masks, channels),
            mask=generator,
            seed=seed,
            image_size=image_size,
            channels=channels,
        )


class FolderDataModule(ImageMaskDataModule):
    """Inpaint every image in a folder.

    Args:
        image_dir: folder of .png/.jpg/.jpeg/.bmp/.webp images (not recursive).
        mask_dir: folder of mask files with the same stems (white = observed).
            When given, ``mask``/``mask_ratio`` are not used.
        mask: generated mask kind: box, random_boxes, half, strokes, pixels.
        mask_ratio: missing fraction for generated masks (see ``masks.make_mask``).
        seed: image ``i`` gets its generated mask from seed ``seed + i``.
        image_size: centre-crop to a square and resize to this side; ``None``
            keeps native sizes (then batch_size > 1 needs equal sizes).
        channels: channel count the prior expects (1->3 and RGBA->3 are converted).
        limit: use only the first ``limit`` images (sorted by name).
    """

    def __init__(
        self,
        image_dir: str,
        mask_dir: str | None = None,
        mask: str = "box",
        mask_ratio: float | tuple[float, float] | None = None,
        seed: int = 0,
        image_size: int | None = None,
        channels: int | None = 3,
        limit: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> None:
        super().__init__(mask=mask, mask_ratio=mask_ratio, seed=seed, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be a positive integer or None, got {image_size}")
        self.image_dir = image_dir
        self.mask_dir = mask_dir
        self.image_size = image_size
        self.channels = channels
        self.limit = limit

    def _build_dataset(self) -> FolderDataset:
        return FolderDataset(
            self.image_dir,
            mask_dir=self.mask_dir,
            mask=self.mask_generator,
            seed=self.seed,
            image_size=self.image_size,
            channels=self.channels,
            limit=self.limit,
        )

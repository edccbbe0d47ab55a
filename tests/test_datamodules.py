"""Folder / demo / CIFAR-10 datamodules, file reading and item validation."""

from __future__ import annotations

import io
import logging
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import (
    Cifar10DataModule,
    Cifar10Zip,
    DemoDataModule,
    FolderDataModule,
    FolderDataset,
    check_image_and_mask,
    read_image,
    read_mask,
)
from vipaint.resources import ResourceNotFound



def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)
    return path


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3))


def centre_hole(h: int, w: int) -> np.ndarray:
    """White (observed) with a black (missing) centre."""
    m = np.full((h, w), 255)
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 0
    return m


def items(dm) -> list[dict]:
    out = []
    for batch in dm.predict_dataloader():
        for i, name in enumerate(batch["name"]):
            out.append(
                {"name": name, "x": batch["x"][i], "keep_mask": batch["keep_mask"][i], "index": int(batch["index"][i])}
            )
    return out


# --- folder datamodule ------------------------------------------------------


def test_folder_round_trip(tmp_path):
    arrays = {f"img{i}": rgb(20, 24, i) for i in range(3)}
    for stem, array in arrays.items():
        save(tmp_path / f"{stem}.png", array)
    (tmp_path / "notes.txt").write_text("not an image")
    dm = FolderDataModule(str(tmp_path), batch_size=2)
    dm.setup("predict")
    got = items(dm)
    assert [it["name"] for it in got] == ["img0", "img1", "img2"]
    assert [it["index"] for it in got] == [0, 1, 2]
    for it in got:
        assert it["x"].shape == (3, 20, 24) and it["keep_mask"].shape == (1, 20, 24)
        assert it["x"].dtype == torch.float32 and -1 <= it["x"].min() and it["x"].max() <= 1
        expected = torch.from_numpy(arrays[it["name"]]).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(it["x"], expected, atol=1e-6)
        assert abs(float((it["keep_mask"] == 0).float().mean()) - 0.5) < 0.05  # default box 0.5
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["name"] == ["img0", "img1"]


def test_folder_masks_independent_of_batch_size_and_seeded(tmp_path):
    for i in range(3):
        save(tmp_path / f"a{i}.png", rgb(16, 16, i))
    masks = {}
    for bs in (1, 3):
        dm = FolderDataModule(str(tmp_path), mask="random_boxes", batch_size=bs, seed=5)
        dm.setup()
        masks[bs] = {it["name"]: it["keep_mask"] for it in items(dm)}
    assert all(torch.equal(masks[1][n], masks[3][n]) for n in masks[1])
    other = FolderDataModule(str(tmp_path), mask="random_boxes", seed=6)
    other.setup()
    assert any(not torch.equal(masks[1][it["name"]], it["keep_mask"]) for it in items(other))


def test_folder_image_size_resizes_and_crops(tmp_path):
    save(tmp_path / "wide.jpg", rgb(30, 50, 0))
    save(tmp_path / "tall.bmp", rgb(40, 24, 1))
    dm = FolderDataModule(str(tmp_path), image_size=16, mask="strokes", batch_size=2)
    dm.setup()
    got = items(dm)
    assert len(got) == 2
    for it in got:
        assert it["x"].shape == (3, 16, 16) and it["keep_mask"].shape == (1, 16, 16)
        assert -1 <= it["x"].min() and it["x"].max() <= 1


def test_folder_mixed_sizes_without_image_size_explains(tmp_path):
    save(tmp_path / "a.png", rgb(16, 16, 0))
    save(tmp_path / "b.png", rgb(20, 16, 1))
    dm = FolderDataModule(str(tmp_path), batch_size=2)
    with pytest.raises(ValueError, match="different sizes.*image_size"):
        next(iter(dm.predict_dataloader()))


def test_folder_with_mask_files(tmp_path):
    save(tmp_path / "img" / "cat.jpg", rgb(16, 20, 0))
    save(tmp_path / "img" / "dog.png", rgb(16, 20, 1))
    hole = centre_hole(16, 20)
    save(tmp_path / "mask" / "cat.png", hole)
    save(tmp_path / "mask" / "dog.bmp", np.stack([hole] * 3, axis=-1))  # RGB mask file
    dm = FolderDataModule(str(tmp_path / "img"), mask_dir=str(tmp_path / "mask"), batch_size=1)
    dm.setup()
    for it in items(dm):
        assert torch.equal(it["keep_mask"][0], torch.from_numpy(hole / 255).float())


def test_folder_mask_files_follow_resize(tmp_path):
    save(tmp_path / "img" / "a.png", rgb(32, 48, 0))
    save(tmp_path / "mask" / "a.png", centre_hole(32, 48))
    ds = FolderDataset(tmp_path / "img", mask_dir=tmp_path / "mask", image_size=16)
    item = ds[0]
    assert item["keep_mask"].shape == (1, 16, 16)
    assert set(item["keep_mask"].unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(
    "setup_files, message",
    [
        (lambda d: (d / "img").mkdir(), r"no images found in .*img \(looked for \*\.png, \*\.jpg"),
        (lambda d: None, "does not exist"),
        (
            lambda d: (save(d / "img" / "cat.png", rgb(8, 8, 0)), save(d / "img" / "cat.jpg", rgb(8, 8, 0))),
            "cat.jpg, cat.png share the stem 'cat'",
        ),
    ],
)
def test_folder_bad_folders(tmp_path, setup_files, message):
    setup_files(tmp_path)
    dm = FolderDataModule(str(tmp_path / "img"))
    with pytest.raises(ValueError, match=message):
        dm.setup("predict")


def test_folder_missing_mask_file(tmp_path):
    save(tmp_path / "img" / "cat.png", rgb(8, 8, 0))
    save(tmp_path / "img" / "dog.png", rgb(8, 8, 1))
    save(tmp_path / "mask" / "cat.png", centre_hole(8, 8))
    with pytest.raises(ValueError, match="no mask file .* 1 image.*: dog"):
        FolderDataset(tmp_path / "img", mask_dir=tmp_path / "mask")


# --- bad inputs through the dataset ------------------------------------------


def one_item(tmp_path, image: np.ndarray | bytes, mask: np.ndarray | None = None, mode=None) -> dict:
    path = tmp_path / "img" / "x.png"
    if isinstance(image, bytes):
        path.parent.mkdir(parents=True)
        path.write_bytes(image)
    else:
        save(path, image, mode)
    mask_dir = None
    if mask is not None:
        save(tmp_path / "mask" / "x.png", mask)
        mask_dir = tmp_path / "mask"
    return FolderDataset(tmp_path / "img", mask_dir=mask_dir)[0]


def assert_error_item(item: dict, match: str) -> None:
    """A bad file costs only itself: its item carries no image and says why (``item["error"]``)."""
    assert item["x"] is None and item.get("error"), item
    assert re.search(match, item["error"]), item["error"]


def test_size_mismatch(tmp_path):
    assert_error_item(one_item(tmp_path, rgb(20, 24, 0), centre_hole(16, 16)),
                      r"mask 16x16 does not match image 20x24 \(HxW\) for 'x'")


def test_nothing_observed(tmp_path):
    assert_error_item(one_item(tmp_path, rgb(8, 8, 0), np.zeros((8, 8))), "'x' has nothing observed")


def test_nothing_missing(tmp_path):
    assert_error_item(one_item(tmp_path, rgb(8, 8, 0), np.full((8, 8), 255)), "'x' has nothing missing")


def test_two_channel_image_rejected(tmp_path):
    grey_alpha = np.random.default_rng(0).integers(0, 256, (8, 8, 2))
    assert_error_item(one_item(tmp_path, grey_alpha, mode="LA"), r"image 'x.png' has 2 channel\(s\) but 3 are expected")


def test_unreadable_file(tmp_path):
    assert_error_item(one_item(tmp_path, b"this is not a png at all"), r"cannot read image .*x\.png: ")


def test_truncated_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(rgb(64, 64, 0).astype(np.uint8)).save(buffer, format="JPEG")
    assert_error_item(one_item(tmp_path, buffer.getvalue()[:300]), "cannot read image")


def test_nonexistent_file(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read image .*nope\.png: file does not exist"):
        read_image(tmp_path / "nope.png", 3)


def test_non_binary_mask_warns_and_thresholds(tmp_path):
    soft = centre_hole(8, 8).astype(float)
    soft[0, :4] = [100, 127, 128, 200]  # 4/64 values are neither 0 nor 255
    with pytest.warns(UserWarning, match=r"mask for 'x' is not binary \(6.2% of values"):
        item = one_item(tmp_path, rgb(8, 8, 0), soft)
    assert item["keep_mask"][0, 0, :4].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert set(item["keep_mask"].unique().tolist()) == {0.0, 1.0}


def test_grey_and_rgba_images_adapted_with_log(tmp_path, caplog):
    save(tmp_path / "grey.png", np.full((8, 8), 255))
    save(tmp_path / "rgba.png", np.random.default_rng(0).integers(0, 256, (8, 8, 4)), mode="RGBA")
    with caplog.at_level(logging.WARNING):
        grey = read_image(tmp_path / "grey.png", channels=3)
        rgba = read_image(tmp_path / "rgba.png", channels=3)
    assert grey.shape == (3, 8, 8) and torch.all(grey == 1)
    assert rgba.shape == (3, 8, 8)
    assert "grayscale" in caplog.text and "alpha" in caplog.text
    assert read_image(tmp_path / "grey.png").shape == (1, 8, 8)


def test_check_image_and_mask_direct():
    x = torch.zeros(3, 4, 4)
    mask = torch.ones(4, 4)
    mask[0, 0] = 0
    x2, m2 = check_image_and_mask(x, mask, "t", 3)
    assert m2.shape == (1, 4, 4)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="image 't' contains 1 NaN/inf"):
        check_image_and_mask(x, mask, "t", 3)
    with pytest.raises(ValueError, match=r"image 'u' has values in \[0, 255\]"):
        check_image_and_mask(torch.full((3, 4, 4), 255.0).index_fill_(1, torch.tensor([0]), 0), mask, "u", 3)


@pytest.mark.parametrize("mode", ["1", "L", "RGB"])
def test_read_mask_modes(tmp_path, mode):
    hole = centre_hole(8, 8)
    Image.fromarray(hole.astype(np.uint8)).convert(mode).save(tmp_path / "m.png")
    m = read_mask(tmp_path / "m.png")
    assert m.shape == (1, 8, 8)
    assert torch.equal(m[0], torch.from_numpy(hole / 255).float())


# --- demo -------------------------------------------------------------------


def test_demo_datamodule_offline():
    dm = DemoDataModule(image_size=32, batch_size=8)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["x"].shape == (6, 3, 32, 32) and batch["keep_mask"].shape == (6, 1, 32, 32)
    assert batch["name"][:2] == ["astronaut", "chelsea"]
    assert -1 <= batch["x"].min() and batch["x"].max() <= 1 and batch["x"].std() > 0.1
    ratio = (batch["keep_mask"] == 0).float().mean().item()
    assert abs(ratio - 0.3) < 0.05


def test_demo_grayscale_and_bad_name():
    dm = DemoDataModule(names=["camera"], image_size=16, mask="half", mask_ratio=None)
    dm.setup()
    item = dm.dataset[0]
    assert item["x"].shape == (3, 16, 16) and torch.equal(item["x"][0], item["x"][2])
    with pytest.raises(ValueError, match="unknown demo image.*'eagle'"):
        DemoDataModule(names=["eagle"])


# --- CIFAR-10 zip -----------------------------------------------------------

COLOURS = {"cat": (200, 30, 30), "ship": (30, 30, 200)}


@pytest.fixture
def tiny_zip(tmp_path) -> Path:
    path = tmp_path / "cifar.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for split, count in (("train", 4), ("test", 3)):
            archive.writestr(f"{split}/", "")
            for cls, colour in COLOURS.items():
                for i in reversed(range(count)):  # unsorted on purpose
                    buffer = io.BytesIO()
                    Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG", quality=95)
                    archive.writestr(f"{split}/{cls}/{i:04d}.jpg", buffer.getvalue())
    return path


def test_cifar_zip_reader(tiny_zip):
    ds = Cifar10Zip(str(tiny_zip), split="test")
    assert len(ds) == 6
    assert ds.names == [f"test_cat_{i:04d}" for i in range(3)] + [f"test_ship_{i:04d}" for i in range(3)]
    item = ds[4]
    assert item["x"].shape == (3, 32, 32) and item["label"] == 8 and item["name"] == "test_ship_0001"
    expected = torch.tensor(COLOURS["ship"]).float().view(3, 1, 1) / 127.5 - 1
    assert (item["x"] - expected).abs().max() < 0.05  # JPEG is lossy
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives
    assert clone._archive is None and torch.equal(clone[4]["x"], item["x"])


def test_cifar_zip_path_from_env_and_errors(tiny_zip, monkeypatch):
    monkeypatch.setenv("VIPAINT_CIFAR10_ZIP", str(tiny_zip))
    assert len(Cifar10Zip(split="train")) == 8
    monkeypatch.delenv("VIPAINT_CIFAR10_ZIP")
    with pytest.raises(ResourceNotFound, match="--data.init_args.zip_path or set .* VIPAINT_CIFAR10_ZIP; or use source"):
        Cifar10Zip()
    with pytest.raises(ResourceNotFound, match="does not exist"):
        Cifar10Zip(str(tiny_zip.parent / "missing.zip"))
    with pytest.raises(ValueError, match="split must be one of"):
        Cifar10Zip(str(tiny_zip), split="val")


def test_cifar_datamodule_on_tiny_zip(tiny_zip):
    dm = Cifar10DataModule(zip_path=str(tiny_zip), limit=4, train_limit=6, batch_size=2, mask="pixels", mask_ratio=0.4)
    dm.setup("test")
    names = [n for b in dm.test_dataloader() for n in b["name"]]
    assert names == ["test_cat_0000", "test_ship_0000", "test_cat_0001", "test_ship_0001"]
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for batch in batches:
        assert batch["x"].shape == (2, 3, 32, 32) and batch["keep_mask"].shape == (2, 1, 32, 32)
        assert all(n.startswith("train_") for n in batch["name"])


def test_cifar_real_zip(cifar10_zip):
    ds = Cifar10Zip(str(cifar10_zip), split="test")
    assert len(ds) == 10000
    item = ds[0]
    assert item["name"] == "test_airplane_0000" and item["x"].shape == (3, 32, 32)
    assert -1 <= item["x"].min() and item["x"].max() <= 1

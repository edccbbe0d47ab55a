"""MNIST from IDX files: parsing, clear errors for missing / truncated / corrupt files, the datamodule's
splits, and (where the real files are at hand) the official release's shape and checksum-level facts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.mnist import IDX_FILES, MnistDataModule, load_mnist, read_idx
from vipaint import resources


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress, write_idx):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx.gz" if compress else tmp_path / "a.idx", a, compress)
    b = read_idx(tmp_path / ("a.idx.gz" if compress else "a.idx"))
    assert b.shape == (2, 3, 4) and (a == b).all()


def test_truncated_idx_names_the_file(tmp_path, fake_mnist):
    folder = fake_mnist(tmp_path, compress=False)
    f = folder / IDX_FILES["test"][0]
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{f.name}.*truncated"):
        load_mnist(folder, "test")


def test_corrupt_and_missing_files_are_named(tmp_path, fake_mnist):
    folder = fake_mnist(tmp_path)
    bad = folder / (IDX_FILES["train"][1] + ".gz")
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=bad.name):
        load_mnist(folder, "train")
    (folder / (IDX_FILES["test"][0] + ".gz")).unlink()
    with pytest.raises(FileNotFoundError, match=IDX_FILES["test"][0]):
        load_mnist(folder, "test")
    (folder / "x").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(folder / "x")


def test_no_folder_names_option_and_variable(monkeypatch):
    monkeypatch.delenv("VIPAINT_MNIST_DIR", raising=False)
    with pytest.raises(resources.ResourceNotFound, match="VIPAINT_MNIST_DIR"):
        load_mnist(None, "test")


def test_pixels_map_to_unit_range(tmp_path, fake_mnist):
    folder = fake_mnist(tmp_path)
    x, labels = load_mnist(folder, "test")
    raw = read_idx(folder / (IDX_FILES["test"][0] + ".gz"))
    assert x.shape == (30, 1, 28, 28) and labels.shape == (30,) and labels.dtype == torch.int64
    assert torch.allclose(x[:, 0], torch.from_numpy(raw.copy()).float() / 127.5 - 1)


def test_datamodule_splits_keep_test_and_validation_out_of_training(tmp_path, fake_mnist):
    folder = fake_mnist(tmp_path, n_train=1200)
    dm = MnistDataModule(root=str(folder), val_holdout=200, val_limit=50, limit=7, batch_size=4)
    dm.setup("predict")
    assert len(dm.dataset) == 7 and dm.dataset[0]["name"] == "test_00000"
    assert dm.dataset[0]["x"].shape == (1, 28, 28) and dm.dataset[0]["keep_mask"].shape == (1, 28, 28)
    dm.setup("fit")
    assert len(dm.train_dataset) == 1000 and len(dm.val_dataset) == 50
    assert dm.val_dataset[0]["name"] == "train_01000"          # the first held-back digit
    x, _ = load_mnist(folder, "train")
    assert torch.equal(dm.train_dataset[999]["x"], x[999]) and torch.equal(dm.val_dataset[0]["x"], x[1000])
    with pytest.raises(ValueError, match="val_holdout"):
        MnistDataModule(root=str(folder), val_holdout=1200).setup("fit")


def test_validation_on_the_last_test_digits(tmp_path, fake_mnist):
    """val_split="test": the last val_limit test digits (the benchmarks score the first ones), masks seeded."""
    folder = fake_mnist(tmp_path, n_train=1200, n_test=30)
    dm = MnistDataModule(root=str(folder), val_holdout=200, val_limit=10, val_split="test", train_masks=True,
                         mask="mix4", batch_size=4)
    dm.setup("fit")
    assert len(dm.train_dataset) == 1000 and len(dm.val_dataset) == 10
    assert dm.val_dataset[0]["name"] == "test_00020"
    x, _ = load_mnist(folder, "test")
    assert torch.equal(dm.val_dataset[9]["x"], x[29])
    assert torch.equal(dm.val_dataset[3]["keep_mask"], dm.val_dataset[3]["keep_mask"])   # seeded, not redrawn
    with pytest.raises(ValueError, match="val_split"):
        MnistDataModule(root=str(folder), val_split="valid")


@pytest.mark.skipif(resources.find("mnist") is None, reason="real MNIST not found (set VIPAINT_MNIST_DIR)")
def test_real_mnist_release():
    x, labels = load_mnist(None, "test")
    assert x.shape == (10000, 1, 28, 28) and x.min() == -1 and x.max() == 1
    # Official test-set class counts (torchvision's MNIST documentation).
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    dm = MnistDataModule(val_holdout=1000, val_limit=16, batch_size=8)
    dm.setup("fit")
    assert len(dm.train_dataset) == 59000 and len(dm.val_dataset) == 16
    assert dm.val_dataset[0]["name"] == "train_59000"
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (8, 1, 28, 28)

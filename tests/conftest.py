"""Shared fixtures: an exact Gaussian prior on 8x8 images, a tiny random diffusers UNet saved locally, and the
local resources (``vipaint.resources``: LPIPS backbones, CIFAR-10 zip), each test skipped when its resource is
not configured."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vipaint import resources
from vipaint.priors.gaussian import GaussianPrior, smooth_covariance
from vipaint.schedule import NoiseSchedule, linear_alphas_cumprod


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # "tiny-random" priors are written here, never into the user's home.
    os.environ["VIPAINT_CACHE"] = str(tmp_path_factory.mktemp("vipaint-cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def schedule() -> NoiseSchedule:
    return NoiseSchedule(linear_alphas_cumprod())


@pytest.fixture(scope="session")
def gaussian_prior(schedule) -> GaussianPrior:
    """x_0 ~ N(0, S) on 1x8x8, S a squared-exponential kernel: observed pixels inform missing ones."""
    cov = smooth_covariance(8, 8, std=0.5, length_scale=2.0)
    return GaussianPrior(torch.zeros(1, 8, 8), cov, schedule)


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory) -> Path:
    from vipaint.priors.external import tiny_random_unet

    return tiny_random_unet(tmp_path_factory.mktemp("priors") / "tiny-unet", image_size=16, channels=3, seed=0)


@pytest.fixture(scope="session")
def tiny_prior(tiny_unet_dir):
    from vipaint.priors.external import PixelPrior

    return PixelPrior(str(tiny_unet_dir), local_files_only=True)


def _resource(name: str) -> Path:
    path = resources.find(name)   # a set but wrong path raises: a misconfiguration must not pass as a skip
    if path is None:
        res = resources.RESOURCES[name]
        pytest.skip(f"{res.what} is not configured: set {res.env} (.ci/run sets it from ../shared)")
    return path


@pytest.fixture(scope="session")
def lpips_dir() -> Path:
    return _resource("lpips")


@pytest.fixture(scope="session")
def cifar10_zip() -> Path:
    return _resource("cifar10")


def _write_idx(path, array, compress: bool = False) -> None:
    """An IDX file (the MNIST format: magic, dims, big-endian sizes, then bytes), gzipped if asked."""
    import gzip
    import struct

    import numpy as np

    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.asarray(array).astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture
def write_idx():
    return _write_idx


@pytest.fixture
def fake_mnist():
    """Builds a folder of random digits in the four MNIST IDX files: ``fake_mnist(folder, n_train, n_test)``."""
    import numpy as np

    from datamodules.mnist import IDX_FILES

    def build(folder, n_train: int = 1200, n_test: int = 30, compress: bool = True):
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for split, n in (("train", n_train), ("test", n_test)):
            suffix = ".gz" if compress else ""
            img_name, lab_name = IDX_FILES[split]
            _write_idx(folder / (img_name + suffix), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), compress)
            _write_idx(folder / (lab_name + suffix), rng.integers(0, 10, (n,), dtype=np.uint8), compress)
        return folder

    return build

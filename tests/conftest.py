"""Shared fixtures: an exact Gaussian prior on 8x8 images, a tiny random diffusers UNet saved locally, and the
local resources (``vipaint.resources``: LPIPS backbones, CIFAR-10 zip), each test skipped when its resource is
not configured."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vipaint import resources
from vipaint.gaussian import GaussianPrior, smooth_covariance
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
    from vipaint.external import tiny_random_unet

    return tiny_random_unet(tmp_path_factory.mktemp("priors") / "tiny-unet", image_size=16, channels=3, seed=0)


@pytest.fixture(scope="session")
def tiny_prior(tiny_unet_dir):
    from vipaint.external import PixelPrior

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

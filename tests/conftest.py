"""Shared fixtures: an exact Gaussian prior on 8x8 images and a tiny random diffusers UNet saved locally."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vipaint.gaussian import GaussianPrior, smooth_covariance
from vipaint.schedule import NoiseSchedule, linear_alphas_cumprod

SHARED = Path(os.environ.get("VIPAINT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


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


@pytest.fixture(scope="session")
def lpips_dir() -> Path:
    d = Path(os.environ.get("VIPAINT_LPIPS_BACKBONE_DIR", SHARED / "weights" / "lpips"))
    if not (d / "alex_backbone.safetensors").exists():
        pytest.skip(f"LPIPS backbones not found in {d}")
    return d

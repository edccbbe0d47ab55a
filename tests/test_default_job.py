"""README's first command, ``python infer.py`` with no argument, on the shipped prior and demo digits.

Run from a scratch directory (the default job must not depend on the working directory). Checks that every
demo digit gets its outputs, and that the completions are real inpaintings: where the observation pins the
digit down (bottom-half and stroke masks), the posterior mean inside the hole is far closer to the held-out
truth than the mean demo digit is (measured 2026-11-25: hole MSE 0.106 against 0.261; a random prior's
noise fails this). Centre-box masks hide the digit's core and their posteriors are multimodal (a 0 can
become a 6 or an 8), so a sharp sample is often farther from the truth than the blurry mean digit:
they are left out of the MSE check.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from datamodules.demo import MNIST_DEMO_DIR
from datamodules.io import read_image, read_mask

ROOT = Path(__file__).resolve().parents[1]


def test_default_job_inpaints_the_demo_digits(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--trainer.enable_progress_bar", "false",
                           "--model.progress", "false"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM" not in proc.stderr            # the default prior is not the random placeholder
    out = tmp_path / "outputs" / "demo"
    names = sorted(p.stem for p in (MNIST_DEMO_DIR / "images").glob("*.png"))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == names
    from PIL import Image

    # observation | 4 composites | mean | std | input per row, one row per digit: 28 px cells shown at 4x with 4 px
    # gaps (jobs.figures.titled_sheet), under an 18 px title bar, right of a 78 px column of names ("test_00000")
    cell, pad = 28 * 4, 4
    assert Image.open(out / "overview.png").size == (78 + 8 * (cell + pad) + pad, 18 + 24 * (cell + pad) + pad)
    x = torch.stack([read_image(MNIST_DEMO_DIR / "images" / f"{n}.png") for n in names])
    keep = torch.stack([read_mask(MNIST_DEMO_DIR / "masks" / f"{n}.png") for n in names])
    mean = torch.stack([read_image(out / n / "mean.png") for n in names])
    for n in names:
        result = json.loads((out / n / "result.json").read_text())
        assert result["status"] == "ok" and result["num_samples"] == 4
    kinds = json.loads((MNIST_DEMO_DIR / "demo.json").read_text())
    pinned = torch.tensor([kinds[n]["mask"] in ("half", "strokes") for n in names])
    hole = (1 - keep)[pinned]
    err_post = float(((mean - x)[pinned] ** 2 * hole).sum() / hole.sum())
    err_mean_digit = float(((x.mean(0, keepdim=True) - x)[pinned] ** 2 * hole).sum() / hole.sum())
    print(f"hole MSE (half and stroke masks): posterior mean {err_post:.4f}, mean digit {err_mean_digit:.4f}")
    assert int(pinned.sum()) == 16
    assert err_post < 0.6 * err_mean_digit

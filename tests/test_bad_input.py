"""Bad inputs fail clearly, and one bad image does not stop the others.

Errors the datamodule can see (file contents, mask/image agreement) come back from
``FolderDataset.__getitem__`` as an error item naming the image (``item["error"]``), and ``collate_items``
carries them per item in ``batch["error"]``. Errors only the model can see (channels/size vs the prior,
NaN pixels, a NaN bound during the fit) are isolated per image by ``VIPaintModule`` into each
``ImageResult.status``; the writer then writes only an error ``result.json`` for that image, and a re-run
retries it while skipping the completed ones.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import FolderDataModule
from datamodules.folder import FolderDataset
from vipaint.fit import FitConfig
from vipaint.jobs.api import Inpainter
from vipaint.likelihood import LikelihoodConfig
from vipaint.jobs.module import VIPaintModule
from vipaint.operators import OperatorConfig
from vipaint.refine import RefineConfig
from vipaint.pipeline import VIPaintConfig
from vipaint.jobs.writer import RESULT_FILE, VIPaintWriter

def tiny_settings(fit_steps: int = 3, likelihood: LikelihoodConfig | None = None) -> VIPaintConfig:
    """A few cheap fit and refinement steps."""
    return VIPaintConfig(fit=FitConfig(n_iter=fit_steps, n_samples=2, n_grid=5), refine=RefineConfig(n_steps=2),
                         likelihood=likelihood or LikelihoodConfig())


TINY = dict(n_samples=2, vipaint=tiny_settings(), progress=False, log_images=False)


# -- helpers ---------------------------------------------------------------------------------------------
def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)
    return path


def rgb(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def box_mask(h: int = 16, w: int = 16) -> np.ndarray:
    m = np.full((h, w), 255, np.uint8)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 0  # black = missing
    return m


def folder(tmp_path: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None):
    img_dir, mask_dir = tmp_path / "images", tmp_path / "masks"
    for name, a in images.items():
        save_png(img_dir / f"{name}.png", a)
    if masks is not None:
        for name, m in masks.items():
            save_png(mask_dir / f"{name}.png", m)
    return img_dir, (mask_dir if masks is not None else None)


def batch_of(xs: list[torch.Tensor], keeps: list[torch.Tensor], names: list[str]) -> dict:
    return {"x": torch.stack(xs), "keep_mask": torch.stack(keeps), "name": names, "index": torch.arange(len(xs))}


def keep_box() -> torch.Tensor:
    return torch.from_numpy(box_mask()).float().div(255)[None]


# -- datamodule-level errors ------------------------------------------------------------------------------
def test_mask_of_other_size_is_a_clear_error(tmp_path):
    names = ["a", "b", "c", "d"]
    imgs = {n: rgb(seed=i) for i, n in enumerate(names)}
    imgs["b"] = rgb(20, 20)
    masks = {n: box_mask() for n in names}
    img_dir, mask_dir = folder(tmp_path, imgs, masks)
    ds = FolderDataset(img_dir, mask_dir, image_size=16)
    assert re.search(r"mask 16x16 does not match image 20x20.*'b'", ds[1]["error"])
    for i in (0, 2, 3):  # the other items are unaffected
        assert ds[i]["x"].shape == (3, 16, 16)
    dm = FolderDataModule(str(img_dir), str(mask_dir), image_size=16, batch_size=4)
    batch = next(iter(dm.predict_dataloader()))  # the batch carries the bad item's clear message
    assert re.search(r"16x16 does not match image 20x20", batch["error"][1])
    assert [batch["error"][i] for i in (0, 2, 3)] == [None] * 3


@pytest.mark.parametrize("value, words", [(0, "nothing observed"), (255, "nothing missing")])
def test_mask_with_nothing_observed_or_missing(tmp_path, value, words):
    img_dir, mask_dir = folder(tmp_path, {"a": rgb(), "z": rgb(seed=1)},
                               {"a": box_mask(), "z": np.full((16, 16), value, np.uint8)})
    ds = FolderDataset(img_dir, mask_dir, image_size=16)
    assert re.search(f"mask for 'z' has {words}", ds[1]["error"])
    assert ds[0]["name"] == "a"


def test_module_check_names_empty_and_full_masks(tiny_prior):
    module = VIPaintModule(prior=tiny_prior, **TINY)
    x = torch.zeros(3, 16, 16)
    assert "observes no pixel" in module.solver.check(x, torch.zeros(1, 16, 16))
    assert "observes every pixel" in module.solver.check(x, torch.ones(1, 16, 16))
    assert module.solver.check(x, keep_box()) is None


def test_non_binary_mask_warns_and_thresholds(tmp_path):
    m = box_mask()
    m[0, :8] = 100   # < 0.5 -> missing
    m[1, :8] = 200   # >= 0.5 -> observed
    img_dir, mask_dir = folder(tmp_path, {"a": rgb()}, {"a": m})
    ds = FolderDataset(img_dir, mask_dir, image_size=16)
    with pytest.warns(UserWarning, match=r"mask for 'a' is not binary.*thresholding at 0.5"):
        item = ds[0]
    keep = item["keep_mask"]
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    assert (keep[0, 0, :8] == 0).all() and (keep[0, 1, :8] == 1).all()


def test_two_channel_image_is_a_clear_error(tmp_path):
    img_dir, _ = folder(tmp_path, {"ok": rgb()})
    la = np.stack([rgb()[..., 0], np.full((16, 16), 255, np.uint8)], axis=-1)
    save_png(img_dir / "greyalpha.png", la, mode="LA")
    ds = FolderDataset(img_dir, image_size=16)
    names = [ds.source.name(i) for i in range(len(ds))]
    assert re.search(r"'greyalpha.png' has 2 channel\(s\) but 3 are expected", ds[names.index("greyalpha")]["error"])
    assert ds[names.index("ok")]["x"].shape == (3, 16, 16)


def test_three_channel_image_for_one_channel_prior(tmp_path):
    from vipaint.priors.external import PixelPrior, tiny_random_unet

    path = tiny_random_unet(tmp_path / "grey-unet", image_size=16, channels=1, seed=0)
    module = VIPaintModule(prior=PixelPrior(str(path), local_files_only=True), **TINY)
    err = module.solver.check(torch.zeros(3, 16, 16), keep_box())
    assert err == "it has 3 channels, the prior expects 1"
    out = module._run(batch_of([torch.zeros(3, 16, 16)], [keep_box()], ["photo"]), 0)
    assert [r.status for r in out] == [f"'photo': {err}"]      # the module names the image


def test_image_of_wrong_size_for_the_prior(tiny_prior):
    module = VIPaintModule(prior=tiny_prior, **TINY)
    err = module.solver.check(torch.zeros(3, 32, 32), torch.ones(1, 32, 32))
    assert "is 32x32, the prior expects 16x16" in err and "--data.init_args.image_size 16" in err
    out = module._run(batch_of([torch.zeros(3, 32, 32)], [torch.ones(1, 32, 32)], ["big"]), 0)
    assert [r.status for r in out] == [f"'big': {err}"]        # the module names the image


def test_unreadable_file_names_the_file(tmp_path):
    img_dir, _ = folder(tmp_path, {"a": rgb()})
    bad = img_dir / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png" + bytes(range(256)))
    ds = FolderDataset(img_dir, image_size=16)
    idx = [ds.source.name(i) for i in range(len(ds))].index("broken")
    assert re.search(r"cannot read image .*broken\.png", ds[idx]["error"])
    assert ds[1 - idx]["name"] == "a"


# -- model-level failures are isolated per image -------------------------------------------------------
def test_nan_pixels_fail_only_that_image(tiny_prior, tmp_path):
    module = VIPaintModule(prior=tiny_prior, **TINY)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(3, 16, 16, generator=g) * 2 - 1, torch.rand(3, 16, 16, generator=g) * 2 - 1
    x1[0, 2, 3] = float("nan")
    out = module._run(batch_of([x0, x1], [keep_box(), keep_box()], ["good", "nan"]), 0)
    assert out[0].status == "ok"
    assert "NaN" in out[1].status and "'nan'" in out[1].status
    assert torch.isfinite(out[0].samples).all() and out[0].samples.abs().sum() > 0
    assert math.isfinite(out[0].bound["elbo"])

    # The writer: full outputs for the good image, only an error result.json for the failed one.
    writer = VIPaintWriter(str(tmp_path / "out"))
    statuses = writer.write_prediction(out)
    assert statuses["good"] == "ok" and "NaN" in statuses["nan"]
    assert VIPaintWriter.is_complete(writer.output_dir, "good")
    assert not VIPaintWriter.is_complete(writer.output_dir, "nan")
    assert sorted(p.name for p in (writer.output_dir / "nan").iterdir()) == [RESULT_FILE]
    res = json.loads((writer.output_dir / "nan" / RESULT_FILE).read_text())
    assert res["status"] == out[1].status and res["files"] == [] and res["num_samples"] == 0


def test_nan_bound_during_fit_fails_only_that_image(tiny_prior, monkeypatch):
    """If NaN reaches the fit (here: the input check is bypassed), only that image's bound is NaN."""
    monkeypatch.setattr(Inpainter, "check", lambda self, x, keep_mask: None)
    module = VIPaintModule(prior=tiny_prior, **TINY)
    g = torch.Generator().manual_seed(1)
    xs = [torch.rand(3, 16, 16, generator=g) * 2 - 1 for _ in range(3)]
    xs[1][:, 0, 0] = float("nan")  # an observed pixel (the box mask keeps the border)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = module._run(batch_of(xs, [keep_box()] * 3, ["a", "b", "c"]), 0)
    assert out[0].status == "ok" and out[2].status == "ok", [r.status for r in out]
    assert out[1].status.startswith("'b': ") and "bound became NaN" in out[1].status
    for b in (0, 2):
        assert torch.isfinite(out[b].samples).all()
        assert all(math.isfinite(v) for v in out[b].bound.values())
    assert out[1].bound == {}


def test_failed_image_is_retried_on_rerun(tiny_prior, tmp_path, monkeypatch):
    """Through a Trainer: a batch of 4 with one failure writes the 3 others; a re-run redoes only it."""
    from lightning.pytorch import Trainer

    names = ["a", "b", "c", "d"]
    img_dir, _ = folder(tmp_path, {n: rgb(seed=i) for i, n in enumerate(names)})
    out_dir = tmp_path / "out"

    def run():
        writer = VIPaintWriter(str(out_dir))
        trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, callbacks=[writer],
                          enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                          default_root_dir=tmp_path)
        dm = FolderDataModule(str(img_dir), image_size=16, batch_size=4)
        trainer.predict(VIPaintModule(prior=tiny_prior, **TINY), datamodule=dm, return_predictions=False)

    original = Inpainter.check
    # The check sees pixels, not names: image "b" is recognised by its pixels.
    ds = FolderDataset(img_dir, image_size=16)
    x_b = ds[[ds.source.name(i) for i in range(len(ds))].index("b")]["x"]

    def flaky_check(self, x, keep_mask):
        if torch.equal(x.cpu(), x_b):
            return "could not be processed (simulated)"
        return original(self, x, keep_mask)

    monkeypatch.setattr(Inpainter, "check", flaky_check)
    run()
    results = {n: json.loads((out_dir / n / RESULT_FILE).read_text()) for n in names}
    assert results["b"]["status"] == "'b': could not be processed (simulated)"
    assert [p.name for p in (out_dir / "b").iterdir()] == [RESULT_FILE]
    assert VIPaintWriter.completed_names(out_dir) == {"a", "c", "d"}
    mtimes = {n: (out_dir / n / RESULT_FILE).stat().st_mtime_ns for n in names}

    monkeypatch.setattr(Inpainter, "check", original)
    run()
    assert VIPaintWriter.completed_names(out_dir) == set(names)
    assert json.loads((out_dir / "b" / RESULT_FILE).read_text())["status"] == "ok"
    for n in ("a", "c", "d"):  # completed images are skipped, their files untouched
        assert (out_dir / n / RESULT_FILE).stat().st_mtime_ns == mtimes[n]


@pytest.mark.parametrize("operator", ["blur", "super_resolution"])
def test_other_operators_run_through_the_module(tiny_prior, operator):
    """Deblurring and x4 super-resolution go through the same module: y is formed by the operator,
    the observation shown is its image-space picture, and no mask is written for composites."""
    from vipaint.jobs.module import VIPaintModule

    module = VIPaintModule(prior=tiny_prior, operator=OperatorConfig(name=operator, blur_std=1.0),
                           vipaint=tiny_settings(fit_steps=2), n_samples=2, progress=False)
    batch = {"x": torch.rand(2, 3, 16, 16) * 2 - 1, "keep_mask": torch.ones(2, 1, 16, 16), "name": ["p", "q"],
             "index": torch.tensor([0, 1])}
    out = module._run(batch, 0)
    assert [r.status for r in out] == ["ok", "ok"] and all(r.keep_mask is None for r in out)
    assert len(out) == 2 and all(r.samples.shape == (2, 3, 16, 16) for r in out)
    assert all(torch.isfinite(r.samples).all() for r in out)
    assert all(r.y_image.shape == (3, 16, 16) for r in out)
    assert all(np.isfinite(out[b].bound["elbo"]) for b in range(2))


def test_l1_lpips_reconstruction_loss_runs_with_local_lpips(tiny_prior, lpips_dir):
    """The authors' L1 + LPIPS reconstruction (docs/method.md §5.3) with the LPIPS backbone from a local folder."""
    from vipaint.jobs.module import VIPaintModule

    l1_lpips = LikelihoodConfig(kind="l1_lpips", lpips_net="alex", lpips_backbone=str(lpips_dir))
    module = VIPaintModule(prior=tiny_prior, vipaint=tiny_settings(fit_steps=2, likelihood=l1_lpips), n_samples=2,
                           progress=False)
    keep = torch.ones(1, 1, 16, 16)
    keep[..., 8:] = 0
    out = module._run({"x": torch.rand(1, 3, 16, 16) * 2 - 1, "keep_mask": keep, "name": ["a"],
                       "index": torch.tensor([0])}, 0)
    assert [r.status for r in out] == ["ok"] and all(torch.isfinite(r.samples).all() for r in out)
    with pytest.raises(ValueError, match="inpainting only"):
        VIPaintModule(prior=tiny_prior, vipaint=VIPaintConfig(likelihood=LikelihoodConfig(kind="l1_lpips")),
                      operator=OperatorConfig(name="blur"))


def test_old_likelihood_kind_authors_is_refused_with_its_new_name():
    """The likelihood kind "authors" was renamed "l1_lpips": the old spelling is an error naming the new one."""
    with pytest.raises(ValueError, match="likelihood kind 'authors' was renamed 'l1_lpips'"):
        LikelihoodConfig(kind="authors")


def test_items_checked_by_the_datamodule_are_not_checked_again(tiny_prior, tmp_path, monkeypatch):
    # The datamodule checks each item in full against the shape the model expects (``expect``) and says so
    # (``checked_for``); the module then runs its own check only on items nobody checked for this prior.
    img_dir, _ = folder(tmp_path, {"a": rgb(), "b": rgb(seed=1)})
    dm = FolderDataModule(str(img_dir), mask="box", batch_size=2)
    dm.expect(tiny_prior.image_shape)
    batch = next(iter(dm.predict_dataloader()))
    assert batch["checked_for"].tolist() == [list(tiny_prior.image_shape)] * 2
    module = VIPaintModule(prior=tiny_prior, **{**TINY, "vipaint": tiny_settings(fit_steps=0)})
    calls = []
    check = module.solver.check
    monkeypatch.setattr(module.solver, "check", lambda x, k: calls.append(1) or check(x, k))
    assert [r.status for r in module._run(batch, 0)] == ["ok", "ok"] and not calls
    del batch["checked_for"]                                          # a batch from elsewhere: checked here
    assert [r.status for r in module._run(batch, 0)] == ["ok", "ok"] and len(calls) == 2

"""Tests for vipaint.atomic (atomic writes) and vipaint.jobs.writer (per-image prediction files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vipaint import atomic
from vipaint.atomic import (
    atomic_save_json,
    atomic_save_png,
    atomic_write_bytes,
    to_uint8,
)
from vipaint.jobs.figures import STD_SCALE
from vipaint.jobs.results import ImageResult
from vipaint.jobs.writer import VIPaintWriter, completed_names


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("write", [lambda p: atomic_write_bytes(p, b"x"), lambda p: atomic_save_json(p, {"a": 1})])
def test_atomic_writes_have_ordinary_permissions(tmp_path, write):
    """Outputs are readable by others as any file created under the umask (0o666 & ~umask), not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        write(tmp_path / "out")
        write(tmp_path / "out")   # replacing keeps them too
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o644


def test_simulated_crash_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic_save_json(target, {"status": "ok"})

    def boom(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_save_json(target, {"status": "new"})
    with pytest.raises(OSError):
        atomic_save_png(tmp_path / "result.json", torch.zeros(3, 4, 4))
    assert json.loads(target.read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # temp files cleaned


def test_to_uint8_quantisation_and_png_roundtrip(tmp_path):
    x = torch.tensor([[[-1.0, -2.0], [1.0, 0.0]]])  # (1, 2, 2)
    assert to_uint8(x)[..., 0].tolist() == [[0, 0], [255, 128]]  # round(127.5) -> 128 (even)
    img = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1
    atomic_save_png(tmp_path / "a.png", img)
    assert np.array_equal(_png(tmp_path / "a.png"), to_uint8(img))
    atomic_save_png(tmp_path / "g.png", img[:1])
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L"
    assert np.array_equal(_png(tmp_path / "g.png"), to_uint8(img[:1])[..., 0])
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="channels"):
        atomic_save_png(tmp_path / "bad.png", torch.zeros(2, 4, 4))


def test_json_is_strict_and_keeps_nonfinite(tmp_path):
    atomic_save_json(tmp_path / "x.json", {"a": torch.tensor(1.5), "b": float("nan"),
                                           "c": (1, np.float32(2.0)), "p": tmp_path})
    data = json.loads((tmp_path / "x.json").read_text(), parse_constant=pytest.fail)
    assert data == {"a": 1.5, "b": "NaN", "c": [1, 2.0], "p": str(tmp_path)}


# ---------------------------------------------------------------- writer
def _prediction(names, n=2, c=3, h=8, w=6, mask=True, status=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(names)
    samples = torch.rand(b, n, c, h, w, generator=g) * 2 - 1
    keep = (torch.rand(b, 1, h, w, generator=g) > 0.5).float() if mask else None
    x = torch.rand(b, c, h, w, generator=g) * 2 - 1
    y = x * keep if mask else x
    status = status or ["ok"] * b
    mean = samples.mean(1)
    std = samples.std(1, correction=0) * 3  # > STD_SCALE in places: exercises clipping
    out = []
    for i, (name, s) in enumerate(zip(names, status)):
        ok = s == "ok"   # the contract: failed images carry no tensors
        out.append(ImageResult(
            name=name, status=s,
            samples=samples[i] if ok else None, mean=mean[i] if ok else None, std=std[i] if ok else None,
            y_image=y[i] if ok else None, keep_mask=keep[i] if ok and mask else None,
            bound={"elbo": -1.0 - i, "recon": 0.5, "kl_hier": torch.tensor(0.25)},
            meta={"seed": i, "fit_seconds": 1.5},
        ))
    return out


def test_writer_writes_all_files_with_exact_pixels(tmp_path):
    pred = _prediction(["img_a", "img_b"], n=3)
    writer = VIPaintWriter(output_dir=str(tmp_path))
    writer.write_on_batch_end(None, None, pred, [0, 1], None, 0, 0)
    for i, r in enumerate(pred):
        name = r.name
        d = tmp_path / name
        res = json.loads((d / "result.json").read_text())
        expected = [f"sample_{j:02d}.png" for j in range(3)] + [
            f"composite_{j:02d}.png" for j in range(3)] + ["mean.png", "std.png", "observation.png"]
        assert sorted(res["files"]) == sorted(expected)
        assert sorted(p.name for p in d.iterdir()) == sorted(expected + ["result.json"])
        assert res["status"] == "ok" and res["num_samples"] == 3 and res["name"] == name
        assert res["bound"] == {"elbo": -1.0 - i, "recon": 0.5, "kl_hier": 0.25}
        assert res["seed"] == i and res["fit_seconds"] == 1.5 and res["std_scale"] == STD_SCALE
        for j in range(3):
            assert np.array_equal(_png(d / f"sample_{j:02d}.png"), to_uint8(r.samples[j]))
        assert np.array_equal(_png(d / "mean.png"), to_uint8(r.mean))
        assert np.array_equal(_png(d / "observation.png"), to_uint8(r.y_image))
        std_ref = (r.std.mean(0, keepdim=True) / STD_SCALE).clamp(0, 1) * 2 - 1
        std_png = _png(d / "std.png")
        assert std_png.ndim == 2 and np.array_equal(std_png, to_uint8(std_ref)[..., 0])
        assert std_png.max() == 255  # fixed scale: std >= 1 saturates to white
        # Composite equals the observation on observed pixels and the sample elsewhere.
        keep = r.keep_mask[0].bool().numpy()
        comp = _png(d / "composite_01.png")
        assert np.array_equal(comp[keep], _png(d / "observation.png")[keep])
        assert np.array_equal(comp[~keep], _png(d / "sample_01.png")[~keep])
        assert VIPaintWriter.is_complete(tmp_path, name)
    assert completed_names(tmp_path) == {"img_a", "img_b"}
    assert not list(tmp_path.rglob("*.tmp"))


def test_writer_without_mask_writes_no_composites(tmp_path):
    VIPaintWriter(str(tmp_path)).write_prediction(_prediction(["x"], n=1, mask=False))
    assert not list((tmp_path / "x").glob("composite_*"))
    assert VIPaintWriter.is_complete(tmp_path, "x")


def test_failed_image_writes_only_json_and_is_retried(tmp_path):
    pred = _prediction(["good", "bad"], status=["ok", "CUDA OOM in fit"])
    VIPaintWriter(str(tmp_path)).write_prediction(pred)
    assert [p.name for p in (tmp_path / "bad").iterdir()] == ["result.json"]
    res = json.loads((tmp_path / "bad" / "result.json").read_text())
    assert res["status"] == "CUDA OOM in fit" and res["files"] == [] and res["seed"] == 1
    assert not VIPaintWriter.is_complete(tmp_path, "bad")
    assert completed_names(tmp_path) == {"good"}
    # A re-run that succeeds completes it.
    VIPaintWriter(str(tmp_path)).write_prediction(_prediction(["bad"]))
    assert completed_names(tmp_path) == {"good", "bad"}


def test_nan_samples_fail_only_their_image_where_they_are_made(tmp_path, tiny_prior):
    """Finiteness is checked once, by the Inpainter that made the samples: a method that diverges on one image
    marks that image failed (the writer, which trusts the status, then writes only its result.json) and leaves the
    others' samples as they were."""
    from vipaint.jobs.api import Inpainter

    def diverges_on_image_1(prior, op, y, n_samples, config, generator):
        samples = torch.zeros(y.shape[0], n_samples, *y.shape[1:])
        samples[1, 0, 0, 0, 0] = float("nan")
        return samples, 0

    solver = Inpainter(tiny_prior, "mean_fill", n_samples=2)
    solver.baseline = (diverges_on_image_1, solver.baseline[1])
    x = torch.zeros(3, *tiny_prior.image_shape)
    res = solver(x, torch.ones_like(x[:, :1]), torch.Generator().manual_seed(0))
    assert list(res.failed) == [1] and "NaN" in res.failed[1]
    assert torch.isfinite(res.samples[[0, 2]]).all()
    pred = _prediction(["fine", "diverged"], status=["ok", f"'diverged': {res.failed[1]}"])
    status = VIPaintWriter(str(tmp_path)).write_prediction(pred)
    assert status["fine"] == "ok" and "NaN" in status["diverged"]
    assert [p.name for p in (tmp_path / "diverged").iterdir()] == ["result.json"]
    assert completed_names(tmp_path) == {"fine"}


def test_is_complete_detects_missing_corrupt_and_error(tmp_path):
    writer = VIPaintWriter(str(tmp_path))
    writer.write_prediction(_prediction(["a", "b", "c"]))
    assert completed_names(tmp_path) == {"a", "b", "c"}
    (tmp_path / "a" / "mean.png").unlink()  # a listed file is missing
    (tmp_path / "b" / "result.json").write_text('{"status": "ok", "files": [')  # truncated
    res_c = json.loads((tmp_path / "c" / "result.json").read_text())
    atomic_save_json(tmp_path / "c" / "result.json", {**res_c, "status": "diverged"})
    for n in "abc":
        assert not VIPaintWriter.is_complete(tmp_path, n)
    assert not VIPaintWriter.is_complete(tmp_path, "never_written")
    assert completed_names(tmp_path) == set() and completed_names(tmp_path / "nope") == set()


def test_writer_validates_contract(tmp_path):
    # The dict contract's key and shape checks are gone with the dict: ImageResult is typed.
    w = VIPaintWriter(str(tmp_path))
    (pred,) = _prediction(["a"])
    pred.name = "../escape"
    with pytest.raises(ValueError, match="path separators"):
        w.write_prediction([pred])
    with pytest.raises(ValueError, match="write_interval"):
        VIPaintWriter(str(tmp_path), write_interval="epoch")
    w.write_on_batch_end(None, None, None, [], None, 0, 0)  # None prediction: nothing to do
    assert not any(tmp_path.iterdir())


def test_writer_in_trainer_predict(tmp_path):
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def predict_step(self, batch, batch_idx):
            return _prediction(list(batch["name"]), seed=batch_idx)

    # The writer reads each batch's names before the step (to decide skips): batches are dicts with "name".
    loader = torch.utils.data.DataLoader([{"name": f"img_{i}", "index": i} for i in range(5)], batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[VIPaintWriter(str(tmp_path))])
    trainer.predict(Module(), loader, return_predictions=False)
    assert completed_names(tmp_path) == {f"img_{i}" for i in range(5)}
    assert os.path.isfile(tmp_path / "img_4" / "composite_01.png")

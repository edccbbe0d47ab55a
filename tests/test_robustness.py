"""One bad image costs one image, never the run; reruns never keep stale results; options fail where declared.

Each case runs ``infer.py`` on a folder of good images with one bad one among them (batch size 4, so the bad one
shares a batch with good ones): the good ones are written, the bad one is reported (its ``result.json`` status,
``failed.json``, the end-of-run summary) and the exit status is 1.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import infer  # noqa: E402
from vipaint.jobs.writer import FAILED_FILE, RESULT_FILE, VIPaintWriter  # noqa: E402

GOOD = ("a", "b", "c")


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _image(size=(16, 16), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _mask(size=(16, 16), value=None) -> np.ndarray:
    if value is not None:
        return np.full(size, value, np.uint8)
    m = np.full(size, 255, np.uint8)
    m[size[0] // 4: 3 * size[0] // 4, size[1] // 4: 3 * size[1] // 4] = 0
    return m


def _args(tmp_path: Path, tiny_unet_dir: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "configs" / "infer_folder.yaml"),
            "--data.init_args.image_dir", str(tmp_path / "images"), "--data.init_args.mask_dir", str(tmp_path / "masks"),
            "--data.init_args.image_size", "null", "--data.init_args.batch_size", "4",
            "--model.prior.init_args.pretrained", str(tiny_unet_dir), "--model.prior.init_args.local_files_only", "true",
            "--model.vipaint.fit.n_iter", "1", "--model.vipaint.fit.n_samples", "1", "--model.vipaint.fit.n_grid", "3",
            "--model.vipaint.refine.n_steps", "1", "--model.n_samples", "1", "--model.progress", "false",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--output_dir", str(tmp_path / "out"), *extra]


def _bad_folder(tmp_path: Path, case: str) -> str:
    """Three good 16x16 images with masks, and one bad item named 'bad' of the given kind."""
    for i, name in enumerate(GOOD):
        _png(tmp_path / "images" / f"{name}.png", _image(seed=i))
        _png(tmp_path / "masks" / f"{name}.png", _mask())
    images, masks = tmp_path / "images", tmp_path / "masks"
    if case == "truncated":
        _png(images / "bad.png", _image(seed=9))
        data = (images / "bad.png").read_bytes()
        (images / "bad.png").write_bytes(data[: len(data) // 2])
        _png(masks / "bad.png", _mask())
        return "cannot read image"
    if case == "mask_size":
        _png(images / "bad.png", _image(seed=9))
        _png(masks / "bad.png", _mask((12, 12)))
        return "does not match image"
    if case == "all_black":
        _png(images / "bad.png", _image(seed=9))
        _png(masks / "bad.png", _mask(value=0))
        return "nothing observed"
    if case == "all_white":
        _png(images / "bad.png", _image(seed=9))
        _png(masks / "bad.png", _mask(value=255))
        return "nothing missing"
    if case in ("wrong_size", "wrong_aspect"):
        size = (48, 48) if case == "wrong_size" else (48, 32)
        _png(images / "bad.png", _image(size, seed=9))
        _png(masks / "bad.png", _mask(size))
        return "resize it (--data.init_args.image_size 16)"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["truncated", "mask_size", "all_black", "all_white", "wrong_size", "wrong_aspect"])
def test_one_bad_image_costs_only_itself(case, tmp_path, tiny_unet_dir, capsys):
    why = _bad_folder(tmp_path, case)
    with pytest.raises(SystemExit) as stop:
        infer.main(_args(tmp_path, tiny_unet_dir))
    assert stop.value.code == 1                                     # the run says something failed ...
    out = tmp_path / "out"
    for name in GOOD:                                               # ... but every good image was written
        assert VIPaintWriter.is_complete(out, name), name
    failed = json.loads((out / FAILED_FILE).read_text())
    assert list(failed) == ["bad"] and why in failed["bad"] and "bad" in failed["bad"]
    assert json.loads((out / "bad" / RESULT_FILE).read_text())["status"] == failed["bad"]
    assert "3 image(s) written" in capsys.readouterr().out and (out / "overview.png").is_file()


def test_reruns_skip_only_what_the_same_settings_made(tmp_path, tiny_unet_dir, capsys):
    for i, name in enumerate(GOOD):
        _png(tmp_path / "images" / f"{name}.png", _image(seed=i))
        _png(tmp_path / "masks" / f"{name}.png", _mask())
    out = tmp_path / "out"
    infer.main(_args(tmp_path, tiny_unet_dir))
    first = {n: json.loads((out / n / RESULT_FILE).read_text()) for n in GOOD}
    mtimes = {n: (out / n / RESULT_FILE).stat().st_mtime_ns for n in GOOD}
    capsys.readouterr()
    infer.main(_args(tmp_path, tiny_unet_dir))                     # same settings: every image skipped, untouched
    assert "0 image(s) written, 3 skipped" in capsys.readouterr().out
    assert {n: (out / n / RESULT_FILE).stat().st_mtime_ns for n in GOOD} == mtimes
    infer.main(_args(tmp_path, tiny_unet_dir, "--model.vipaint.fit.n_iter", "2", "--model.n_samples", "2"))
    assert "3 image(s) written, 0 skipped (finished earlier with the same settings), 3 recomputed" in \
        capsys.readouterr().out
    for n in GOOD:                                                  # recomputed with the new settings
        res = json.loads((out / n / RESULT_FILE).read_text())
        assert res["fit_steps"] == 2 and res["num_samples"] == 2 and res["fingerprint"] != first[n]["fingerprint"]


@pytest.mark.parametrize("option, value, message", [
    ("--model.vipaint.fit.n_iter", "-3", "vipaint.fit.n_iter must be >= 0"),
    ("--model.vipaint.fit.n_samples", "0", "vipaint.fit.n_samples must be >= 1"),
    ("--model.n_samples", "0", "n_samples must be >= 1"),
    ("--model.vipaint.keypoints", "[400, 550]", "vipaint.keypoints must be strictly decreasing"),
    ("--model.vipaint.keypoints", "[1200, 400]", "vipaint.keypoints must lie in [1, 999]"),
    ("--model.operator.sigma_y", "-0.1", "operator.sigma_y must be >= 0"),
    ("--model.vipaint.refine.n_steps", "0", "vipaint.refine.n_steps must be >= 1"),
    ("--model.prior.init_args.pretrained", "./no/such/prior", "the prior folder './no/such/prior' does not exist"),
])
def test_bad_options_print_one_sentence_naming_them(option, value, message, tmp_path, tiny_unet_dir, capsys):
    _bad_folder(tmp_path, "all_white")
    with pytest.raises(SystemExit) as stop:
        infer.main([*_args(tmp_path, tiny_unet_dir), option, value])
    text = str(stop.value.code)
    assert text.startswith("vipaint: error: ") and message in text and "\n" not in text
    assert not (tmp_path / "out" / "a").exists()                    # nothing ran


@pytest.mark.parametrize("kind", ["file", "read_only"])
def test_unwritable_output_folder_fails_before_any_work(kind, tmp_path, tiny_unet_dir):
    import os

    _bad_folder(tmp_path, "all_white")
    target = tmp_path / "target"
    if kind == "file":
        target.write_text("not a folder")
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write into read-only folders")
        target.mkdir()
        target.chmod(0o500)
    with pytest.raises(SystemExit) as stop:
        infer.main([*_args(tmp_path, tiny_unet_dir)[:-2], "--output_dir", str(target)])
    assert str(stop.value.code).startswith("vipaint: error: ") and "--output_dir" in str(stop.value.code)


def test_no_logger_writes_the_config_beside_the_outputs_not_the_cwd(tmp_path, tiny_unet_dir, monkeypatch):
    _bad_folder(tmp_path, "all_white")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit):
        infer.main(_args(tmp_path, tiny_unet_dir))
    assert (tmp_path / "out" / "config.yaml").is_file() and not (work / "config.yaml").exists()

"""Prediction writer: turns the dict returned by ``predict_step`` into per-image files.

Layout, one directory per image under ``output_dir``::

    <name>/sample_00.png ... sample_{N-1:02d}.png   posterior samples (pixel space)
    <name>/composite_00.png ...                     observed pixels pasted back (inpainting only)
    <name>/mean.png                                 posterior mean
    <name>/std.png                                  per-pixel posterior std, see STD_SCALE
    <name>/observation.png                          the observation y (missing pixels grey)
    <name>/result.json                              bound terms, status, meta, file list

At the end of a run, rank 0 also writes ``overview.png``: one row per complete image (up to
``OVERVIEW_MAX`` rows, sorted by name) — observation | composites (or samples) | mean | std — so a person
can judge a whole run at a glance.

``result.json`` is written last, atomically, and is the completion marker: an image counts as
done only if its result.json parses, says ``"status": "ok"`` and every file it lists exists
(:meth:`VIPaintWriter.is_complete`). A crash mid-image, or a fit that failed, therefore leaves
the image incomplete and a re-run retries it; :func:`completed_names` lets the datamodule or
module skip the rest.

Each rank writes the images of its own batches: names are unique, so ranks never touch the
same directory and no gather to rank 0 is needed (which would also cost memory).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from vipaint.outputs import atomic_save_json, atomic_save_png

__all__ = ["VIPaintWriter", "completed_names", "write_overview", "RESULT_FILE", "STD_SCALE", "OVERVIEW_MAX"]

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
#: A status starting with this marks an image the module skipped because its outputs are complete.
SKIPPED = "skipped"

# std.png maps std / STD_SCALE, clipped to [0, 1], to black..white. The scale is FIXED (not the
# per-image max) so that std maps are comparable across images and runs. In [-1, 1] units a
# std of 1.0 is half the dynamic range -- already a completely uncertain pixel -- so it is
# shown white; std 0 (e.g. an observed pixel) is black. The value is recorded in result.json.
STD_SCALE = 1.0
OVERVIEW_MAX = 64

_REQUIRED_KEYS = ("names", "samples", "mean", "std", "y", "keep_mask", "bound", "status", "meta")
# Keys the writer owns in result.json; a meta entry with the same name is kept as "meta_<key>".
_RESERVED_KEYS = ("name", "status", "bound", "num_samples", "files", "std_scale")


def _check_name(name: Any) -> str:
    # Names become directory names: refuse anything that could escape output_dir or collide.
    if not isinstance(name, str) or name in ("", ".", ".."):
        raise ValueError(f"invalid image name {name!r}: must be a non-empty string")
    if "/" in name or "\\" in name or os.sep in name or "\x00" in name:
        raise ValueError(f"invalid image name {name!r}: must not contain path separators")
    return name


def _validate(pred: Mapping[str, Any]) -> int:
    """Check the predict_step contract; return the batch size. Errors name the offending key."""
    if not isinstance(pred, Mapping):
        raise TypeError(f"VIPaintWriter expects predict_step to return a dict, got {type(pred)}")
    missing = [k for k in _REQUIRED_KEYS if k not in pred]
    if missing:
        raise KeyError(f"predict_step output is missing keys {missing}; needs {_REQUIRED_KEYS}")
    names = pred["names"]
    if not isinstance(names, Sequence) or isinstance(names, str):
        raise TypeError(f"'names' must be a list of str, got {type(names).__name__}")
    b = len(names)
    for n in names:
        _check_name(n)
    if len(set(names)) != b:
        raise ValueError(f"'names' must be unique within a batch, got {list(names)}")

    samples = pred["samples"]
    if not isinstance(samples, torch.Tensor) or samples.dim() != 5 or samples.shape[0] != b:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
        raise ValueError(f"'samples' must be a (B={b}, N, C, H, W) tensor, got {shape}")
    if samples.shape[1] < 1:
        raise ValueError("'samples' must hold at least one sample per image (N >= 1)")
    chw = tuple(samples.shape[2:])
    for key in ("mean", "std", "y"):
        t = pred[key]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (b, *chw):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t)
            raise ValueError(f"'{key}' must have shape {(b, *chw)}, got {shape}")
    mask = pred["keep_mask"]
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (b, 1, *chw[1:]):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask)
            raise ValueError(f"'keep_mask' must be None or shape {(b, 1, *chw[1:])}, got {shape}")
    for key in ("bound", "status", "meta"):
        v = pred[key]
        if not isinstance(v, Sequence) or isinstance(v, str) or len(v) != b:
            raise ValueError(f"'{key}' must be a list of length B={b}, got {v!r:.200}")
    for s in pred["status"]:
        if not isinstance(s, str) or not s:
            raise ValueError(f"each 'status' must be 'ok' or a non-empty error message, got {s!r}")
    for key in ("bound", "meta"):
        for v in pred[key]:
            if not isinstance(v, Mapping):
                raise ValueError(f"each '{key}' entry must be a dict, got {type(v).__name__}")
    return b


class VIPaintWriter(BasePredictionWriter):
    """Write posterior samples, mean, std, observation and composites, one dir per image.

    Args:
        output_dir: root directory; image ``name`` goes to ``output_dir/name/``.
        write_interval: must be ``"batch"``: writing as each batch finishes keeps memory flat
            and makes every finished image durable (and skippable) even if the run dies later.
    """

    STD_SCALE = STD_SCALE
    RESULT_FILE = RESULT_FILE

    def __init__(self, output_dir: str = "outputs", write_interval: str = "batch") -> None:
        if write_interval != "batch":
            raise ValueError(
                f"VIPaintWriter only supports write_interval='batch', got {write_interval!r}: "
                "per-batch writing is what makes interrupted runs resumable"
            )
        super().__init__(write_interval)
        self.output_dir = Path(output_dir)

    # ------------------------------------------------------------------ Lightning hooks
    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # A module may return None when every image of the batch was already complete.
        if prediction is None:
            return
        self.write_prediction(prediction)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        # `infer.py --mode test` scores the samples and writes them like predict does.
        if outputs is not None:
            self.write_prediction(outputs)

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        # Unused: write_interval is always "batch" (see __init__).
        return None

    def _overview(self, trainer: Any) -> None:
        trainer.strategy.barrier()          # every rank's images are on disk before rank 0 reads them
        if trainer.is_global_zero:
            path = write_overview(self.output_dir)
            if path is not None:
                log.info("VIPaintWriter: overview of the run in %s", path)

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._overview(trainer)

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._overview(trainer)

    # ------------------------------------------------------------------ writing
    def write_prediction(self, prediction: Mapping[str, Any]) -> dict[str, str]:
        """Write every image of one predict_step output; return ``{name: final status}``."""
        b = _validate(prediction)
        if b == 0:
            return {}
        # One device->host copy per batch rather than per image / per file.
        samples = prediction["samples"].detach().to("cpu", torch.float32)
        mean = prediction["mean"].detach().to("cpu", torch.float32)
        std = prediction["std"].detach().to("cpu", torch.float32)
        y = prediction["y"].detach().to("cpu", torch.float32)
        mask = prediction["keep_mask"]
        if mask is not None:
            mask = mask.detach().to("cpu", torch.float32)
        out: dict[str, str] = {}
        for i, name in enumerate(prediction["names"]):
            if str(prediction["status"][i]).startswith(SKIPPED):
                # Already complete from an earlier run: leave its files untouched.
                out[name] = prediction["status"][i]
                continue
            out[name] = self._write_one(
                name,
                samples[i],
                mean[i],
                std[i],
                y[i],
                None if mask is None else mask[i],
                prediction["bound"][i],
                prediction["status"][i],
                prediction["meta"][i],
            )
        return out

    def _write_one(
        self,
        name: str,
        samples: torch.Tensor,  # (N, C, H, W)
        mean: torch.Tensor,
        std: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,  # (1, H, W)
        bound: Mapping[str, Any],
        status: str,
        meta: Mapping[str, Any],
    ) -> str:
        img_dir = self.output_dir / name
        img_dir.mkdir(parents=True, exist_ok=True)
        result_path = img_dir / RESULT_FILE
        # Invalidate any previous marker BEFORE touching the images: otherwise a crash while
        # overwriting an earlier complete result would leave an old "ok" marker over a mix of
        # old and new PNGs.
        result_path.unlink(missing_ok=True)

        if status == "ok":
            tensors = [samples, mean, std, y] + ([] if mask is None else [mask])
            if not all(torch.isfinite(t).all() for t in tensors):
                # Do not crash the whole run for one diverged image: record it as failed so a
                # re-run retries it, and write no (meaningless) PNGs.
                status = "non-finite values in predicted tensors (status was 'ok')"
                log.warning("VIPaintWriter: image %r: %s", name, status)

        files: list[str] = []
        if status == "ok":
            for j, s in enumerate(samples):
                files.append(f"sample_{j:02d}.png")
                atomic_save_png(img_dir / files[-1], s)
            if mask is not None:
                # Paste observed pixels back: the composite is exact on the observed region.
                for j, s in enumerate(samples):
                    files.append(f"composite_{j:02d}.png")
                    atomic_save_png(img_dir / files[-1], mask * y + (1.0 - mask) * s)
            files.append("mean.png")
            atomic_save_png(img_dir / "mean.png", mean)
            files.append("std.png")
            std_map = (std.clamp_min(0).mean(dim=0, keepdim=True) / max(1e-8, STD_SCALE)).clamp(0, 1)
            atomic_save_png(img_dir / "std.png", std_map * 2.0 - 1.0)  # [0,1] -> [-1,1] units
            files.append("observation.png")
            atomic_save_png(img_dir / "observation.png", y)
        else:
            log.warning("VIPaintWriter: image %r failed: %s", name, status)

        result: dict[str, Any] = {}
        for k, v in meta.items():
            result[f"meta_{k}" if k in _RESERVED_KEYS else k] = v
        result.update(
            name=name,
            status=status,
            bound=dict(bound),
            num_samples=int(samples.shape[0]) if status == "ok" else 0,
            files=files,
            std_scale=STD_SCALE,
        )
        atomic_save_json(result_path, result)  # last: marks the image complete
        return status

    # ------------------------------------------------------------------ resume support
    @staticmethod
    def is_complete(output_dir: str | os.PathLike, name: str) -> bool:
        """True iff ``output_dir/name/result.json`` parses, has status "ok" and all its files exist."""
        img_dir = Path(output_dir) / _check_name(name)
        try:
            data = json.loads((img_dir / RESULT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, unreadable, corrupt JSON or bad UTF-8
            return False
        if not isinstance(data, dict) or data.get("status") != "ok":
            return False
        files = data.get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            return False
        return all((img_dir / f).is_file() for f in files)

    @staticmethod
    def completed_names(output_dir: str | os.PathLike) -> set[str]:
        return completed_names(output_dir)


def completed_names(output_dir: str | os.PathLike) -> set[str]:
    """Names of all images under ``output_dir`` that are complete (see ``is_complete``)."""
    root = Path(output_dir)
    if not root.is_dir():
        return set()
    done: set[str] = set()
    for entry in root.iterdir():
        if entry.is_dir() and VIPaintWriter.is_complete(root, entry.name):
            done.add(entry.name)
    return done


def write_overview(output_dir: str | os.PathLike, max_rows: int = OVERVIEW_MAX) -> Path | None:
    """``output_dir/overview.png`` from the complete images' PNGs (see the module docstring); None if none."""
    import numpy as np
    from PIL import Image

    from vipaint.outputs import atomic_write_bytes

    root = Path(output_dir)
    names = sorted(completed_names(root))[:max_rows]
    if not names:
        return None
    rows = []
    for name in names:
        files = json.loads((root / name / RESULT_FILE).read_text(encoding="utf-8"))["files"]
        shown = [f for f in files if f.startswith("composite_")] or [f for f in files if f.startswith("sample_")]
        row = [Image.open(root / name / f).convert("RGB") for f in ["observation.png", *shown, "mean.png", "std.png"]]
        rows.append(row)
    w, h = rows[0][0].size
    cols = max(len(r) for r in rows)
    pad = 2
    sheet = np.full(((h + pad) * len(rows) + pad, (w + pad) * cols + pad, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            if im.size == (w, h):
                sheet[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = \
                    np.asarray(im)
    scale = max(1, 64 // h)          # small digits are hard to see at 1:1
    img = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path = root / "overview.png"
    atomic_write_bytes(path, buf.getvalue())
    return path

"""Prediction writer: turns the ``ImageResult`` list returned by ``predict_step`` into per-image files.

Layout, one directory per image under ``output_dir``::

    <name>/sample_00.png ... sample_{N-1:02d}.png   posterior samples (pixel space)
    <name>/composite_00.png ...                     observed pixels pasted back (inpainting only)
    <name>/mean.png                                 posterior mean
    <name>/std.png                                  per-pixel posterior std, see figures.STD_SCALE
    <name>/observation.png                          the observation y (missing pixels grey)
    <name>/input.png                                the image the observation was made from
    <name>/result.json                              status, bound terms, meta, fingerprint, file list

At the end of a run, rank 0 writes ``overview.png`` (one titled row per finished image, up to ``OVERVIEW_MAX``,
sorted by name: observation | composites (or samples) | mean | std | input) and ``failed.json`` (every image in
the folder whose last attempt failed, with why), and logs a one-line summary.

``result.json`` is written last, atomically, and is the completion marker: an image counts as
done only if its result.json parses, says ``"status": "ok"`` and every file it lists exists
(:meth:`VIPaintWriter.is_complete`). Before each batch the writer tells the module which images to skip
(``batch["skip"]``): those complete **with the run's fingerprint** (``VIPaintModule.fingerprint``: every setting
and weight that determines the outputs). An image finished with other settings is recomputed, and the run says
how many were; so a rerun never keeps stale results silently, and finished images of the same settings are never
touched. Test mode recomputes every image (it scores them).

Each rank writes the images of its own batches: names are unique, so ranks never touch the
same directory and no gather to rank 0 is needed (which would also cost memory).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from vipaint.atomic import atomic_save_json, atomic_save_png, atomic_write_bytes

from .figures import STD_SCALE, result_titles, std_image, titled_sheet
from .results import SKIPPED, ImageResult

__all__ = ["VIPaintWriter", "completed_names", "write_overview", "RESULT_FILE", "FAILED_FILE", "OVERVIEW_MAX"]

log = logging.getLogger(__name__)

RESULT_FILE, FAILED_FILE = "result.json", "failed.json"
OVERVIEW_MAX = 64
# Keys the writer owns in result.json; a meta entry with the same name is kept as "meta_<key>".
_RESERVED_KEYS = ("name", "status", "bound", "num_samples", "files", "std_scale")


def _check_name(name: Any) -> str:
    # Names become directory names: refuse anything that could escape output_dir or collide.
    if not isinstance(name, str) or name in ("", ".", ".."):
        raise ValueError(f"invalid image name {name!r}: must be a non-empty string")
    if "/" in name or "\\" in name or os.sep in name or "\x00" in name:
        raise ValueError(f"invalid image name {name!r}: must not contain path separators")
    return name


def _read_result(img_dir: Path) -> dict | None:
    try:
        data = json.loads((img_dir / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, corrupt JSON or bad UTF-8
        return None
    return data if isinstance(data, dict) else None


class VIPaintWriter(BasePredictionWriter):
    """Write posterior samples, mean, std, observation and composites, one dir per image.

    Args:
        output_dir: root directory; image ``name`` goes to ``output_dir/name/``. Checked writable at the start.
        write_interval: must be ``"batch"``: writing as each batch finishes keeps memory flat
            and makes every finished image durable (and skippable) even if the run dies later.
    """

    RESULT_FILE = RESULT_FILE

    def __init__(self, output_dir: str, write_interval: str = "batch") -> None:
        if write_interval != "batch":
            raise ValueError(
                f"VIPaintWriter only supports write_interval='batch', got {write_interval!r}: "
                "per-batch writing is what makes interrupted runs resumable"
            )
        super().__init__(write_interval)
        self.output_dir = Path(output_dir)
        self.counts = {"written": 0, "skipped": 0, "recomputed": 0, "failed": 0}
        self._writable = False

    def check_writable(self) -> None:
        """Raise a one-sentence ``OSError`` unless ``output_dir`` is (or can be made) a writable folder; checked once
        (``infer.py`` asks before anything is written, ``setup`` for every other use)."""
        if self._writable:
            return
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise OSError(f"the output folder {self.output_dir} is a file: pass another --output_dir")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            probe = self.output_dir / f".write_test.{os.getpid()}"   # one per process: DDP ranks probe at once
            atomic_write_bytes(probe, b"")
            probe.unlink(missing_ok=True)
        except OSError as e:
            raise OSError(f"cannot write into the output folder {self.output_dir} ({e.strerror or e}): "
                          "pass a writable --output_dir") from None
        self._writable = True

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.counts = dict.fromkeys(self.counts, 0)
        self.check_writable()

    def on_predict_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        """Decide, before the step, which images are finished with this run's settings (``batch["skip"]``)."""
        fingerprint = getattr(pl_module, "fingerprint", None)
        skip = {}
        for name in batch["name"]:
            data = _read_result(self.output_dir / _check_name(name))
            if data is None or not self.is_complete(self.output_dir, name):
                continue
            if data.get("fingerprint") == fingerprint:
                skip[name] = "finished earlier with the same settings"
            else:
                self.counts["recomputed"] += 1
                log.info("%s: made with other settings (fingerprint %s, now %s): recomputing", name,
                         data.get("fingerprint"), fingerprint)
        self.counts["skipped"] += len(skip)
        batch["skip"] = skip

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Sequence[int] | None,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if prediction is not None:
            self.write_prediction(prediction)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        # `infer.py --mode test` scores the samples and writes them like predict does.
        if outputs is not None:
            self.write_prediction(outputs)

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        return None   # unused: write_interval is always "batch" (see __init__)

    def _finish(self, trainer: Any) -> None:
        counts = {k: int(trainer.strategy.reduce(torch.tensor(v, dtype=torch.float64), reduce_op="sum"))
                  for k, v in self.counts.items()}
        self.counts = counts
        trainer.strategy.barrier()          # every rank's images are on disk before rank 0 reads them
        if trainer.is_global_zero:
            write_overview(self.output_dir)
            failed = failed_images(self.output_dir)
            path = self.output_dir / FAILED_FILE
            if failed:
                atomic_save_json(path, failed)
            else:
                path.unlink(missing_ok=True)
            print(f"vipaint: {counts['written']} image(s) written, {counts['skipped']} skipped (finished earlier "
                  f"with the same settings), {counts['recomputed']} recomputed (made with other settings), "
                  f"{counts['failed']} failed" + (f" (why: {path})" if counts["failed"] else ""))

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer)

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer)

    # ------------------------------------------------------------------ writing
    def write_prediction(self, results: Sequence[ImageResult]) -> dict[str, str]:
        """Write every image of one step's results; return ``{name: final status}``."""
        out: dict[str, str] = {}
        for r in results:
            _check_name(r.name)
            if r.status == SKIPPED:   # finished earlier with the same settings: leave its files untouched
                out[r.name] = r.status
                continue
            out[r.name] = self._write_one(r)
            self.counts["written" if out[r.name] == "ok" else "failed"] += 1
        return out

    def _write_one(self, r: ImageResult) -> str:
        img_dir = self.output_dir / r.name
        img_dir.mkdir(parents=True, exist_ok=True)
        result_path = img_dir / RESULT_FILE
        # Invalidate any previous marker BEFORE touching the images: otherwise a crash while
        # overwriting an earlier complete result would leave an old "ok" marker over a mix of
        # old and new PNGs.
        result_path.unlink(missing_ok=True)
        status = r.status
        # Non-finite samples were marked failed where they were made (``Inpainter``: a diverged image costs only
        # itself and is retried by a re-run); an "ok" result reaches here finite.
        if r.ok and any(t is None for t in (r.samples, r.mean, r.std, r.y_image)):
            status = "an 'ok' result without samples, mean, std or observation (a bug in the step)"
        files: list[str] = []

        def save(name: str, img: torch.Tensor) -> None:
            files.append(name)
            atomic_save_png(img_dir / name, img)

        if status == "ok":
            for j, s in enumerate(r.samples):
                save(f"sample_{j:02d}.png", s)
            if r.keep_mask is not None:   # observed pixels pasted back: the composite is exact there
                for j, s in enumerate(r.shown):
                    save(f"composite_{j:02d}.png", s)
            save("mean.png", r.mean)
            save("std.png", std_image(r.std))
            save("observation.png", r.y_image)
            if r.x is not None:
                save("input.png", r.x)
        else:
            log.warning("VIPaintWriter: image %r failed: %s", r.name, status)
        result: dict[str, Any] = {f"meta_{k}" if k in _RESERVED_KEYS else k: v for k, v in r.meta.items()}
        result.update(name=r.name, status=status, bound=dict(r.bound),
                      num_samples=int(r.samples.shape[0]) if status == "ok" else 0, files=files, std_scale=STD_SCALE)
        atomic_save_json(result_path, result)  # last: marks the image complete
        return status

    # ------------------------------------------------------------------ resume support
    @staticmethod
    def is_complete(output_dir: str | os.PathLike, name: str) -> bool:
        """True iff ``output_dir/name/result.json`` parses, has status "ok" and all its files exist."""
        img_dir = Path(output_dir) / _check_name(name)
        data = _read_result(img_dir)
        if data is None or data.get("status") != "ok":
            return False
        files = data.get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            return False
        return all((img_dir / f).is_file() for f in files)

    @staticmethod
    def completed_names(output_dir: str | os.PathLike) -> set[str]:
        return completed_names(output_dir)


def failed_images(output_dir: str | os.PathLike) -> dict[str, str]:
    """``{name: why}`` for the images under ``output_dir`` whose last attempt failed."""
    root, out = Path(output_dir), {}
    for entry in sorted(root.iterdir()) if root.is_dir() else ():
        data = _read_result(entry) if entry.is_dir() else None
        if data is not None and data.get("status") != "ok":
            out[entry.name] = str(data.get("status"))
    return out


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
    import io

    from PIL import Image

    root = Path(output_dir)
    names = sorted(completed_names(root))[:max_rows]
    if not names:
        return None
    rows, n_shown, composite = [], 0, False
    for name in names:
        files = _read_result(root / name)["files"]
        shown = [f for f in files if f.startswith("composite_")] or [f for f in files if f.startswith("sample_")]
        composite = composite or shown[0].startswith("composite_")
        n_shown = max(n_shown, len(shown))
        extra = ["input.png"] if "input.png" in files else []
        rows.append([Image.open(root / name / f).convert("RGB") for f in ["observation.png", *shown, "mean.png",
                                                                         "std.png", *extra]])
    sheet = titled_sheet(rows, result_titles(n_shown, composite), names)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    path = root / "overview.png"
    atomic_write_bytes(path, buf.getvalue())
    return path

"""What inference writes to TensorBoard, laid out to be read in the browser.

* The fit's bound terms (``fit/elbo``, ``fit/recon``, ``fit/kl_prior``, ``fit/kl_hier``) every ``fit.log_every``
  iterations with the **iteration** as the step, each batch a TensorBoard run of its own
  (``<log_dir>/fit/batch_NNNNN``, named after its first image's index), so the curves overlay per batch instead
  of joining into one line.
* ``predict/seconds_per_image`` and ``predict/elbo`` per batch, the batch's first image index as the step.
* A titled image grid per batch (``figures.titled_sheet``: observation | samples | mean | std | input, the image
  names on the left), the layout of ``overview.png``.

Loggers without a TensorBoard ``experiment`` (or none) are skipped silently.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .figures import result_row, result_titles, titled_sheet
from .results import ImageResult

__all__ = ["FitCurves", "log_scalars", "log_grid"]


def _experiment(logger):
    exp = getattr(logger, "experiment", None) if logger else None
    return exp if hasattr(exp, "add_scalar") else None


class FitCurves:
    """``callback(iteration, per_image_terms)`` for ``fit.fit``: batch means into this batch's own run."""

    def __init__(self, logger, run: str):
        self.dir = os.path.join(logger.log_dir, "fit", run) if _experiment(logger) is not None else None
        self.writer = None

    def __call__(self, iteration: int, terms: dict) -> None:
        if self.dir is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.dir)
        for k, v in terms.items():
            self.writer.add_scalar(f"fit/{k}", float(v.float().mean()), iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def log_scalars(logger, values: dict[str, float], step: int) -> None:
    exp = _experiment(logger)
    if exp is not None:
        for k, v in values.items():
            exp.add_scalar(k, v, step)


def log_grid(logger, results: Sequence[ImageResult], step: int, truth: bool = False, max_rows: int = 16) -> None:
    """One titled grid of the finished ``results`` (at most ``max_rows``), tag ``images/<first>-<last name>``."""
    exp = _experiment(logger)
    rows = [r for r in results if r.ok][:max_rows]
    if exp is None or not rows:
        return
    titles = result_titles(rows[0].samples.shape[0], rows[0].keep_mask is not None)
    if truth:
        titles[-1] = "truth"
    sheet = titled_sheet([result_row(r) for r in rows], titles, [r.name for r in rows])
    exp.add_image(f"images/{rows[0].name}..{rows[-1].name}", np.asarray(sheet), step, dataformats="HWC")

"""What every training module shares: hyperparameters saved as plain YAML, the learning-rate schedule, and the
export at the end of fit.

Hyperparameters: the modules take typed dataclasses (``VIPaintConfig``, ``OperatorConfig``, ...). Lightning writes
``hparams.yaml`` with ``yaml.dump``, which turns a dataclass or a tuple into a ``!!python/...`` tag that
``yaml.safe_load`` (and people) cannot read. Under LightningCLI the saved values are already plain (its
resolved config, which also lets ``load_from_checkpoint`` rebuild the dataclasses through the CLI); a
module built in Python gets the same shape here.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

__all__ = ["plain", "save_plain_hyperparameters", "cosine_warmup", "warmup_cosine_schedule", "export_at_fit_end"]


def plain(value: Any) -> Any:
    """Dataclasses as dicts and tuples as lists, recursively: what ``yaml.safe_load`` reads back."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def save_plain_hyperparameters(module: pl.LightningModule, ignore: list[str]) -> None:
    """``module.save_hyperparameters(ignore=ignore)`` from the caller's ``__init__``, with plain values."""
    module.save_hyperparameters(ignore=ignore, frame=inspect.currentframe().f_back)
    saved = dict(module.hparams)
    if plain(saved) != saved:
        module.save_hyperparameters(plain(saved))


def cosine_warmup(warmup_steps: int, total_steps: int | None, min_lr_ratio: float):
    """The learning-rate factor of step n: linear warm-up, then a cosine decay to ``min_lr_ratio`` at
    ``total_steps`` (constant when ``total_steps`` is None or ``min_lr_ratio`` >= 1)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        if total_steps is None or min_lr_ratio >= 1.0:
            return 1.0
        frac = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    return factor


def warmup_cosine_schedule(module: pl.LightningModule, optimizer: torch.optim.Optimizer) -> dict:
    """``configure_optimizers``' return value: ``optimizer`` under ``cosine_warmup`` of the module's
    ``warmup_steps``/``min_lr_ratio`` hyperparameters, decaying over ``trainer.max_steps`` (constant without it)."""
    trainer, hp = module.trainer, module.hparams
    total = trainer.max_steps if trainer and trainer.max_steps and trainer.max_steps > 0 else None
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_warmup(hp.warmup_steps, total, hp.min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def export_at_fit_end(module: pl.LightningModule, what: str) -> None:
    """``on_fit_end``: rank 0 exports into ``export_dir``, else the run's own ``<log_dir>/export`` (never weights/)."""
    if module.trainer.is_global_zero:
        out = module.export(module.hparams.export_dir or Path(module.trainer.log_dir or ".") / "export")
        print(f"vipaint: {what} exported to {out}")

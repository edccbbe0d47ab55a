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
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

__all__ = ["plain", "save_plain_hyperparameters", "cosine_warmup", "warmup_cosine_schedule", "export_at_fit_end",
           "host_precision", "log_image_grid", "tensorboard_logger", "RunConfig"]


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


def host_precision(precision: Any, accelerator: Any) -> Any:
    """The trainer precision to run: ``precision`` itself, except a bf16 one on a CPU without native bf16
    (``vipaint.prior.native_bf16``: AVX512-BF16 or AMX), which becomes ``"32-true"`` with a warning. The shipped
    configs say ``bf16-mixed`` (measured on an AVX512-BF16 host); on an AVX2-only host (2026-12-04) emulated bf16
    made a training step of the CIFAR-10 latent prior 49 s instead of a few, so the recipe must not depend on it."""
    from ..prior import native_bf16

    if not str(precision).startswith("bf16"):
        return precision
    on_cpu = str(accelerator) == "cpu" or (str(accelerator) == "auto" and not torch.cuda.is_available())
    return "32-true" if on_cpu and not native_bf16(torch.device("cpu")) else precision


def log_image_grid(module: pl.LightningModule, tag: str, images, nrow: int) -> None:
    """One TensorBoard grid of the images ``images()`` returns ((N, C, H, W) in [-1, 1], clamped; ``nrow`` per row)
    at the global step, from rank zero. ``images`` is called only where a logger takes images: no sampling for
    nothing. The training modules' one way to show images (the inference job's titled sheets: ``jobs.figures``)."""
    exp = getattr(module.logger, "experiment", None) if module.logger else None
    if not hasattr(exp, "add_image") or not module.trainer.is_global_zero:
        return
    from torchvision.utils import make_grid

    grid = make_grid(images().float().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1))
    exp.add_image(tag, grid, module.global_step)


def tensorboard_logger(save_dir: str, name: str | None) -> dict:
    """The TensorBoard logger of every run (training and ``infer.py``), as a config entry (class_path/init_args)."""
    return {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": save_dir, "name": name, "default_hp_metric": False}}


@dataclass
class RunConfig:
    """Where a training run keeps what it writes, declared once for every training config (``run:`` in the YAML):
    TensorBoard logs under ``<root>/<name>/version_N/``, checkpoints in ``<root>/<name>/checkpoints/`` every
    ``checkpoint_every`` training steps (``last.ckpt`` kept: ``--ckpt_path last`` resumes), the learning rate
    logged per step. ``name`` None: Lightning's own defaults. A YAML that names its own ``trainer.logger`` or a
    callback of the same class keeps it."""

    name: str | None = None
    root: str = "runs"
    checkpoint_every: int = 500

    def __post_init__(self):
        if self.checkpoint_every < 1:
            raise ValueError(f"run.checkpoint_every must be >= 1 training step, got {self.checkpoint_every}")

    def logger(self) -> dict:
        return tensorboard_logger(self.root, self.name)

    def callbacks(self) -> list[dict]:
        return [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": f"{self.root}/{self.name}/checkpoints", "save_last": True, "save_top_k": 0,
                               "every_n_train_steps": self.checkpoint_every}},
                {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
                 "init_args": {"logging_interval": "step"}}]

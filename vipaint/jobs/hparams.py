"""Saving a LightningModule's constructor arguments as plain YAML values.

The modules take typed dataclasses (``VIPaintConfig``, ``OperatorConfig``, ...). Lightning writes
``hparams.yaml`` with ``yaml.dump``, which turns a dataclass or a tuple into a ``!!python/...`` tag that
``yaml.safe_load`` (and people) cannot read. Under LightningCLI the saved values are already plain (its
resolved config, which also lets ``load_from_checkpoint`` rebuild the dataclasses through the CLI); a
module built in Python gets the same shape here.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, is_dataclass
from typing import Any

import lightning.pytorch as pl

__all__ = ["plain", "save_plain_hyperparameters"]


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

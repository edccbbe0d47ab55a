"""Ending a run's process group, so DDP runs exit cleanly.

Lightning creates the ``torch.distributed`` process group for a DDP run but leaves it alive when
``trainer.fit/predict/test`` returns. At interpreter exit, gloo's worker threads are then destroyed
while still joinable, and the process can abort with ``terminate called without an active
exception`` (exit code -6) after every output has been written; CI saw exactly that. Both CLIs
therefore release the group explicitly once their last collective (``trainer.log_dir`` is one) is done.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch.distributed as dist

__all__ = ["release_process_group"]


@contextmanager
def release_process_group() -> Iterator[None]:
    """Run the body, then destroy the default process group if one exists (also on error)."""
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

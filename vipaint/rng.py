"""Seeded Gaussian/uniform draws on any device from a generator that may live on the CPU.

A CPU ``torch.Generator`` keeps runs reproducible across devices (the same seed gives the same
samples on CPU and GPU); drawing on the CPU and moving costs one copy, negligible next to a U-Net call.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["randn_like", "rand"]


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def rand(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    if generator is None or generator.device == torch.device(device):
        return torch.rand(shape, generator=generator, device=device)
    return torch.rand(shape, generator=generator).to(device)

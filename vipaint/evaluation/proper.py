r"""Proper scoring of posterior samples: do they spread where, and as much as, the truth is uncertain?

Diversity alone rewards any spread; a proper scoring rule is minimised in expectation only by the true predictive
distribution, so it rewards spread exactly where spread is right. For S samples X_1..X_S of one image and its truth
x, restricted to the missing entries (D of them), with ‖v‖ = sqrt(Σ v² / D) (RMS units, so that masks of other
sizes compare):

====================  ===========================================================================================
``energy_score``      ES = 1/S Σ_i ‖X_i − x‖ − 1/(2 S (S−1)) Σ_{i≠j} ‖X_i − X_j‖   (Gneiting & Raftery 2007,
                      the unbiased pair term); lower is better; for D = 1 it is the CRPS
``coverage``          the share of missing entries whose truth lies inside the samples' central interval of the
                      given level (per-entry empirical quantiles): about the level when calibrated, below it when
                      the samples are too narrow, above it when too wide (needs S large enough to resolve it)
====================  ===========================================================================================
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["energy_score", "coverage"]


def _flat(samples: Tensor, x: Tensor, hole: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, S, D) samples, (B, 1, D) truth, (B, 1, D) hole weights from image-shaped inputs."""
    B, S = samples.shape[:2]
    h = hole.expand_as(x).reshape(B, 1, -1).float()
    return samples.reshape(B, S, -1).float(), x.reshape(B, 1, -1).float(), h


def energy_score(samples: Tensor, x: Tensor, hole: Tensor) -> Tensor:
    """ES per image (B,): ``samples`` (B, S, ...), S >= 2, ``x`` (B, ...), ``hole`` broadcastable to ``x``, 1 where
    the entry is scored (module docstring)."""
    if samples.shape[1] < 2:
        raise ValueError("the energy score needs at least 2 samples per image")
    s, t, h = _flat(samples, x, hole)
    d = h.sum(-1).clamp_min(1)                                                   # (B, 1)
    to_truth = (((s - t) ** 2 * h).sum(-1) / d).sqrt().mean(1)                   # (B,)
    S = s.shape[1]
    i, j = torch.triu_indices(S, S, offset=1)
    pairs = (((s[:, i] - s[:, j]) ** 2 * h).sum(-1) / d).sqrt().mean(1)          # mean over i < j = over i ≠ j
    return to_truth - 0.5 * pairs


def coverage(samples: Tensor, x: Tensor, hole: Tensor, level: float) -> Tensor:
    """Share (B,) of scored entries whose truth lies in the samples' central ``level`` interval (module docstring)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s, t, h = _flat(samples, x, hole)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=s.dtype)
    lo, hi = torch.quantile(s, q, dim=1, keepdim=True)                          # (B, 1, D) each
    inside = ((t >= lo) & (t <= hi)).float()
    return (inside * h).sum(-1).squeeze(1) / h.sum(-1).squeeze(1).clamp_min(1)

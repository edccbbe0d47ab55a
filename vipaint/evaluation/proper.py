r"""Proper scoring of posterior samples: do they spread where, and as much as, the truth is uncertain?

Diversity alone rewards any spread; a proper scoring rule is minimised in expectation only by the true predictive
distribution, so it rewards spread exactly where spread is right. For S samples X_1..X_S of one image and its truth
x, restricted to the missing entries (D of them), with ‖v‖ = sqrt(Σ v² / D) (RMS units, so that masks of other
sizes compare):

====================  ===========================================================================================
``energy_score``      ES = 1/S Σ_i ‖X_i − x‖ − 1/(2 S (S−1)) Σ_{i≠j} ‖X_i − X_j‖   (Gneiting & Raftery 2007,
                      the unbiased pair term); lower is better; for D = 1 it is the CRPS
``pit``               the randomised probability integral transform of the truth among the samples,
                      u = (#{X_i < x} + W·(#{X_i = x} + 1)) / (S + 1), W ~ U(0, 1) (Czado, Gneiting & Held 2009),
                      given as the interval [a, b] it is uniform on; u ~ U(0, 1) when the truth is exchangeable
                      with the samples, for any S and with ties (atoms such as the clamp)
``coverage``          the share of missing entries with |u − ½| ≤ level/2, averaged over W in closed form
                      (|[a, b] ∩ central| / (b − a), so no random draw): the level when calibrated, below it
                      when the samples are too narrow, above it when too wide. Entries where the truth and every
                      sample are equal (MNIST's background at the clamp) carry no information and are left out;
                      the selection is symmetric in truth and samples, so it keeps the expectation at the level
====================  ===========================================================================================
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["energy_score", "pit", "coverage"]


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


def pit(samples: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """The interval [a, b], each (B, 1, D), on which the randomised PIT of the truth ``x`` (B, ...) among
    ``samples`` (B, S, ...) is uniform, per entry (module docstring)."""
    s, t = samples.reshape(samples.shape[0], samples.shape[1], -1), x.reshape(x.shape[0], 1, -1)
    below, ties = (s < t).sum(1, keepdim=True), (s == t).sum(1, keepdim=True)
    n = s.shape[1] + 1
    return below.float() / n, (below + ties + 1).float() / n


def coverage(samples: Tensor, x: Tensor, hole: Tensor, level: float) -> Tensor:
    """Share (B,) of the informative scored entries whose PIT lies in the central ``level`` interval, in
    expectation over the tie-breaking (module docstring); NaN for an image without an informative entry."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s, t, h = _flat(samples, x, hole)
    a, b = pit(s, t)
    inside = ((b.clamp(max=(1 + level) / 2) - a.clamp(min=(1 - level) / 2)).clamp_min(0) / (b - a))
    scored = h * (s != t).any(1, keepdim=True)                 # symmetric in (truth, samples): keeps calibration
    return ((inside * scored).sum(-1) / scored.sum(-1)).squeeze(1)

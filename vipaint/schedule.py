r"""Discrete variance-preserving (DDPM) noise schedule and the Gaussian identities built on it.

Notation (one symbol per quantity, used in every module of ``vipaint``; docs/method.md §1). The code
column names what the code calls it: a ``NoiseSchedule`` method, a function, or the local variable name.

===============  ===========================================================  ===============================
symbol           meaning                                                      code
===============  ===========================================================  ===============================
``t``, ``s``     integer timestep indices, 0 <= s < t < T                     ``t``, ``s`` (int or long tensor)
``T``            number of timesteps of the schedule                          ``NoiseSchedule.T``
``ᾱ_t``          cumulative product of (1 - β) up to t (``alphas_cumprod``)   ``alpha_bar(t)``; locals ``ab``,
                                                                              ``ab_t``, ``ab_s``
``α_t``          sqrt(ᾱ_t), scale of the clean signal in z_t                  ``alpha(t)``
``σ_t``          sqrt(1 - ᾱ_t), std of the noise in z_t                       ``sigma(t)``
``α_{t|s}``      α_t / α_s, for s < t                                         ``a_ts`` (``bound.prior_kl``)
``σ²_{t|s}``     σ_t² - α_{t|s}² σ_s² = 1 - ᾱ_t/ᾱ_s: var. of z_t given z_s    ``v_ts`` (``bound.prior_kl``)
``c``            std of the DDIM step z_t -> z_s                              ``ddim_std(ᾱ_t, ᾱ_s, η)``
``η``            DDIM stochasticity: 0 deterministic, 1 DDPM ancestral        ``eta``
===============  ===========================================================  ===============================

Forward process: ``z_t = α_t x_0 + σ_t ε`` and ``z_t | z_s ~ N(α_{t|s} z_s, σ²_{t|s})``.

Timesteps ``t`` are always integer tensors; ``alpha_bar``/``sigma`` are continuous. Coefficients are
computed in float64 from ``alphas_cumprod`` (1 - ᾱ_t is tiny near t = 0, where float32 loses digits)
and cast to the caller's dtype at the last moment.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .rng import randn_like

__all__ = [
    "NoiseSchedule",
    "linear_alphas_cumprod",
    "q_sample",
    "ddim_std",
    "ddim_step_mean",
    "DEFAULT_KEYPOINTS",
    "ddim_sample",
    "tweedie_scale",
]

#: VIPaint's keypoints on the 1000-step DDPM linear schedule, by K (docs/method.md §2.3); K=2 is the default.
DEFAULT_KEYPOINTS = {1: (400,), 2: (550, 400), 4: (550, 500, 450, 400), 6: (650, 600, 550, 500, 450, 400)}


def linear_alphas_cumprod(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """ᾱ_t of the DDPM linear schedule (Ho et al. 2020), float64, shape (T,)."""
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


class NoiseSchedule:
    """ᾱ_t for t = 0..T-1 and the quantities derived from it.

    Args:
        alphas_cumprod: (T,) decreasing values in (0, 1), e.g. a diffusers scheduler's ``alphas_cumprod``.
    """

    def __init__(self, alphas_cumprod: Tensor):
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten().cpu()
        if ab.numel() < 2 or not bool(((ab > 0) & (ab < 1)).all()):
            raise ValueError("alphas_cumprod must hold at least 2 values, all strictly inside (0, 1)")
        if not bool((ab[1:] <= ab[:-1]).all()):
            raise ValueError("alphas_cumprod must be non-increasing in t")
        self.alphas_cumprod = ab
        self._on_device: dict[torch.device, Tensor] = {}   # copies per device: no transfer per call

    @property
    def T(self) -> int:
        return self.alphas_cumprod.numel()

    def _check_t(self, t: Tensor | int) -> Tensor:
        t = torch.as_tensor(t)
        if t.is_floating_point():
            raise TypeError("t must be an integer timestep index; use t_for_alpha_bar() for continuous levels")
        # Range-checked on the host only: checking an accelerator tensor would synchronise the device on every
        # call inside the fit and refinement loops (out-of-range indices still fail there, in the indexing).
        if t.device.type == "cpu" and bool(((t < 0) | (t >= self.T)).any()):
            raise ValueError(f"timestep out of range [0, {self.T - 1}]: {t.tolist()}")
        return t.long()

    def alpha_bar(self, t: Tensor | int) -> Tensor:
        """ᾱ_t in float64, same shape as ``t``."""
        t = self._check_t(t)
        if t.device not in self._on_device:
            self._on_device[t.device] = self.alphas_cumprod.to(t.device)
        return self._on_device[t.device][t]

    def alpha(self, t: Tensor | int) -> Tensor:
        return self.alpha_bar(t).sqrt()

    def sigma(self, t: Tensor | int) -> Tensor:
        return (1.0 - self.alpha_bar(t)).sqrt()

    def t_for_alpha_bar(self, alpha_bar: Tensor | float) -> Tensor:
        """The timestep whose ᾱ_t is nearest to ``alpha_bar`` in log-SNR (the inverse of ``alpha_bar``)."""
        target = torch.as_tensor(alpha_bar, dtype=torch.float64)
        log_snr = torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)
        target_snr = torch.log(target) - torch.log1p(-target)
        return (log_snr[None, :] - target_snr.reshape(-1, 1)).abs().argmin(dim=1).reshape(target.shape)

    def keypoints(self, keypoints: tuple[int, ...] | list[int], reference: "NoiseSchedule | None" = None) -> list[int]:
        """Map keypoints given on ``reference`` (default: the 1000-step DDPM linear schedule) to this schedule.

        A keypoint names a noise level, not an index: it is carried over by matching ᾱ, so that the
        defaults (550, 400) keep their meaning for a schedule of another length or shape.
        Returns strictly decreasing integer timesteps.
        """
        reference = reference or NoiseSchedule(linear_alphas_cumprod())
        ts = [int(reference.t_for_alpha_bar(reference.alpha_bar(int(k))).item()) for k in keypoints]
        mapped = [int(self.t_for_alpha_bar(reference.alpha_bar(k)).item()) for k in ts]
        if any(a <= b for a, b in zip(mapped, mapped[1:])):
            raise ValueError(f"keypoints {list(keypoints)} map to {mapped} on this schedule: they must stay strictly "
                             "decreasing; choose keypoints further apart")
        return mapped

    def strided(self, t_start: int, n_steps: int) -> list[int]:
        """``n_steps`` integer timesteps from ``t_start`` down to 0, evenly spaced, without repeats."""
        n_steps = max(1, min(int(n_steps), int(t_start) + 1))
        ts = torch.linspace(float(t_start), 0.0, n_steps, dtype=torch.float64).round().long()
        return torch.unique_consecutive(ts).tolist()

    def between(self, t_low: int, t_high: int, n_steps: int) -> list[int]:
        """Increasing grid of ``n_steps + 1`` integer timesteps from ``t_low`` to ``t_high`` (both included)."""
        ts = torch.linspace(float(t_low), float(t_high), n_steps + 1, dtype=torch.float64).round().long()
        return torch.unique_consecutive(ts).tolist()


def q_sample(x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    r"""The forward process ``z_t = α_t x_0 + σ_t ε`` (Ho et al. 2020 eq. 4), the one place it is written.

    ``alpha_bar``: ᾱ_t, a tensor broadcastable to ``x0`` (e.g. (B, 1, 1, 1) or a scalar), any float dtype; the
    result has ``x0``'s dtype."""
    return alpha_bar.sqrt().to(x0.dtype) * x0 + (1.0 - alpha_bar).sqrt().to(x0.dtype) * eps


def ddim_std(alpha_bar_t: Tensor, alpha_bar_s: Tensor, eta: float) -> Tensor:
    r"""Std of the DDIM step z_t -> z_s (s < t), Song et al. 2021 eq. (16):

    ``c = η sqrt((1 - ᾱ_s)/(1 - ᾱ_t)) sqrt(1 - ᾱ_t/ᾱ_s)``; η = 1 is the DDPM posterior std.
    """
    return eta * torch.sqrt((1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_s))


def ddim_step_mean(x0_hat: Tensor, eps_hat: Tensor, alpha_bar_s: Tensor, std: Tensor) -> Tensor:
    r"""Mean of the DDIM step to level s: ``sqrt(ᾱ_s) x̂_0 + sqrt(1 - ᾱ_s - c²) ε̂`` (Song et al. 2021 eq. 12).

    Coefficients may be float64 tensors broadcastable to ``x0_hat``; the result has ``x0_hat``'s dtype.
    """
    a = alpha_bar_s.sqrt().to(x0_hat.dtype)
    b = (1.0 - alpha_bar_s - std**2).clamp_min(0.0).sqrt().to(x0_hat.dtype)
    return a * x0_hat + b * eps_hat


def ddim_sample(denoise, schedule: "NoiseSchedule", z: Tensor, steps: int, clip: tuple[float, float] | None = (-1.0, 1.0),
                eta: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    r"""DDIM(η) from noise ``z`` at t = T-1 down to x̂_0 in ``steps`` strided steps: deterministic at η = 0 (the
    default), DDPM-like ancestral at η = 1 (fresh noise of std ``ddim_std`` at each step, from ``generator``).

    ``denoise(z_t, t) -> (x̂_0, ε̂)``. With ``clip`` (diffusers' ``clip_sample``, on by default for DDPM pixel
    models) x̂_0 is clipped to the data range and ε̂ re-derived from it: near t = T, α_t ≈ 0.006 turns any ε̂
    error into a huge x̂_0 error otherwise. Returns the last x̂_0.
    """
    ts = schedule.strided(schedule.T - 1, steps)
    x0 = z
    for j, t in enumerate(ts):
        x0, eps = denoise(z, t)
        if clip is not None:
            ab = schedule.alpha_bar(t).to(z.device, z.dtype)
            x0 = x0.clamp(*clip)
            eps = (z - ab.sqrt() * x0) / (1 - ab).sqrt()
        if j + 1 < len(ts):
            ab_s = schedule.alpha_bar(ts[j + 1])
            std = ddim_std(schedule.alpha_bar(t), ab_s, eta)
            z = ddim_step_mean(x0, eps, ab_s.to(z.device), std.to(z.device))
            if eta > 0:
                z = z + std.to(z.device, z.dtype) * randn_like(z, generator)
    return x0


def tweedie_scale(alpha_bar_t: Tensor) -> Tensor:
    r"""σ_t² / α_t: Tweedie's E[x_0 | z_t] = (z_t + σ_t² ∇ log p(z_t)) / α_t puts this factor on a score,
    and Cov[x_0 | z_t] = σ_t²/α_t · ∂E[x_0 | z_t]/∂z_t (its second-order form)."""
    return (1.0 - alpha_bar_t) / alpha_bar_t.sqrt()

r"""Fitting λ = (μ, logvar, γ) of VIPaint-K by stochastic gradient ascent on the bound (docs/method.md §7).

Adam (betas 0.9, 0.99) with one learning rate per parameter group — μ 0.1, logvar 1e-3, γ 1e-2 —
each decayed by 0.99 every 10 iterations; 50 iterations; ``n_samples`` Monte Carlo samples per image
per iteration. B images are fitted together: their parameters are stacked along dim 0 and every
network call sees all B·n samples at once; the loss is the sum over images of the per-image mean
negative bound, so images do not interact (each image's gradient is its own).

An image whose bound turns NaN/inf is frozen (its loss and gradients are zeroed from then on) and
reported in ``FitResult.failed``; the other images go on. Checking uses device-side masks only: no
host synchronisation inside the loop, except every ``log_every`` iterations for the callback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .bound import BoundTerms, evaluate_bound
from .posterior import HierarchicalPosterior
from .prior import Prior

__all__ = ["FitConfig", "FitResult", "fit"]


@dataclass
class FitConfig:
    """Hyperparameters of the fit. Defaults: the authors' (docs/method.md §7), except β = 1 (the bound itself;
    they use 100, §10.6) and the budget: 25 iterations of 4 Monte Carlo samples instead of 50 of 8 — on the
    project's MNIST prior the plausibility of 100 held-out digits stayed within its noise (0.723 vs 0.735,
    standard error 0.04) at a quarter of the fit's network passes (``bench/NOTES.md``, 2026-11-25).

    Args:
        n_iter: Adam iterations (0 skips the fit: the initial or amortized λ is used as is).
        n_samples: Monte Carlo samples of the bound per image per iteration.
        lr_mu: learning rate of the keypoint means μ.
        lr_logvar: learning rate of the log-variances.
        lr_gamma: learning rate of the bridge weights γ.
        adam_betas: Adam's (β1, β2).
        lr_decay_every: iterations between learning-rate decays.
        lr_decay: factor of each decay.
        beta_prior: weight of the prior term above the top keypoint (1 = the bound itself).
        beta_hier: weight of the KL terms between keypoints (1 = the bound itself).
        n_grid: grid points of the prior chain above the top keypoint.
        log_every: record the bound's terms (history, logger) every this many iterations; each record
            synchronises the device; 0 = only at the end.
    """

    n_iter: int = 25
    n_samples: int = 4
    lr_mu: float = 0.1
    lr_logvar: float = 1e-3
    lr_gamma: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.99)
    lr_decay_every: int = 10
    lr_decay: float = 0.99
    beta_prior: float = 1.0
    beta_hier: float = 1.0
    n_grid: int = 50
    log_every: int = 5

    def __post_init__(self):
        # Each count is checked here, where it is declared, so a bad value fails before any network call.
        for name, low in (("n_iter", 0), ("n_samples", 1), ("lr_decay_every", 1), ("n_grid", 1), ("log_every", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"vipaint.fit.{name} must be >= {low}"
                                 f"{' (0 skips the fit)' if name == 'n_iter' else ''}, got {getattr(self, name)}")
        for name in ("lr_mu", "lr_logvar", "lr_gamma", "lr_decay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"vipaint.fit.{name} must be > 0, got {getattr(self, name)}")
        if self.beta_prior < 0 or self.beta_hier < 0:
            raise ValueError(f"vipaint.fit.beta_prior and beta_hier must be >= 0, got {self.beta_prior}, "
                             f"{self.beta_hier}")


@dataclass
class FitResult:
    history: list[dict[str, list[float]]] = field(default_factory=list)  # per logged iteration: term -> (B,) values
    alive: Tensor | None = None  # (B,) bool
    failed: dict[int, str] = field(default_factory=dict)  # image index -> message
    last: dict[str, Tensor] = field(default_factory=dict)  # final per-image terms (B,)
    nfe: int = 0


def fit(prior: Prior, posterior: HierarchicalPosterior, likelihood, y: Tensor, config: FitConfig = FitConfig(),
        generator: torch.Generator | None = None, callback: Callable[[int, dict[str, Tensor]], None] | None = None,
        on_step: Callable[[int], None] | None = None) -> FitResult:
    """Maximise the bound over ``posterior``'s parameters for the B observations y (B, ...).

    ``callback(iteration, per_image_terms)`` is called every ``config.log_every`` iterations and at the end;
    ``on_step(iteration)`` after every iteration (progress bars; it must not synchronise the device).
    """
    params = posterior.param_groups(config.lr_mu, config.lr_logvar, config.lr_gamma)
    opt = torch.optim.Adam(params, betas=config.adam_betas)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_decay_every, gamma=config.lr_decay)
    n = config.n_samples
    B = y.shape[0]
    alive = torch.ones(B, dtype=torch.bool, device=y.device)
    result = FitResult()
    with torch.enable_grad():
        for it in range(config.n_iter):
            opt.zero_grad(set_to_none=True)
            terms: BoundTerms = evaluate_bound(prior, posterior, likelihood, y, n, config.n_grid, generator)
            per_sample = terms.loss(config.beta_prior, config.beta_hier)
            per_image = per_sample.reshape(B, n).mean(1)
            alive = alive & torch.isfinite(per_image)
            torch.where(alive, per_image, torch.zeros_like(per_image)).sum().backward()
            keep = alive.reshape(-1, *([1] * (posterior.mu.ndim - 1))).to(posterior.mu.dtype)
            for p in (posterior.mu, posterior.logvar, posterior.gamma):
                if p.grad is not None:
                    # A failed image's gradient may be NaN; zero it so its parameters stay put.
                    p.grad = torch.nan_to_num(p.grad) * keep
            opt.step()
            sched.step()
            result.nfe += terms.nfe
            if on_step is not None:
                on_step(it)
            last = it == config.n_iter - 1
            if not (last or (config.log_every and it % config.log_every == 0)):
                continue
            values = terms.per_image(n)   # the only host synchronisation of the loop
            if config.log_every:
                result.history.append({"iteration": it, **{k: v.tolist() for k, v in values.items()}})
            if callback is not None:
                callback(it, values)
            if last:
                result.last = values
    result.alive = alive
    for b in torch.nonzero(~alive).flatten().tolist():
        result.failed[b] = ("the bound became NaN or inf during the fit (check the observation for NaN/inf "
                            "values, sigma_y > 0, and the learning rates)")
    return result

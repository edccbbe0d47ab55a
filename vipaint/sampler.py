r"""VIPaint end to end for a batch of observations: initialise λ, fit, sample q, refine (method.md §11).

This is the function the Lightning module, the benchmarks and the tests call; it holds no state.
Per image it costs ``fit.n_iter · (K + 1)`` network forward+backward passes on ``fit.n_samples``
samples, then ``(K - 1) + refine.n_steps`` passes per drawn sample (the refinement ones with a
backward to z_t).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .bound import evaluate_bound
from .fit import FitConfig, FitResult, fit
from .likelihood import LikelihoodConfig
from .operators import Operator
from .posterior import HierarchicalPosterior
from .prior import Prior
from .refine import RefineConfig, refine
from .schedule import DEFAULT_KEYPOINTS

__all__ = ["VIPaintConfig", "VIPaintOutput", "vipaint", "hand_made_posterior", "resolve_keypoints"]


@dataclass
class VIPaintConfig:
    """Every setting of the algorithm, declared once: the module, the CLI and the benchmarks take this.

    Args:
        keypoints: keypoint timesteps on the 1000-step DDPM linear schedule, carried to the prior's schedule
            by matching ᾱ (``NoiseSchedule.keypoints``); None = the K=2 default (550, 400).
        eta: stochasticity of the prior transitions between keypoints.
        init_gamma: initial bridge weight γ (``HierarchicalPosterior.initialize``).
        init_var_scale: initial variances relative to the prior transitions'.
        init_mean_noise: std of noise added to the initial means.
        n_eval_samples: Monte Carlo samples of the bound reported after the fit (0: not reported); 4 by
            default: reporting should not cost a fit's worth of passes (16 cost as much as 2 fit iterations).
        likelihood: the reconstruction term (``LikelihoodConfig``); the module builds it per batch.
        fit: the Adam fit (``FitConfig``).
        refine: the guided refinement below the lowest keypoint (``RefineConfig``).
    """

    keypoints: tuple[int, ...] | None = None
    eta: float = 1.0
    init_gamma: float = 4.0
    init_var_scale: float = 1.0
    init_mean_noise: float = 0.0
    n_eval_samples: int = 4
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)


def resolve_keypoints(prior: Prior, keypoints: tuple[int, ...] | None) -> list[int]:
    """``VIPaintConfig.keypoints`` (None: the K=2 default) on the prior's schedule."""
    return prior.schedule.keypoints(keypoints or DEFAULT_KEYPOINTS[2])


@dataclass
class VIPaintOutput:
    samples: Tensor            # (B, N, C, H, W) pixels in [-1, 1]
    bound: dict[str, Tensor]   # per-image terms (B,) evaluated after the fit
    fit: FitResult
    posterior: HierarchicalPosterior
    nfe: int                   # network evaluations per image, one sample each (fit, bound estimate, sampling)


class _Stages:
    """Wall seconds per stage into ``timings`` (a dict, or None for no timing). The device is synchronised at
    each boundary only when timing, so that asynchronous GPU work is charged to the stage that queued it."""

    def __init__(self, timings: dict | None, device: torch.device):
        self.timings, self.device = timings, device
        self.t = time.perf_counter() if timings is not None else 0.0

    def mark(self, stage: str) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.t
        self.t = now


def hand_made_posterior(prior: Prior, operator: Operator, y: Tensor, config: VIPaintConfig = VIPaintConfig(),
                        generator: torch.Generator | None = None) -> HierarchicalPosterior:
    """λ initialised from the encoded observation (method.md §2) for the B observations y: the fit's default start."""
    keypoints = resolve_keypoints(prior, config.keypoints)
    posterior = HierarchicalPosterior(keypoints, prior.latent_shape, batch=y.shape[0], eta=config.eta).to(y.device)
    with torch.no_grad():
        z_y = prior.encode(operator.to_image(y))
    posterior.initialize(prior, z_y, gamma=config.init_gamma, var_scale=config.init_var_scale,
                         mean_noise=config.init_mean_noise, generator=generator)
    return posterior


def vipaint(prior: Prior, operator: Operator, likelihood, y: Tensor, n_samples: int = 4,
            config: VIPaintConfig = VIPaintConfig(), generator: torch.Generator | None = None,
            posterior: HierarchicalPosterior | None = None, callback=None, on_step=None,
            on_refine_step=None, timings: dict | None = None) -> VIPaintOutput:
    """Fit VIPaint-K to the B observations y and draw ``n_samples`` refined samples per image.

    ``likelihood`` is built by the caller (``make_likelihood(config.likelihood, ...)``: it holds the batch's
    operator). ``posterior``: parameters to start from (e.g. predicted by the amortized encoder); by default they
    are initialised from the encoded observation. ``config.fit.n_iter = 0`` skips the fit.
    ``callback``/``on_step``: see ``fit.fit``; ``on_refine_step(j, n)``: after each refinement step.
    ``timings``: a dict that receives the wall seconds of each stage (init, fit, bound, chain, refine).
    """
    stages = _Stages(timings, y.device)
    B = y.shape[0]
    if posterior is None:
        posterior = hand_made_posterior(prior, operator, y, config, generator)
    stages.mark("init")
    result = fit(prior, posterior, likelihood, y, config.fit, generator, callback=callback, on_step=on_step)
    stages.mark("fit")
    # NFE per image, counted in single-sample network evaluations (a batched call over n samples counts n).
    nfe = result.nfe * config.fit.n_samples
    with torch.no_grad():
        bound = {}
        if config.n_eval_samples > 0:
            terms = evaluate_bound(prior, posterior, likelihood, y, config.n_eval_samples, config.fit.n_grid, generator)
            bound = terms.per_image(config.n_eval_samples)
            nfe += terms.nfe * config.n_eval_samples
        stages.mark("bound")
        z_top = posterior.sample_top(prior, n_samples, generator)
        chain = posterior.chain(prior, z_top, n_samples, generator)
        stages.mark("chain")
    x, nfe_refine = refine(prior, likelihood, y, chain.z_bottom, posterior.keypoints[-1], config.refine, generator,
                            progress=on_refine_step)
    stages.mark("refine")
    nfe += (chain.nfe + nfe_refine) * n_samples
    samples = x.reshape(B, n_samples, *x.shape[1:])
    return VIPaintOutput(samples=samples, bound=bound, fit=result, posterior=posterior, nfe=nfe)

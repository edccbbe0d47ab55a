r"""VIPaint end to end for a batch of observations: initialise λ, fit, sample q, refine (method.md §11).

This is the function the Lightning module, the benchmarks and the tests call; it holds no state.
Per image it costs ``fit.n_iter · (K + 1)`` network forward+backward passes on ``fit.n_samples``
samples, then ``(K - 1) + refine.n_steps`` passes per drawn sample (the refinement ones with a
backward to z_t).
"""
from __future__ import annotations

import time
from typing import Protocol
from dataclasses import dataclass, field, replace

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

__all__ = ["InitConfig", "VIPaintConfig", "VIPaintOutput", "Initialiser", "vipaint", "hand_made_posterior",
           "resolve_keypoints", "tuned_for", "TUNABLE", "Stages"]


@dataclass
class InitConfig:
    """The hand-made initialisation of λ from the encoded observation (``HierarchicalPosterior.initialize``);
    the amortized encoder predicts residuals to it, so it shares these settings.

    Args:
        gamma: initial bridge weight γ.
        var_scale: initial variances relative to the prior transitions' (> 0).
        mean_noise: std of noise added to the initial means (>= 0).
    """

    gamma: float = 4.0
    var_scale: float = 1.0
    mean_noise: float = 0.0

    def __post_init__(self):
        if not self.var_scale > 0:
            raise ValueError(f"vipaint.init.var_scale must be > 0, got {self.var_scale}")
        if self.mean_noise < 0:
            raise ValueError(f"vipaint.init.mean_noise must be >= 0, got {self.mean_noise}")


@dataclass
class VIPaintConfig:
    """Every setting of the algorithm, declared once: the module, the CLI and the benchmarks take this.

    Args:
        keypoints: nominal keypoint levels on the 1000-step DDPM linear schedule, strictly decreasing in
            [1, 999]; ``resolve_keypoints`` carries them to the prior's own timestep indices by matching ᾱ
            (``NoiseSchedule.keypoints``), once per run. Default: the K=2 set (550, 400).
        eta: stochasticity of the prior transitions between keypoints, in [0, 1].
        init: the hand-made initialisation (``InitConfig``).
        n_eval_samples: Monte Carlo samples of the bound reported after the fit (0: not reported); 4 by
            default: reporting should not cost a fit's worth of passes (16 cost as much as 2 fit iterations).
        likelihood: the reconstruction term (``LikelihoodConfig``); the module builds it per batch.
        fit: the Adam fit (``FitConfig``).
        refine: the guided refinement below the lowest keypoint (``RefineConfig``).
    """

    keypoints: tuple[int, ...] = DEFAULT_KEYPOINTS[2]
    eta: float = 1.0
    init: InitConfig = field(default_factory=InitConfig)
    n_eval_samples: int = 4
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)

    def __post_init__(self):
        self.keypoints = tuple(int(k) for k in self.keypoints)
        k = self.keypoints
        if not k:
            raise ValueError("vipaint.keypoints needs at least one level, e.g. [550, 400]")
        if not all(1 <= t <= 999 for t in k):
            raise ValueError(f"vipaint.keypoints must lie in [1, 999] (levels of the 1000-step schedule), got {list(k)}")
        if any(a <= b for a, b in zip(k, k[1:])):
            raise ValueError(f"vipaint.keypoints must be strictly decreasing (the top keypoint first, as in "
                             f"[550, 400]), got {list(k)}: try {sorted(set(k), reverse=True)}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"vipaint.eta must be in [0, 1], got {self.eta}")
        if self.n_eval_samples < 0:
            raise ValueError(f"vipaint.n_eval_samples must be >= 0 (0: the bound is not reported), got "
                             f"{self.n_eval_samples}")


#: Settings a prior may ship tuned values for (``Prior.tuned``, its folder's ``vipaint.json``), with the value
#: used where it ships none. A config sets them to None to mean "the prior's".
TUNABLE = {"refine.scale": RefineConfig.DEFAULT_SCALE}


def tuned_for(config: VIPaintConfig, tuned: dict[str, float]) -> VIPaintConfig:
    """``config`` with each tunable setting left None filled in: the prior's tuned value, else ``TUNABLE``'s."""
    unknown = set(tuned) - set(TUNABLE)
    if unknown:
        raise ValueError(f"unknown tuned settings {sorted(unknown)}; tunable: {sorted(TUNABLE)}")
    out = config
    for key, fallback in TUNABLE.items():
        group, name = key.split(".")
        if getattr(getattr(out, group), name) is None:
            out = replace(out, **{group: replace(getattr(out, group), **{name: tuned.get(key, fallback)})})
    return out


def resolve_keypoints(prior: Prior, config: VIPaintConfig) -> list[int]:
    """``config.keypoints`` (nominal 1000-step levels) as timestep indices of the prior's schedule."""
    return prior.schedule.keypoints(config.keypoints)


@dataclass
class VIPaintOutput:
    samples: Tensor            # (B, N, C, H, W) pixels in [-1, 1]
    bound: dict[str, Tensor]   # per-image terms (B,) evaluated after the fit
    fit: FitResult
    posterior: HierarchicalPosterior
    nfe: int                   # network evaluations per image, one sample each (fit, bound estimate, sampling)


class Stages:
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


class Initialiser(Protocol):
    """Where the fit starts: λ for the B observations y at the resolved keypoints, as a posterior whose
    parameters are leaves. ``hand_made_posterior`` is one; ``amortized.encoder.AmortizedInit`` another."""

    def __call__(self, prior: Prior, operator: Operator, y: Tensor, keypoints: list[int], config: VIPaintConfig,
                 generator: torch.Generator | None = None) -> HierarchicalPosterior: ...


def hand_made_posterior(prior: Prior, operator: Operator, y: Tensor, keypoints: list[int],
                        config: VIPaintConfig = VIPaintConfig(),
                        generator: torch.Generator | None = None) -> HierarchicalPosterior:
    """λ initialised from the encoded observation (docs/method.md §4) for the B observations y: the fit's
    default start (an ``Initialiser``)."""
    posterior = HierarchicalPosterior(keypoints, prior.latent_shape, batch=y.shape[0], eta=config.eta).to(y.device)
    with torch.no_grad():
        z_y = prior.encode(operator.to_image(y))
    init = config.init
    posterior.initialize(prior, z_y, gamma=init.gamma, var_scale=init.var_scale, mean_noise=init.mean_noise,
                         generator=generator)
    return posterior


def vipaint(prior: Prior, operator: Operator, likelihood, y: Tensor, n_samples: int = 4,
            config: VIPaintConfig = VIPaintConfig(), generator: torch.Generator | None = None,
            posterior: HierarchicalPosterior | None = None, callback=None, on_step=None,
            on_refine_step=None, timings: dict | None = None, refine_trace=None) -> VIPaintOutput:
    """Fit VIPaint-K to the B observations y and draw ``n_samples`` refined samples per image.

    ``likelihood`` is built by the caller (``make_likelihood(config.likelihood, ...)``: it holds the batch's
    operator). ``posterior``: parameters to start from (an ``Initialiser``'s output, e.g. the amortized
    encoder's); by default ``hand_made_posterior`` at the config's keypoints. ``config.fit.n_iter = 0`` skips
    the fit. Tunable settings left None (``TUNABLE``) read as their fallbacks (``RefineConfig.zeta``):
    ``tuned_for`` fills in a prior's own beforehand (``Inpainter`` does, once).
    ``callback``/``on_step``: see ``fit.fit``; ``on_refine_step(j, n)``: after each refinement step;
    ``refine_trace``: ``refine.refine``'s ``trace``.
    ``timings``: a dict that receives the wall seconds of each stage (init, fit, bound, chain, refine).
    """
    stages = Stages(timings, y.device)
    B = y.shape[0]
    if posterior is None:
        posterior = hand_made_posterior(prior, operator, y, resolve_keypoints(prior, config), config, generator)
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
                            progress=on_refine_step, trace=refine_trace)
    stages.mark("refine")
    nfe += (chain.nfe + nfe_refine) * n_samples
    samples = x.reshape(B, n_samples, *x.shape[1:])
    return VIPaintOutput(samples=samples, bound=bound, fit=result, posterior=posterior, nfe=nfe)

r"""Baselines in the same harness: DPS, RED-diff and RePaint on any ``Prior`` and ``Operator`` (docs/method.md §12).

Each is a function ``(prior, operator, y, n_samples, config, generator) -> (samples (B, N, C, H, W), nfe)``
drawing N samples per observation in one batch of B·N (image-major, like VIPaint).

==========  ===========================================================================  ==================
method      step (notation of ``schedule.py``; r = y - A D(x̂_0(z_t)))                   NFE per sample
==========  ===========================================================================  ==================
DPS         DDPM ancestral step from x̂_0(z_t), then z_{t-1} -= ζ ∇_{z_t} ||r||           ``n_steps`` fwd+bwd
            (Chung et al. ICLR 2023, Alg. 1; ζ = 0.5 is their inpainting config, with
            the norm (not squared) as in their code: ζ_i = ζ/||r|| on ∇||r||²/2)         (default 1000)
RED-diff    Adam on μ = x_0: ||y - A D(μ)||²/2 on observed entries, plus the               ``n_steps`` fwd
            regulariser λ σ_t/α_t ⟨sg(ε̂(α_t μ + σ_t ε, t) - ε), μ⟩, t descending          (default 100)
            (Mardani et al. 2023, eq. 9 and their code: lr 0.25, λ 0.25)
PSLD        DDIM(η) step from x̂_0(z_t), then z_{t-1} -= ∇_{z_t} [ω ||r|| + γ ||E(Aᵀy +       ``n_steps`` fwd+bwd
            (I − AᵀA) D(x̂_0)) − x̂_0||]: latent DPS plus the "gluing" term that asks x̂_0    + 1 encoder call
            to be a fixed point of decode-paste-encode (Rout et al. NeurIPS 2023, their      (default 1000)
            ``psld.py``: ω = 1, γ = 0.1, η = 0; latent priors)
RePaint     DDPM step for the hole, the forward-noised y pasted on observed pixels, and     2,410 fwd for
            resampling jumps of length 10, 10 times, on a 250-level grid                   250/10/10
            (Lugmayr et al. CVPR 2022; inpainting with pixel priors only)
mean_fill   the hole filled with the mean colour of the observed pixels (inpainting; the   0
            floor any method must beat); other operators: the observation as an image
conditional DDIM(η) with a network trained for the task, ε̂(z_t, t | y, m) (a conditional      ``n_steps`` fwd
            DDPM, ``priors.conditional``; Saharia et al. 2022's Palette in spirit): not     (default 50)
            training-free, so inpainting only, on the mask families it was trained on
==========  ===========================================================================  ==================
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .rng import randn_like
from .operators import Inpainting, Operator, UnsupportedOperator, repeat_observation
from .prior import Prior
from .schedule import ddim_sample, ddim_std, ddim_step_mean, q_sample

__all__ = ["DPSConfig", "PSLDConfig", "REDDiffConfig", "RePaintConfig", "MeanFillConfig", "ConditionalConfig",
           "BaselinesConfig", "dps", "psld", "red_diff", "repaint", "mean_fill", "conditional", "repaint_schedule",
           "refusal", "BASELINES"]


def _finish(prior: Prior, x: Tensor, B: int, n: int) -> Tensor:
    if prior.output_range is not None:
        x = x.clamp(*prior.output_range)
    return x.reshape(B, n, *x.shape[1:])


@dataclass
class DPSConfig:
    """DPS (Chung et al. 2023).

    Args:
        n_steps: reverse steps on a strided grid from T-1 to 0.
        scale: step size ζ on ∇||y - A x̂_0|| (0.5: their inpainting config).
        decoder_error: return D(z_0) + E[e | z_0, y] where a latent prior ships its autoencoder's error field, as
            VIPaint does (docs/method.md §5.4); off by default: the published method returns D(z_0).
    """

    n_steps: int = 1000
    scale: float = 0.5
    decoder_error: bool = False


def _guided_chain(prior: Prior, operator: Operator, y: Tensor, n: int, n_steps: int, eta: float, loss,
                  generator: torch.Generator | None, decoder_error: bool = False) -> tuple[Tensor, int]:
    """The loop DPS and PSLD share: at each t, x̂_0 and ε̂ from one forward, a DDIM(η) step to the next level,
    then z_s -= ∇_{z_t} loss(yy, op, x̂_0, D(x̂_0)) (per sample, summed). Returns (decoded samples (B·n, ...), nfe):
    D(x̂_0) at t = 0, plus E[e | z_0, y] with ``decoder_error`` where the prior has a field (§5.4)."""
    yy, op = repeat_observation(y, operator, n)
    sched = prior.schedule
    ts = sched.strided(sched.T - 1, n_steps)
    z = randn_like(torch.empty((y.shape[0] * n, *prior.latent_shape), device=y.device), generator)
    x0 = None
    for j, t in enumerate(ts):
        with torch.enable_grad():
            zr = z.detach().requires_grad_(True)
            x0_hat, eps_hat = prior.denoise(zr, t)
            (g,) = torch.autograd.grad(loss(yy, op, x0_hat, prior.decode(x0_hat)).sum(), zr)
        x0 = x0_hat.detach()
        if j + 1 == len(ts):
            break
        ab_t, ab_s = sched.alpha_bar(t), sched.alpha_bar(ts[j + 1])
        c = ddim_std(ab_t, ab_s, eta)
        z = ddim_step_mean(x0, eps_hat.detach(), ab_s, c)
        if eta > 0:
            z = z + c.to(z.dtype) * randn_like(z, generator)
        z = z - g
    with torch.no_grad():
        x = prior.decode(x0)
        if decoder_error and prior.decoder_error is not None:
            x = x + prior.decoder_error.conditional_mean(yy, x, op)
        return x, len(ts)


def dps(prior: Prior, operator: Operator, y: Tensor, n_samples: int = 4, config: DPSConfig = DPSConfig(),
        generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """Diffusion posterior sampling. Each step: one forward and one backward through the network."""
    def loss(yy, op, x0_hat, x):
        return config.scale * op.residual_norm(yy, x)

    x, nfe = _guided_chain(prior, operator, y, n_samples, config.n_steps, 1.0, loss, generator, config.decoder_error)
    return _finish(prior, x, y.shape[0], n_samples), nfe


@dataclass
class PSLDConfig:
    """PSLD (Rout et al. 2023), their defaults (``scripts/inverse.py``).

    Args:
        n_steps: DDIM steps on a strided grid from T-1 to 0.
        omega: weight ω on ∇||y - A D(x̂_0)|| (the DPS term).
        gamma: weight γ on ∇||E(Aᵀy + (I - AᵀA) D(x̂_0)) - x̂_0|| (the gluing term).
        eta: DDIM stochasticity (their ``--ddim_eta`` 0).
        decoder_error: as ``DPSConfig.decoder_error`` (off: the published method).
    """

    n_steps: int = 1000
    omega: float = 1.0
    gamma: float = 0.1
    eta: float = 0.0
    decoder_error: bool = False

    def __post_init__(self):
        if self.n_steps < 1 or self.omega < 0 or self.gamma < 0 or not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"psld needs n_steps >= 1, omega >= 0, gamma >= 0 and eta in [0, 1], got {self}")


def psld(prior: Prior, operator: Operator, y: Tensor, n_samples: int = 4, config: PSLDConfig = PSLDConfig(),
         generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """Posterior sampling with latent diffusion: latent DPS plus the gluing term (module table). The encoder's
    mean is used for E, as ``Prior.encode`` does. Each step: one forward and one backward through the network, the
    decoder and the encoder."""
    if not prior.is_latent:
        raise ValueError("PSLD is defined for latent priors (its gluing term re-encodes the pasted image); use dps")

    def loss(yy, op, x0_hat, x):
        pasted = op.adjoint(yy) + x - op.adjoint(op.forward(x))       # Aᵀy + (I − AᵀA) D(x̂_0)
        glue = (prior.encode(pasted) - x0_hat).flatten(1).norm(dim=1)
        return config.omega * op.residual_norm(yy, x) + config.gamma * glue

    x, nfe = _guided_chain(prior, operator, y, n_samples, config.n_steps, config.eta, loss, generator,
                           config.decoder_error)
    return _finish(prior, x, y.shape[0], n_samples), nfe


@dataclass
class REDDiffConfig:
    """RED-diff (Mardani et al. 2023).

    Args:
        n_steps: Adam steps, t descending from T-1 to 0.
        lr: Adam learning rate on μ = x_0.
        lam: weight λ of the denoiser regulariser (scaled by σ_t/α_t).
        obs_weight: weight of the observation term.
    """

    n_steps: int = 100
    lr: float = 0.25
    lam: float = 0.25
    obs_weight: float = 1.0


def red_diff(prior: Prior, operator: Operator, y: Tensor, n_samples: int = 4, config: REDDiffConfig = REDDiffConfig(),
             generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """RED-diff: x_0 = μ fitted by Adam; the denoiser's residual is detached (no backward through the network).

    Loss per sample (their code, ``algos/reddiff.py``): obs_weight·||y - A D(μ)||²/2 (mean over entries)
    + λ_t ⟨ε̂ - ε, μ⟩ (mean), λ_t = λ σ_t/α_t, t descending from T-1 to 0 over ``n_steps``.
    μ starts from Aᵀ y (the observation as an image) as in their inpainting runs; samples differ by ε.
    """
    B, n = y.shape[0], n_samples
    yy, op = repeat_observation(y, operator, n)
    sched = prior.schedule
    with torch.no_grad():
        mu0 = prior.encode(op.to_image(yy))
    mu = mu0.clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=config.lr, betas=(0.9, 0.99))
    ts = sched.strided(sched.T - 1, config.n_steps)
    w = op.valid(yy).expand_as(yy)
    for t in ts:
        ab = sched.alpha_bar(t)
        eps = randn_like(mu, generator)
        with torch.no_grad():
            _, eps_hat = prior.denoise(q_sample(mu, eps, ab), t)
        with torch.enable_grad():
            opt.zero_grad(set_to_none=True)
            obs = ((w * (yy - op.forward(prior.decode(mu)))) ** 2).flatten(1).mean(1) / 2
            reg = ((eps_hat - eps) * mu).flatten(1).mean(1)
            lam_t = float(config.lam * ((1 - ab) / ab).sqrt())
            (config.obs_weight * obs + lam_t * reg).sum().backward()
        opt.step()
    with torch.no_grad():
        return _finish(prior, prior.decode(mu.detach()), B, n), len(ts)


@dataclass
class RePaintConfig:
    """RePaint (Lugmayr et al. 2022; inpainting with pixel priors only).

    Args:
        n_levels: noise levels of the grid.
        jump_length: levels of each jump back up.
        jump_n_sample: times each jump is taken.
    """

    n_levels: int = 250
    jump_length: int = 10
    jump_n_sample: int = 10


def repaint_schedule(n_levels: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's level sequence (``get_schedule_jump``): levels from n_levels-1 down to -1 (clean) with jumps back up."""
    jumps = {j: jump_n_sample - 1 for j in range(0, n_levels - jump_length, jump_length)}
    t, ts = n_levels, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    ts.append(-1)
    return ts


def repaint(prior: Prior, operator: Operator, y: Tensor, n_samples: int = 4, config: RePaintConfig = RePaintConfig(),
            generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """RePaint: unconditional DDPM steps with the observed pixels replaced by y noised to the same level."""
    if why := refusal("repaint", prior, operator.name):
        raise UnsupportedOperator(why)
    B, n = y.shape[0], n_samples
    yy, op = repeat_observation(y, operator, n)
    m = op.valid(yy)
    sched = prior.schedule
    grid = list(reversed(sched.strided(sched.T - 1, config.n_levels)))    # grid[level] = timestep, increasing
    levels = repaint_schedule(len(grid), config.jump_length, config.jump_n_sample)
    z = randn_like(yy, generator)
    nfe, x0 = 0, yy
    with torch.no_grad():
        for cur, nxt in zip(levels[:-1], levels[1:]):
            t = grid[cur]
            if nxt < cur:   # reverse step (to the clean level when nxt = -1)
                x0, eps_hat = prior.denoise(z, t)
                nfe += 1
                if nxt < 0:
                    break
                ab_t, ab_s = sched.alpha_bar(t), sched.alpha_bar(grid[nxt])
                c = ddim_std(ab_t, ab_s, 1.0)
                unknown = ddim_step_mean(x0, eps_hat, ab_s, c) + c.to(z.dtype) * randn_like(z, generator)
                known = ab_s.sqrt().to(z.dtype) * yy + (1 - ab_s).sqrt().to(z.dtype) * randn_like(z, generator)
                z = m * known + (1 - m) * unknown
            else:           # jump back up: forward-noise from level cur to nxt
                ratio = sched.alpha_bar(grid[nxt]) / sched.alpha_bar(t)
                z = ratio.sqrt().to(z.dtype) * z + (1 - ratio).sqrt().to(z.dtype) * randn_like(z, generator)
        x = m * yy + (1 - m) * x0
    return _finish(prior, x, B, n), nfe


@dataclass
class MeanFillConfig:
    """The mean-colour fill.

    Args:
        per_channel: each channel's own mean (a colour, default) or one mean over all channels (a grey level).
    """

    per_channel: bool = True


def mean_fill(prior: Prior, operator: Operator, y: Tensor, n_samples: int = 4, config: MeanFillConfig = MeanFillConfig(),
              generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """The floor: each channel's missing pixels set to the mean of its observed ones (inpainting); for other
    operators the observation as an image (``Operator.to_image``). No network evaluation; the n samples agree."""
    image = operator.to_image(y)
    if isinstance(operator, Inpainting):
        m = operator.valid(y)
        mean = ((m * y).flatten(2).sum(2) / m.flatten(2).sum(2).clamp_min(1))[:, :, None, None]
        if not config.per_channel:
            mean = mean.mean(1, keepdim=True)
        image = m * y + (1 - m) * mean
    return _finish(prior, image.unsqueeze(1).expand(-1, n_samples, *image.shape[1:]).reshape(-1, *image.shape[1:]),
                   y.shape[0], n_samples), 0


@dataclass
class ConditionalConfig:
    """A conditional DDPM trained for inpainting (``priors.conditional``).

    Args:
        weights: the model: a shipped name ("vipaint-mnist-inpaint"), a local folder or a hub id.
        n_steps: DDIM steps on a strided grid from T-1 to 0.
        eta: DDIM stochasticity. 0 (DDIM; the samples differ by their starting noise): with the exact denoiser of a
            Gaussian it draws the posterior's moments on 100 steps, where ancestral steps (1) lose 12% of the
            variance (``tests/test_conditional.py``).
    """

    weights: str = "vipaint-mnist-inpaint"
    n_steps: int = 50
    eta: float = 0.0

    def __post_init__(self):
        if self.n_steps < 1 or not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"conditional needs n_steps >= 1 and eta in [0, 1], got {self}")


def conditional(prior: Prior | None, operator: Operator, y: Tensor, n_samples: int = 4,
                config: ConditionalConfig = ConditionalConfig(), generator: torch.Generator | None = None,
                model=None) -> tuple[Tensor, int]:
    """Samples of the conditional model ``model`` (a ``priors.conditional.ConditionalDenoiser``: ε̂(z_t, t, cond),
    with its own ``schedule`` and ``output_range``) given cond = (y, m); ``prior`` is not used (the model is its
    own prior). ``Inpainter`` loads ``model`` from ``config.weights``. Each step: one forward."""
    if why := refusal("conditional", prior, operator.name):
        raise UnsupportedOperator(why)
    if model is None:
        raise ValueError("conditional needs its network (model=): Inpainter(method='conditional') loads it")
    yy, op = repeat_observation(y, operator, n_samples)
    cond = torch.cat([op.adjoint(yy), op.valid(yy)], 1)
    sched = model.schedule

    def denoise(z, t):
        ab = sched.alpha_bar(t).to(z.device, z.dtype)
        eps = model(z, t, cond)
        return (z - (1 - ab).sqrt() * eps) / ab.sqrt(), eps

    with torch.no_grad():
        x0 = ddim_sample(denoise, sched, randn_like(yy, generator), config.n_steps, clip=model.output_range,
                         eta=config.eta, generator=generator)
    return x0.reshape(y.shape[0], n_samples, *x0.shape[1:]), len(sched.strided(sched.T - 1, config.n_steps))


def refusal(method: str, prior: Prior | None, operator: str) -> str | None:
    """Why baseline ``method`` cannot take the operator named ``operator`` on ``prior``, or None: RePaint pastes the
    noised observed pixels into x_t (inpainting, pixel priors); the conditional model saw inpainting only."""
    if method == "repaint" and (operator != "inpainting" or (prior is not None and prior.is_latent)):
        return "RePaint is defined for inpainting with a pixel prior"
    if method == "conditional" and operator != "inpainting":
        return ("the conditional model was trained for inpainting only: it cannot take this operator without "
                "retraining; use vipaint or dps")
    return None


BASELINES = {"dps": (dps, DPSConfig), "psld": (psld, PSLDConfig), "red_diff": (red_diff, REDDiffConfig),
             "repaint": (repaint, RePaintConfig), "mean_fill": (mean_fill, MeanFillConfig),
             "conditional": (conditional, ConditionalConfig)}


@dataclass
class BaselinesConfig:
    """The settings of every baseline, one field per method (named as in ``BASELINES``); a run uses the
    one its ``method`` names, so switching methods needs no other change.

    Args:
        dps: settings of "dps".
        psld: settings of "psld".
        red_diff: settings of "red_diff".
        repaint: settings of "repaint".
        mean_fill: settings of "mean_fill" (none).
        conditional: settings of "conditional" (the model trained for the task).
    """

    dps: DPSConfig = field(default_factory=DPSConfig)
    psld: PSLDConfig = field(default_factory=PSLDConfig)
    red_diff: REDDiffConfig = field(default_factory=REDDiffConfig)
    repaint: RePaintConfig = field(default_factory=RePaintConfig)
    mean_fill: MeanFillConfig = field(default_factory=MeanFillConfig)
    conditional: ConditionalConfig = field(default_factory=ConditionalConfig)

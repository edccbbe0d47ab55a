"""The one entry point: a configured solver (``Inpainter``) and a single call (``inpaint``).

    import vipaint
    out = vipaint.inpaint(images, keep_masks, prior="vipaint-mnist", samples=4)   # images (B, C, H, W) in [-1, 1]
    out.samples, out.mean, out.std, out.bound["elbo"]                            # keep_masks (B, 1, H, W), 1 = observed

The Lightning module (``jobs.module``), every benchmark and the Python API call ``Inpainter`` underneath, so the
prior is loaded, the settings are resolved (the prior's tuned values filled in, the keypoints carried to its
schedule), the initialiser chosen and the likelihood built in exactly one place, and network evaluations are
counted in one place (``Restoration.nfe``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ..baselines import BASELINES, BaselinesConfig, refusal
from ..likelihood import make_likelihood
from ..operators import OperatorConfig, UnsupportedOperator, make_operator
from ..pipeline import Stages, VIPaintConfig, hand_made_posterior, resolve_keypoints, tuned_for, vipaint
from ..prior import Prior
from ..priors.external import load_prior
from ..priors.shipped import DEFAULT_PRIOR

__all__ = ["Inpainter", "Restoration", "inpaint", "METHODS", "INITS"]

log = logging.getLogger(__name__)
METHODS = ("vipaint", *BASELINES)
#: Where the fit starts (``Inpainter``'s ``init``).
INITS = ("auto", "hand", "amortized")


@dataclass
class Restoration:
    """What one call returns for B images (tensors on the input's device, float32).

    samples: (B, N, C, H, W) pixels in [-1, 1]; mean, std: (B, C, H, W) over the N samples;
    y_image: (B, C, H, W) the observation as an image (missing pixels grey); bound: per-image terms (B,) of the
    variational bound after the fit (VIPaint with ``n_eval_samples`` > 0; else empty); failed: image index ->
    why its fit failed (its samples are not to be used); nfe: single-sample network evaluations per image;
    seconds: wall seconds per image.
    """

    samples: Tensor
    mean: Tensor
    std: Tensor
    y_image: Tensor
    bound: dict[str, Tensor]
    nfe: int
    seconds: float
    failed: dict[int, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Inpainter:
    """A prior and every setting, resolved once; call it on batches: ``inpainter(x, keep_mask, generator)``.

    Args:
        prior: a ``Prior``, or a shipped name / local diffusers folder / hub id (``priors.external.load_prior``).
        method: "vipaint" or a baseline in the same harness (``baselines.BASELINES``).
        vipaint: VIPaint's settings (``pipeline.VIPaintConfig``); settings left None take the prior's tuned values.
        baselines: each baseline's settings (only ``method``'s is used).
        operator: the observation model (``operators.OperatorConfig``).
        n_samples: posterior samples per image.
        init: "hand" (λ from the encoded observation), "amortized" (an encoder's λ; fails without one) or "auto"
            (the encoder where one fits: ``encoder``, or the one shipped with the prior at the same keypoints).
        encoder: an encoder folder or ``AmortizedModule`` checkpoint for ``init`` "amortized"/"auto".
    """

    def __init__(self, prior: Prior | str = DEFAULT_PRIOR, method: str = "vipaint",
                 vipaint: VIPaintConfig = VIPaintConfig(), baselines: BaselinesConfig = BaselinesConfig(),
                 operator: OperatorConfig = OperatorConfig(), n_samples: int = 4, init: str = "auto",
                 encoder: str | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if vipaint.likelihood.kind == "l1_lpips" and operator.name != "inpainting":
            raise ValueError("likelihood 'l1_lpips' is for inpainting only; use 'gaussian'")
        self.prior = load_prior(prior) if isinstance(prior, str) else prior
        self.method, self.operator, self.n_samples = method, operator, n_samples
        self.config = tuned_for(vipaint, self.prior.tuned)
        self.keypoints = resolve_keypoints(self.prior, self.config)
        if method != "vipaint" and (why := refusal(method, self.prior, operator.name)):
            raise UnsupportedOperator(why)    # at once, not on every batch
        self.baseline = None if method == "vipaint" else (BASELINES[method][0], getattr(baselines, method))
        self.model = self._conditional_model() if method == "conditional" else None
        self.encoder_path = encoder
        self.encoder = self._encoder(init, encoder) if method == "vipaint" else None
        self.init = "hand" if self.encoder is None else "amortized"
        self._lpips = None

    def _conditional_model(self):
        """The network of method "conditional", loaded once from its ``weights`` and bound to the sampler."""
        from functools import partial

        from ..priors.conditional import load_conditional

        fn, cfg = self.baseline
        model = load_conditional(cfg.weights)
        if model.image_shape != tuple(self.prior.image_shape):
            raise ValueError(f"the conditional model '{cfg.weights}' makes {model.image_shape} images, the prior "
                             f"{tuple(self.prior.image_shape)}: use the prior it was trained beside")
        self.baseline = (partial(fn, model=model), cfg)
        return model

    def _encoder(self, init: str, path: str | None):
        if init == "hand":
            return None
        from amortized.encoder import encoder_for, shipped_encoder_for

        if init == "auto" and path is None:
            shipped = shipped_encoder_for(self.prior)
            if not shipped:
                return None
            try:   # the shipped encoder, if it was trained for these keypoints and this operator
                return encoder_for(self.prior, self.keypoints, shipped, self.operator.name)
            except ValueError as err:
                log.info("init 'auto': the hand-made λ, since the shipped encoder does not fit this run (%s)", err)
                return None
        return encoder_for(self.prior, self.keypoints, path, self.operator.name)

    def to(self, device: torch.device | str) -> "Inpainter":
        self.prior.to(device)
        for module in (self.encoder, self.model):
            if module is not None:
                module.to(device)
        return self

    @property
    def n_progress_steps(self) -> int:
        """Progress-bar ticks of one call (fit iterations + refinement steps; 0 for baselines)."""
        if self.baseline is not None:
            return 0
        return self.config.fit.n_iter + len(self.prior.schedule.strided(self.keypoints[-1], self.config.refine.n_steps))

    def settings(self) -> dict:
        """Everything that determines the outputs for a given image and seed, as plain values."""
        out = {"method": self.method, "n_samples": self.n_samples, "operator": asdict(self.operator),
               "prior": getattr(self.prior, "name", type(self.prior).__name__)}
        if self.baseline is None:
            out.update(vipaint=asdict(self.config), keypoints=list(self.keypoints), init=self.init,
                       encoder=self.encoder_path)
        else:
            out["baseline"] = asdict(self.baseline[1])
        return out

    def fingerprint(self) -> str:
        """A short hash of ``settings()`` and the prior's (and encoder's) weights: equal fingerprints, equal runs."""
        h = hashlib.sha256(json.dumps(self.settings(), sort_keys=True, default=str).encode())
        for module in (self.prior, self.encoder, self.model):
            for name, tensor in (module.state_dict().items() if module is not None else ()):
                h.update(name.encode())
                h.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def check(self, x: Tensor, keep_mask: Tensor | None) -> str | None:
        """Why the prior cannot take image ``x`` (C, H, W) with ``keep_mask`` (1, H, W), or None."""
        c, h, w = self.prior.image_shape
        if x.shape[0] != c:
            return f"it has {x.shape[0]} channels, the prior expects {c}"
        if tuple(x.shape[1:]) != (h, w):
            return f"it is {x.shape[1]}x{x.shape[2]}, the prior expects {h}x{w}: resize it (--data.init_args.image_size {h})"
        if not bool(torch.isfinite(x).all()):
            return "it contains NaN or inf pixel values"
        if self.operator.name == "inpainting" and keep_mask is not None:
            if tuple(keep_mask.shape[-2:]) != (h, w):
                return f"its mask is {keep_mask.shape[-2]}x{keep_mask.shape[-1]}, the image {h}x{w}"
            if float(keep_mask.sum()) == 0:
                return "its mask observes no pixel: nothing to condition on (white = observed)"
            if float(keep_mask.sum()) == keep_mask.numel():
                return "its mask observes every pixel: nothing to inpaint (black = missing)"
        return None

    def _lpips_fn(self, device):
        """The masked LPIPS of the authors' loss (likelihood kind "l1_lpips"), the model loaded once; else None."""
        lik = self.config.likelihood
        if lik.kind != "l1_lpips":
            return None
        if self._lpips is None:
            from functools import partial

            from ..evaluation.perceptual import load_lpips, masked_lpips

            self._lpips = partial(masked_lpips, load_lpips(lik.lpips_net, lik.lpips_backbone, device=device))
        return self._lpips

    def __call__(self, x: Tensor, keep_mask: Tensor | None = None, generator: torch.Generator | None = None,
                 callback=None, on_step=None, on_refine_step=None) -> Restoration:
        """Restore the B images ``x`` (B, C, H, W) in [-1, 1] observed through the operator (for inpainting only
        the pixels where ``keep_mask`` (B, 1, H, W) is 1 are used). ``callback(iteration, terms)``,
        ``on_step(iteration)``, ``on_refine_step(j, n)``: as ``pipeline.vipaint``'s."""
        if keep_mask is None:
            keep_mask = torch.ones_like(x[:, :1])
        op = make_operator(self.operator, keep_mask)
        y = op.observe(x, generator) if self.operator.add_noise else op.forward(x)
        t0, timings = time.perf_counter(), {}
        if self.baseline is not None:
            fn, cfg = self.baseline
            samples, nfe_per_sample = fn(self.prior, op, y, self.n_samples, cfg, generator)
            bound, failed, nfe = {}, {}, nfe_per_sample * self.n_samples
        else:
            lik = make_likelihood(self.config.likelihood, op, self.prior, self._lpips_fn(x.device))
            stages = Stages(timings, y.device)
            if self.encoder is not None:
                from amortized.encoder import AmortizedInit

                init = AmortizedInit(self.encoder, keep_mask)
            else:
                init = hand_made_posterior
            posterior = init(self.prior, op, y, self.keypoints, self.config, generator)   # keypoints resolved once
            stages.mark("init")
            res = vipaint(self.prior, op, lik, y, n_samples=self.n_samples, config=self.config, generator=generator,
                          posterior=posterior, callback=callback, on_step=on_step, on_refine_step=on_refine_step,
                          timings=timings)
            samples, bound, failed, nfe = res.samples, res.bound, dict(res.fit.failed), res.nfe
        samples = samples.detach().float()
        for b in range(samples.shape[0]):
            if b not in failed and not bool(torch.isfinite(samples[b]).all()):
                failed[b] = "the samples contain NaN or inf"
        std = samples.std(1) if self.n_samples > 1 else torch.zeros_like(samples[:, 0])
        return Restoration(samples=samples, mean=samples.mean(1), std=std, y_image=op.to_image(y).detach().float(),
                           bound={k: v.detach().float() for k, v in bound.items()}, nfe=int(nfe),
                           seconds=(time.perf_counter() - t0) / x.shape[0], failed=failed, timings=timings)


def inpaint(images: Tensor, keep_masks: Tensor | None = None, prior: Prior | str = DEFAULT_PRIOR, samples: int = 4,
            seed: int = 0, method: str = "vipaint", vipaint: VIPaintConfig | None = None,
            operator: OperatorConfig | None = None, **kwargs) -> Restoration:
    """Inpaint (or deblur, or super-resolve: ``operator``) a batch in one call; see ``Inpainter`` for the
    arguments. Images the prior cannot take raise a ValueError naming the image and the fix."""
    solver = Inpainter(prior, method=method, vipaint=vipaint or VIPaintConfig(), operator=operator or OperatorConfig(),
                       n_samples=samples, **kwargs)
    for b in range(images.shape[0]):
        why = solver.check(images[b], None if keep_masks is None else keep_masks[b])
        if why:
            raise ValueError(f"image {b}: {why}")
    solver.to(images.device)
    return solver(images, keep_masks, torch.Generator(device="cpu").manual_seed(seed))


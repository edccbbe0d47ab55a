"""The Lightning module of VIPaint inference: ``predict_step``/``test_step`` fit the posterior per image.

Thin plumbing around ``sampler.vipaint``: it builds the operator and likelihood for a batch, skips
images whose outputs are already complete, isolates per-image failures (bad input, NaN bound) so the
other images of the batch go on, logs the bound's terms, timings and image grids to the logger, and
returns what ``writer.VIPaintWriter`` saves. Run it with ``Trainer(inference_mode=False)``: the fit
needs gradients inside predict/test (Lightning issue #17653).
"""
from __future__ import annotations

import logging
import time
from typing import Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from .baselines import BASELINES, BaselinesConfig
from .hparams import save_plain_hyperparameters
from .likelihood import make_likelihood
from .operators import OperatorConfig, make_operator
from .prior import Prior
from .sampler import VIPaintConfig, resolve_keypoints, vipaint
from .writer import SKIPPED

__all__ = ["VIPaintModule"]

log = logging.getLogger(__name__)


class VIPaintModule(pl.LightningModule):
    """VIPaint-K posterior inference, one fit per image (images of a batch are fitted together).

    The algorithm's settings live in typed dataclasses, declared once there (``--model.vipaint.fit.n_iter``,
    ``--model.operator.name``, ...); the module's own arguments are only what is not the algorithm's.

    Args:
        prior: the diffusion prior (``vipaint.external.PixelPrior``/``LatentPrior`` or any ``Prior``);
            default: the shipped MNIST prior ("vipaint-mnist").
        method: "vipaint", or a baseline in the same harness: "dps", "red_diff", "repaint" (``baselines.py``).
        vipaint: VIPaint's settings (keypoints, likelihood, fit, refinement): ``sampler.VIPaintConfig``.
        baselines: each baseline's settings; only ``method``'s is used: ``baselines.BaselinesConfig``.
        operator: the observation model y = A x (+ noise): ``operators.OperatorConfig``.
        n_samples: posterior samples drawn per image (every method).
        seed: base seed; each batch draws from a generator seeded by seed + the batch's first index.
        log_images: add an image grid per batch to the logger.
        progress: a progress bar over fit iterations and refinement steps (rank 0 only).
        init: "hand" (λ from the encoded observation, method.md §2), "amortized" (predicted by the encoder
            of ``encoder_ckpt``; with ``vipaint.fit.n_iter`` 0 the prediction is used as is, with N > 0 it is
            fine-tuned: semi-amortized), or "auto" (default): amortized where an encoder fits this run (given,
            or shipped with the prior at the same keypoints), hand-made otherwise. On the shipped MNIST prior
            the encoder's λ after 25 fit iterations beats the hand-made one after 25 at the same cost
            (``bench/README.md``, amortized initialisation), which is why it is the default where it exists.
        encoder_ckpt: the encoder of ``init="amortized"``: a folder (``amortized.encoder.save_encoder``) or a
            checkpoint of ``amortized.module.AmortizedModule``; None with the shipped prior "vipaint-mnist"
            uses its shipped encoder (``weights/mnist-amortized``).
    """

    # The dataclass defaults are never mutated (the module only reads its configs), so sharing them is safe.
    def __init__(self, prior: Prior | None = None, method: Literal["vipaint", "dps", "red_diff", "repaint"] = "vipaint",
                 vipaint: VIPaintConfig = VIPaintConfig(), baselines: BaselinesConfig = BaselinesConfig(),
                 operator: OperatorConfig = OperatorConfig(), n_samples: int = 4, seed: int = 0,
                 log_images: bool = True, progress: bool = True, init: Literal["auto", "hand", "amortized"] = "auto",
                 encoder_ckpt: str | None = None):
        super().__init__()
        save_plain_hyperparameters(self, ignore=["prior"])  # readable hparams.yaml
        if prior is None:
            from .external import PixelPrior

            prior = PixelPrior()
        self.prior = prior
        self.config, self.operator_config = vipaint, operator
        make_operator(operator, torch.ones(1, 1, 1, 1))  # validate early
        if vipaint.likelihood.kind == "authors" and operator.name != "inpainting":
            raise ValueError("likelihood 'authors' (L1 + LPIPS) is for inpainting only; use 'gaussian'")
        self.keypoints = resolve_keypoints(prior, vipaint.keypoints)
        if method != "vipaint" and method not in BASELINES:
            raise ValueError(f"unknown method {method!r}; expected 'vipaint' or one of {sorted(BASELINES)}")
        self.baseline = None if method == "vipaint" else (BASELINES[method][0], getattr(baselines, method))
        self.encoder = self._load_encoder(init, encoder_ckpt) if method == "vipaint" else None
        self.init = "hand" if self.encoder is None else "amortized"   # what this run does (result.json records it)
        self._lpips = None
        self._fit_log_step = 0

    # -- helpers ---------------------------------------------------------------------------------------
    def _load_encoder(self, init: str, path: str | None):
        if init == "hand":
            return None
        if init not in ("auto", "amortized"):
            raise ValueError(f"init must be 'auto', 'hand' or 'amortized', got {init!r}")
        from amortized.encoder import encoder_for, shipped_encoder_for

        if init == "auto" and path is None:
            shipped = shipped_encoder_for(self.prior)
            if not shipped:
                return None
            try:   # the shipped encoder, if it was trained for these keypoints
                return encoder_for(self.prior, self.keypoints, shipped)
            except ValueError as err:
                log.info("init 'auto': the hand-made λ, since the shipped encoder does not fit this run (%s)", err)
                return None
        return encoder_for(self.prior, self.keypoints, path)

    def _initial_posterior(self, op, y: Tensor, keep: Tensor):
        """λ predicted by the amortized encoder (None: the sampler's hand-made init)."""
        if self.encoder is None:
            return None
        from amortized.module import initial_posterior

        return initial_posterior(self.encoder, self.prior, self.keypoints, op, y, keep, self.config.eta,
                                 self.config.init_gamma, self.config.init_var_scale)

    def _lpips_model(self):
        lik = self.config.likelihood
        if lik.kind != "authors":
            return None
        if self._lpips is None:
            from .perceptual import load_lpips

            self._lpips = load_lpips(lik.lpips_net, lik.lpips_backbone).to(self.device)
        return self._lpips

    def _writer_completed(self, names: list[str]) -> set[str]:
        from .writer import VIPaintWriter

        done: set[str] = set()
        for cb in getattr(self.trainer, "callbacks", []) if self._trainer is not None else []:
            if isinstance(cb, VIPaintWriter):
                done |= {n for n in names if VIPaintWriter.is_complete(cb.output_dir, n)}
        return done

    def _check(self, x: Tensor, keep: Tensor, name: str) -> str | None:
        """An error message for an image the prior cannot take, else None."""
        c, h, w = self.prior.image_shape
        if x.shape[0] != c:
            return f"'{name}' has {x.shape[0]} channels, the prior expects {c}"
        if tuple(x.shape[1:]) != (h, w):
            return (f"'{name}' is {x.shape[1]}x{x.shape[2]}, the prior expects {h}x{w}: "
                    f"resize it (--data.init_args.image_size {h})")
        if not bool(torch.isfinite(x).all()):
            return f"'{name}' contains NaN or inf pixel values"
        if self.operator_config.name == "inpainting":
            if keep.shape[-2:] != x.shape[-2:]:
                return f"mask of '{name}' is {keep.shape[-2]}x{keep.shape[-1]}, the image {h}x{w}"
            if float(keep.sum()) == 0:
                return f"mask of '{name}' observes no pixel: nothing to condition on"
            if float(keep.sum()) == keep.numel():
                return f"mask of '{name}' observes every pixel: nothing to inpaint"
        return None

    # -- the step -------------------------------------------------------------------------------------
    def _run(self, batch: dict, batch_idx: int) -> dict:
        x, keep, names = batch["x"], batch.get("keep_mask"), list(batch["name"])
        index = batch.get("index")
        B = x.shape[0]
        if keep is None:
            keep = torch.ones_like(x[:, :1])
        status = ["ok"] * B
        # A re-run of predict skips finished images; test must score every image, so it recomputes them.
        done = self._writer_completed(names) if not (self._trainer is not None and self.trainer.testing) else set()
        for b in range(B):
            if names[b] in done:
                status[b] = f"{SKIPPED}: outputs already complete"
                log.info("%s: outputs already complete, skipped", names[b])
            else:
                err = self._check(x[b], keep[b], names[b])
                if err:
                    status[b] = err
                    log.error("skipping %s", err)
        todo = [b for b in range(B) if status[b] == "ok"]
        first = int(index[0]) if index is not None else batch_idx
        gen = torch.Generator(device="cpu").manual_seed(int(self.hparams.seed) + first)
        C, H, W = self.prior.image_shape
        N = self.hparams.n_samples
        out = {"names": names, "samples": torch.zeros(B, N, C, H, W), "mean": torch.zeros(B, C, H, W),
               "std": torch.zeros(B, C, H, W), "y": torch.zeros(B, C, H, W), "x": x.detach().cpu(),
               "keep_mask": keep.detach().cpu() if self.operator_config.name == "inpainting" else None,
               "bound": [{} for _ in range(B)], "status": status, "meta": [{} for _ in range(B)]}
        if not todo:
            return out
        idx = torch.tensor(todo, device=x.device)
        xs, ks = x[idx], keep[idx]
        op = make_operator(self.operator_config, ks)
        y = op.observe(xs, gen) if self.operator_config.add_noise else op.forward(xs)
        lik = make_likelihood(self.config.likelihood, op, self.prior, self._lpips_model())
        t0 = time.perf_counter()
        if self.baseline is not None:
            return self._finish_baseline(out, todo, op, y, gen, t0)
        bar = self._progress_bar(len(todo))
        try:
            res = vipaint(self.prior, op, lik, y, n_samples=N, config=self.config, generator=gen, callback=self._log_fit,
                          posterior=self._initial_posterior(op, y, ks),
                          on_step=(lambda it: bar.update(1)) if bar else None,
                          on_refine_step=(lambda j, n: bar.update(1)) if bar else None)
        finally:
            if bar:
                bar.close()
        seconds = (time.perf_counter() - t0) / len(todo)
        samples = res.samples.detach().float().cpu()
        y_img = op.to_image(y).detach().cpu()
        for j, b in enumerate(todo):
            if j in res.fit.failed or not bool(torch.isfinite(samples[j]).all()):
                status[b] = f"'{names[b]}': " + res.fit.failed.get(j, "the samples contain NaN or inf")
                log.error("fit failed for %s", status[b])
                continue
            out["samples"][b] = samples[j]
            out["mean"][b] = samples[j].mean(0)
            out["std"][b] = samples[j].std(0) if N > 1 else torch.zeros_like(samples[j, 0])
            out["y"][b] = y_img[j]
            out["bound"][b] = {k: float(v[j]) for k, v in res.bound.items()}
            out["meta"][b] = {"method": "vipaint", "seconds": seconds, "nfe_per_image": res.nfe, "keypoints": res.posterior.keypoints,
                              "init": self.init, "fit_steps": self.config.fit.n_iter, "refine_steps": self.config.refine.n_steps,
                              "seed": int(self.hparams.seed) + first}
        self._log_batch(out, todo, seconds)
        return out

    def _finish_baseline(self, out: dict, todo: list[int], op, y: Tensor, gen, t0: float) -> dict:
        fn, cfg = self.baseline
        samples, nfe = fn(self.prior, op, y, self.hparams.n_samples, cfg, gen)
        seconds = (time.perf_counter() - t0) / len(todo)
        samples, y_img = samples.detach().float().cpu(), op.to_image(y).detach().cpu()
        for j, b in enumerate(todo):
            if not bool(torch.isfinite(samples[j]).all()):
                out["status"][b] = f"'{out['names'][b]}': the samples contain NaN or inf"
                continue
            out["samples"][b], out["y"][b] = samples[j], y_img[j]
            out["mean"][b] = samples[j].mean(0)
            out["std"][b] = samples[j].std(0) if samples.shape[1] > 1 else torch.zeros_like(samples[j, 0])
            out["meta"][b] = {"method": self.hparams.method, "seconds": seconds, "nfe_per_sample": nfe,
                              "config": vars(cfg)}
        self._log_batch(out, todo, seconds)
        return out

    def _progress_bar(self, n_images: int):
        if not self.hparams.progress or (self._trainer is not None and not self.trainer.is_global_zero):
            return None
        from tqdm.auto import tqdm

        cfg = self.config
        total = cfg.fit.n_iter + len(self.prior.schedule.strided(self.keypoints[-1], cfg.refine.n_steps))
        return tqdm(total=total, desc=f"VIPaint fit+refine ({n_images} image{'s' * (n_images > 1)})", leave=False,
                    unit="it", dynamic_ncols=True)

    def _log_fit(self, iteration: int, terms: dict[str, Tensor]) -> None:
        exp = getattr(self.logger, "experiment", None) if self._trainer is not None and self.logger else None
        if exp is None or not hasattr(exp, "add_scalar"):
            return
        for k, v in terms.items():
            exp.add_scalar(f"fit/{k}", float(v.mean()), self._fit_log_step)
        self._fit_log_step += 1

    def _log_batch(self, out: dict, todo: list[int], seconds: float) -> None:
        if self._trainer is None or not self.logger:
            return
        ok = [b for b in todo if out["status"][b] == "ok"]
        exp = getattr(self.logger, "experiment", None)
        if ok and self.baseline is None:
            # The bound is reported only when n_eval_samples > 0.
            values = {"seconds_per_image": seconds}
            if "elbo" in out["bound"][ok[0]]:
                values["elbo"] = float(torch.tensor([out["bound"][b]["elbo"] for b in ok]).mean())
            for k, v in values.items():
                if self.trainer.testing:
                    self.log(f"test/{k}", v, batch_size=len(ok), sync_dist=True)
                elif hasattr(exp, "add_scalar"):  # Lightning forbids self.log in predict; write to the logger
                    exp.add_scalar(f"predict/{k}/rank{self.global_rank}", v, self._fit_log_step)
        if self.hparams.log_images and ok and hasattr(exp, "add_image"):
            from torchvision.utils import make_grid

            rows = []
            for b in ok:  # observation | samples | mean | std
                std = out["std"][b].mean(0, keepdim=True).expand_as(out["mean"][b]) * 2 - 1
                rows += [out["y"][b], *out["samples"][b], out["mean"][b], std.clamp(-1, 1)]
            grid = make_grid(torch.stack(rows), nrow=self.hparams.n_samples + 3, normalize=True, value_range=(-1, 1))
            exp.add_image(f"vipaint/rank{self.global_rank}", grid, self._fit_log_step)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._run(batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        out = self._run(batch, batch_idx)
        ok = [b for b, s in enumerate(out["status"]) if s == "ok"]
        if ok:
            x = out["x"][ok].unsqueeze(1)
            mse = ((out["samples"][ok] - x) ** 2).flatten(2).mean(2)   # (b, N)
            psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-12))         # peak-to-peak 2 in [-1, 1]
            self.log("test/psnr", psnr.mean(), batch_size=len(ok), sync_dist=True)
        return out

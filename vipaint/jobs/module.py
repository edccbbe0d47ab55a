"""The Lightning module of VIPaint inference: ``predict_step``/``test_step`` restore each batch of images.

Thin plumbing around ``api.Inpainter`` (which resolves the settings, loads the encoder and calls the algorithm):
per batch it takes the items the datamodule could not load (``batch["error"]``) and those the writer found
finished (``batch["skip"]``, set before the step), checks the rest against the prior, runs the solver on what
is left, and returns one typed ``ImageResult`` per image. Per-image failures (a bad file, a wrong size, a NaN in
the fit) cost only that image. Run it with ``Trainer(inference_mode=False)``: the fit needs gradients inside
predict/test (Lightning issue #17653).
"""
from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch

from ..baselines import BaselinesConfig
from ..operators import OperatorConfig
from ..pipeline import VIPaintConfig
from ..prior import Prior
from . import tensorboard
from .api import Inpainter
from ..priors.shipped import DEFAULT_PRIOR
from ..training.common import save_plain_hyperparameters
from .results import OK, SKIPPED, ImageResult

__all__ = ["VIPaintModule"]

log = logging.getLogger(__name__)


class VIPaintModule(pl.LightningModule):
    """VIPaint-K posterior inference, one fit per image (images of a batch are fitted together).

    The algorithm's settings live in typed dataclasses, declared once there (``--model.vipaint.fit.n_iter``,
    ``--model.operator.name``, ...); the module's own arguments are only what is not the algorithm's.

    Args:
        prior: the diffusion prior (``vipaint.priors.external.PixelPrior``/``LatentPrior`` or any ``Prior``);
            default: the shipped MNIST prior ("vipaint-mnist").
        method: "vipaint", or a baseline in the same harness (``baselines.BASELINES``: "dps", "psld", "red_diff",
            "repaint", "mean_fill", "conditional": a model trained for the task, ``baselines.conditional.weights``);
            checked by ``Inpainter``.
        vipaint: VIPaint's settings (keypoints, init, likelihood, fit, refinement): ``pipeline.VIPaintConfig``.
            Settings left null take the values tuned for the prior (shipped beside its weights).
        baselines: each baseline's settings; only ``method``'s is used: ``baselines.BaselinesConfig``.
        operator: the observation model y = A x (+ noise): ``operators.OperatorConfig``.
        n_samples: posterior samples drawn per image (every method), >= 1.
        seed: base seed; each batch draws from a generator seeded by seed + the batch's first index.
        log_images: add a titled image grid per batch to the logger.
        progress: a progress bar over fit iterations and refinement steps (rank 0 only).
        init: "hand" (λ from the encoded observation, docs/method.md), "amortized" (predicted by the encoder
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
    def __init__(self, prior: Prior | None = None, method: str = "vipaint",
                 vipaint: VIPaintConfig = VIPaintConfig(), baselines: BaselinesConfig = BaselinesConfig(),
                 operator: OperatorConfig = OperatorConfig(), n_samples: int = 4, seed: int = 0,
                 log_images: bool = True, progress: bool = True, init: str = "auto",
                 encoder_ckpt: str | None = None):
        super().__init__()
        save_plain_hyperparameters(self, ignore=["prior"])  # readable hparams.yaml
        self.solver = Inpainter(prior if prior is not None else DEFAULT_PRIOR, method=method, vipaint=vipaint,
                                baselines=baselines, operator=operator, n_samples=n_samples, init=init,
                                encoder=encoder_ckpt)
        self.prior = self.solver.prior    # a submodule, so Lightning moves it to the device
        self.encoder = self.solver.encoder
        self._fingerprint: str | None = None
        self._fit_run = 0

    @property
    def init(self) -> str:
        """What this run does: "hand" or "amortized" (result.json records it)."""
        return self.solver.init

    @property
    def fingerprint(self) -> str:
        """Hash of every setting and weight that determines the outputs (``Inpainter.fingerprint``): the writer
        keeps an earlier image only when its fingerprint is this one."""
        if self._fingerprint is None:
            self._fingerprint = self.solver.fingerprint()
        return self._fingerprint

    # -- the step -------------------------------------------------------------------------------------
    def _run(self, batch: dict, batch_idx: int) -> list[ImageResult]:
        x, keep, names = batch["x"], batch.get("keep_mask"), list(batch["name"])
        if keep is None:
            keep = torch.ones_like(x[:, :1])
        results = [ImageResult(name=n) for n in names]
        skip = batch.get("skip") or {}
        # Items a datamodule already checked in full against this prior's shape (``checked_for``) are not re-checked.
        checked = batch.get("checked_for")
        want = torch.tensor(self.solver.prior.image_shape)
        for b, (name, error) in enumerate(zip(names, batch.get("error") or [None] * len(names))):
            if name in skip:
                results[b].status = SKIPPED
            elif error:
                results[b].status = error
            elif checked is None or not torch.equal(checked[b].cpu(), want):
                why = self.solver.check(x[b], keep[b])
                if why:
                    results[b].status = f"'{name}': {why}"
        todo = [b for b, r in enumerate(results) if r.status == OK]
        for r in results:
            if r.status not in (OK, SKIPPED):
                log.error("skipping %s", r.status)
        if not todo:
            return results
        index = batch.get("index")
        seed = int(self.hparams.seed) + (int(index[0]) if index is not None else batch_idx)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        idx = torch.tensor(todo, device=x.device)
        bar = self._progress_bar(len(todo))
        fit_log = tensorboard.FitCurves(self.logger, f"batch_{seed - int(self.hparams.seed):05d}") \
            if self._trainer is not None else None
        try:
            res = self.solver(x[idx], keep[idx], gen, callback=fit_log,
                              on_step=(lambda it: bar.update(1)) if bar else None,
                              on_refine_step=(lambda j, n: bar.update(1)) if bar else None)
        finally:
            if bar:
                bar.close()
            if fit_log:
                fit_log.close()
        inpainting = self.solver.operator.name == "inpainting"
        meta = {"method": self.solver.method, "seconds": res.seconds, "nfe_per_image": res.nfe, "seed": seed,
                "fingerprint": self.fingerprint}
        if self.solver.baseline is None:
            meta.update(keypoints=self.solver.keypoints, init=self.init, fit_steps=self.solver.config.fit.n_iter,
                        refine_steps=self.solver.config.refine.n_steps)
        for j, b in enumerate(todo):
            r = results[b]
            if j in res.failed:
                r.status = f"'{r.name}': {res.failed[j]}"
                log.error("fit failed for %s", r.status)
                continue
            r.samples, r.mean, r.std = res.samples[j].cpu(), res.mean[j].cpu(), res.std[j].cpu()
            r.y_image, r.x = res.y_image[j].cpu(), x[b].detach().float().cpu()
            r.keep_mask = keep[b].detach().float().cpu() if inpainting else None
            r.bound = {k: float(v[j]) for k, v in res.bound.items()}
            r.meta = dict(meta)
        self._log_batch(results, res.seconds, seed - int(self.hparams.seed))
        return results

    def _progress_bar(self, n_images: int):
        steps = self.solver.n_progress_steps
        if not steps or not self.hparams.progress or (self._trainer is not None and not self.trainer.is_global_zero):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=steps, desc=f"VIPaint fit+refine ({n_images} image{'s' * (n_images > 1)})", leave=False,
                    unit="it", dynamic_ncols=True)

    def _log_batch(self, results: list[ImageResult], seconds: float, first: int) -> None:
        if self._trainer is None or not self.logger:
            return
        ok = [r for r in results if r.ok]
        if not ok:
            return
        values = {"seconds_per_image": seconds}
        if "elbo" in ok[0].bound:
            values["elbo"] = sum(r.bound["elbo"] for r in ok) / len(ok)
        if self.trainer.testing:
            for k, v in values.items():
                self.log(f"test/{k}", v, batch_size=len(ok), sync_dist=True)
        else:   # Lightning forbids self.log in predict: straight to the logger, the first image's index as step
            tensorboard.log_scalars(self.logger, {f"predict/{k}": v for k, v in values.items()}, first)
        if self.hparams.log_images:
            tensorboard.log_grid(self.logger, ok, first, truth=self.trainer.testing)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[ImageResult]:
        return self._run(batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[ImageResult]:
        results = self._run(batch, batch_idx)
        ok = [r for r in results if r.ok]
        if ok:
            from ..evaluation.metrics import psnr

            samples = torch.stack([r.samples for r in ok])            # (b, N, C, H, W)
            truth = torch.stack([r.x for r in ok]).unsqueeze(1).expand_as(samples)
            self.log("test/psnr", psnr(samples.flatten(0, 1), truth.flatten(0, 1)).mean(), batch_size=len(ok),
                     sync_dist=True)
        return results

"""Training the amortized encoder with VIPaint's own bound (``vipaint.bound``), the prior frozen.

Per step: images x and fresh masks from the datamodule (``mask: mix4`` draws the MNIST benchmark's bottom
half / centre box / strokes / 90% pixels; ``mixed`` box / random boxes / any half / strokes), y = A x + σ_y ε
(noisy, as at inference); the encoder predicts λ from y; the loss is the negative bound averaged over
the batch, estimated with ``n_samples`` Monte Carlo samples per image — the same ``evaluate_bound``
and likelihood as per-image inference, so the encoder learns what the fit would optimise.
"""
from __future__ import annotations

from dataclasses import replace

import lightning.pytorch as pl
import torch
from torch import Tensor

from vipaint.bound import evaluate_bound
from vipaint.training.common import export_at_fit_end, log_image_grid, save_plain_hyperparameters
from vipaint.likelihood import make_likelihood
from vipaint.operators import OperatorConfig, make_operator
from vipaint.pipeline import VIPaintConfig, resolve_keypoints
from vipaint.prior import Prior

from .encoder import AmortizedEncoder, AmortizedInit, predict_posterior

__all__ = ["AmortizedModule"]


class AmortizedModule(pl.LightningModule):
    """The encoder is trained for the posterior family inference will use, so it takes inference's own
    ``VIPaintConfig`` (keypoints, eta, init, the fit's β weights and n_grid; the rest is unused here).

    Args:
        prior: the frozen diffusion prior.
        operator: the observation model trained for (``OperatorConfig``; the encoder sees the keep mask).
        vipaint: the inference settings the encoder is trained for (``VIPaintConfig``).
        n_samples: Monte Carlo samples of the bound per image per training step.
        width: encoder channels.
        depth: encoder blocks.
        lr: Adam learning rate.
        grid_fit_iters: fit iterations for the validation grid's "after the fit" column.
        export_dir: where the trained encoder is saved at the end of fit (``save_encoder``); None: the run's
            own folder (``<log_dir>/export``), never ``weights/`` (``python -m vipaint.priors.publish`` does that).
    """

    def __init__(self, prior: Prior | None = None, operator: OperatorConfig = OperatorConfig(),
                 vipaint: VIPaintConfig = VIPaintConfig(), n_samples: int = 2, width: int = 64, depth: int = 2,
                 lr: float = 2e-4, grid_fit_iters: int = 10, export_dir: str | None = None):
        super().__init__()
        save_plain_hyperparameters(self, ignore=["prior"])  # readable hparams.yaml
        if prior is None:
            from vipaint.priors.external import load_prior

            prior = load_prior()
        self.prior = prior.freeze()
        self.operator_config, self.config = operator, vipaint
        self.keypoints = resolve_keypoints(prior, vipaint)
        self.encoder = AmortizedEncoder(prior.latent_shape[0], len(self.keypoints), width, depth)

    def _terms(self, batch: dict):
        hp = self.hparams
        x, keep = batch["x"], batch["keep_mask"]
        op = make_operator(self.operator_config, keep)
        y = op.observe(x)  # noisy, as at inference: the encoder must learn what σ_y-noisy pixels say
        post = predict_posterior(self.encoder, self.prior, self.keypoints, op, y, keep, self.config)
        lik = make_likelihood(self.config.likelihood, op, self.prior)
        terms = evaluate_bound(self.prior, post, lik, y, hp.n_samples, self.config.fit.n_grid)
        return terms, y, op

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        terms, _, _ = self._terms(batch)
        n = self.hparams.n_samples
        loss = terms.loss(self.config.fit.beta_prior, self.config.fit.beta_hier).reshape(-1, n).mean()
        for k, v in terms.per_image(n).items():
            self.log(f"train/{k}", v.mean(), prog_bar=k == "elbo")
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        terms, y, op = self._terms(batch)
        for k, v in terms.per_image(self.hparams.n_samples).items():
            self.log(f"val/{k}", v.mean(), sync_dist=True)
        if batch_idx == 0:
            n = min(8, batch["x"].shape[0])
            log_image_grid(self, "val/observation|predicted λ|after fit|truth", lambda: self.sample_grid(batch, n), nrow=n)

    def sample_grid(self, batch: dict, n: int = 8) -> Tensor:
        """Rows: observation | one sample from the predicted λ | one after ``grid_fit_iters`` fit iterations from
        it | truth, for the first n images (a fixed batch: the validation set's masks are seeded), (4n, C, H, W)."""
        from vipaint.pipeline import vipaint

        x, keep = batch["x"][:n], batch["keep_mask"][:n]
        op = make_operator(self.operator_config, keep)
        y = op.forward(x)
        lik = make_likelihood(self.config.likelihood, op, self.prior)
        rows = [op.to_image(y)]
        init = AmortizedInit(self.encoder, keep)
        for iters in (0, self.hparams.grid_fit_iters):
            cfg = replace(self.config, n_eval_samples=0, fit=replace(self.config.fit, n_iter=iters))
            post = init(self.prior, op, y, self.keypoints, cfg)
            with torch.enable_grad(), torch.inference_mode(False):
                out = vipaint(self.prior, op, lik, y, 1, cfg, torch.Generator(x.device).manual_seed(0), post)
            rows.append(out.samples[:, 0])
        rows.append(x)
        return torch.cat(rows)

    def on_fit_end(self) -> None:
        export_at_fit_end(self, "encoder")

    def export(self, folder: str):
        """The encoder and what it was trained for (keypoints, init, prior, operator, steps) as a folder."""
        from vipaint.priors.shipped import shipped_name

        from .encoder import save_encoder, training_meta

        step = int(self.trainer.global_step) if self._trainer is not None else None
        return save_encoder(self.encoder, folder, training_meta(self.config, self.operator_config, step,
                                                                shipped_name(getattr(self.prior, "name", None))))

    def on_after_backward(self) -> None:
        # The prior is frozen: no gradient may reach it (checked, not assumed).
        leaked = [n for n, p in self.prior.named_parameters() if p.grad is not None]
        if leaked:
            raise RuntimeError(f"gradient reached the frozen prior: {leaked[:3]}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The frozen prior is configuration, not state: keep checkpoints encoder-sized.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("prior.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resuming: put the configured prior's weights back so strict loading finds them.
        checkpoint["state_dict"].update({f"prior.{k}": v for k, v in self.prior.state_dict().items()})

    def configure_optimizers(self):
        return torch.optim.Adam(self.encoder.parameters(), lr=self.hparams.lr)

"""Training the amortized encoder with VIPaint's own bound (``vipaint.bound``), the prior frozen.

Per step: images x and fresh masks from the datamodule (``mask: mix4`` draws the MNIST benchmark's bottom
half / centre box / strokes / 90% pixels; ``mixed`` box / random boxes / any half / strokes), y = A x + σ_y ε
(noisy, as at inference); the encoder predicts λ from y; the loss is the negative bound averaged over
the batch, estimated with ``n_samples`` Monte Carlo samples per image — the same ``evaluate_bound``
and likelihood as per-image inference, so the encoder learns what the fit would optimise.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor

from vipaint.bound import evaluate_bound
from vipaint.fit import FitConfig
from vipaint.hparams import save_plain_hyperparameters
from vipaint.likelihood import GaussianLikelihood
from vipaint.operators import OperatorConfig, make_operator
from vipaint.posterior import HierarchicalPosterior
from vipaint.prior import Prior
from vipaint.sampler import VIPaintConfig, resolve_keypoints

from .encoder import AmortizedEncoder

__all__ = ["AmortizedModule", "predict_posterior", "initial_posterior"]


def predict_posterior(encoder: AmortizedEncoder, prior: Prior, keypoints: list[int], operator, y: Tensor,
                      keep_mask: Tensor, eta: float = VIPaintConfig.eta, init_gamma: float = VIPaintConfig.init_gamma,
                      init_var_scale: float = VIPaintConfig.init_var_scale) -> HierarchicalPosterior:
    """λ = hand-made init + encoder residuals, as a posterior differentiable w.r.t. the encoder."""
    with torch.no_grad():
        z_y = prior.encode(operator.to_image(y))
    base = HierarchicalPosterior(keypoints, prior.latent_shape, batch=y.shape[0], eta=eta).to(y.device)
    mu0, logvar0, gamma0 = base.initial_values(prior, z_y, gamma=init_gamma, var_scale=init_var_scale)
    d_mu, d_logvar, d_gamma = encoder(z_y, keep_mask)
    return HierarchicalPosterior.from_tensors(keypoints, mu0 + d_mu, logvar0 + d_logvar, gamma0 + d_gamma, eta=eta)


def initial_posterior(encoder: AmortizedEncoder, prior: Prior, keypoints: list[int], operator, y: Tensor,
                      keep_mask: Tensor, eta: float = VIPaintConfig.eta, init_gamma: float = VIPaintConfig.init_gamma,
                      init_var_scale: float = VIPaintConfig.init_var_scale) -> HierarchicalPosterior:
    """The encoder's λ as a fresh posterior whose parameters are leaves: what the per-image fit starts from."""
    with torch.no_grad():
        pred = predict_posterior(encoder, prior, keypoints, operator, y, keep_mask, eta, init_gamma, init_var_scale)
    post = HierarchicalPosterior(keypoints, prior.latent_shape, batch=y.shape[0], eta=eta)
    post.load_parameters(pred.mu.float(), pred.logvar.float(), pred.gamma.float())
    return post.to(y.device)


class AmortizedModule(pl.LightningModule):
    """The encoder is trained for the posterior family inference will use, so its settings are those of
    ``VIPaintConfig`` / ``FitConfig`` under the same names, with their defaults (declared there, not here).

    Args:
        prior: the frozen diffusion prior.
        operator: the observation model trained for (``OperatorConfig``; the encoder sees the keep mask).
        keypoints: as ``VIPaintConfig.keypoints``.
        eta: as ``VIPaintConfig.eta``.
        init_gamma: as ``VIPaintConfig.init_gamma`` (the encoder predicts residuals to the hand-made init).
        init_var_scale: as ``VIPaintConfig.init_var_scale``.
        n_samples: Monte Carlo samples of the bound per image per training step.
        beta_prior: as ``FitConfig.beta_prior``.
        beta_hier: as ``FitConfig.beta_hier``.
        n_grid: as ``FitConfig.n_grid``.
        width: encoder channels.
        depth: encoder blocks.
        lr: Adam learning rate.
        grid_fit_iters: fit iterations for the validation grid's "after the fit" column.
        export_dir: where the trained encoder is saved at the end of fit (``save_encoder``; None: not saved).
    """

    def __init__(self, prior: Prior | None = None, operator: OperatorConfig = OperatorConfig(),
                 keypoints: tuple[int, ...] | None = VIPaintConfig.keypoints, eta: float = VIPaintConfig.eta,
                 init_gamma: float = VIPaintConfig.init_gamma, init_var_scale: float = VIPaintConfig.init_var_scale,
                 n_samples: int = 2, beta_prior: float = FitConfig.beta_prior, beta_hier: float = FitConfig.beta_hier,
                 n_grid: int = FitConfig.n_grid, width: int = 64, depth: int = 2, lr: float = 2e-4,
                 grid_fit_iters: int = 10, export_dir: str | None = None):
        super().__init__()
        save_plain_hyperparameters(self, ignore=["prior"])  # readable hparams.yaml
        if prior is None:
            from vipaint.external import PixelPrior

            prior = PixelPrior()
        self.prior = prior.freeze()
        self.operator_config = operator
        self.keypoints = resolve_keypoints(prior, keypoints)
        self.encoder = AmortizedEncoder(prior.latent_shape[0], len(self.keypoints), width, depth)

    def _terms(self, batch: dict):
        hp = self.hparams
        x, keep = batch["x"], batch["keep_mask"]
        op = make_operator(self.operator_config, keep)
        y = op.observe(x)  # noisy, as at inference: the encoder must learn what σ_y-noisy pixels say
        post = predict_posterior(self.encoder, self.prior, self.keypoints, op, y, keep, hp.eta, hp.init_gamma,
                                 hp.init_var_scale)
        lik = GaussianLikelihood(op, self.prior)
        terms = evaluate_bound(self.prior, post, lik, y, hp.n_samples, hp.n_grid)
        return terms, y, op

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        terms, _, _ = self._terms(batch)
        n = self.hparams.n_samples
        loss = terms.loss(self.hparams.beta_prior, self.hparams.beta_hier).reshape(-1, n).mean()
        for k, v in terms.per_image(n).items():
            self.log(f"train/{k}", v.mean(), prog_bar=k == "elbo")
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        terms, y, op = self._terms(batch)
        for k, v in terms.per_image(self.hparams.n_samples).items():
            self.log(f"val/{k}", v.mean(), sync_dist=True)
        exp = getattr(self.logger, "experiment", None) if self.logger else None
        if batch_idx == 0 and hasattr(exp, "add_image") and self.global_rank == 0:
            exp.add_image("val/observation|predicted λ|after fit|truth", self.sample_grid(batch), self.global_step)

    def sample_grid(self, batch: dict, n: int = 8) -> Tensor:
        """Rows: observation | one sample from the predicted λ | one after ``grid_fit_iters`` fit iterations from
        it | truth, for the first n images (a fixed batch: the validation set's masks are seeded)."""
        from torchvision.utils import make_grid

        from vipaint.sampler import vipaint

        x, keep = batch["x"][:n], batch["keep_mask"][:n]
        op = make_operator(self.operator_config, keep)
        y = op.forward(x)
        lik = GaussianLikelihood(op, self.prior)
        rows = [op.to_image(y)]
        for iters in (0, self.hparams.grid_fit_iters):
            cfg = self.vipaint_config(iters)
            post = initial_posterior(self.encoder, self.prior, self.keypoints, op, y, keep, cfg.eta, cfg.init_gamma,
                                     cfg.init_var_scale)
            with torch.enable_grad(), torch.inference_mode(False):
                out = vipaint(self.prior, op, lik, y, 1, cfg, torch.Generator(x.device).manual_seed(0), post)
            rows.append(out.samples[:, 0])
        rows.append(x)
        return make_grid(torch.cat(rows).float().clamp(-1, 1), nrow=x.shape[0], normalize=True, value_range=(-1, 1))

    def vipaint_config(self, fit_iters: int) -> VIPaintConfig:
        """Inference settings matching what the encoder is trained for (defaults elsewhere)."""
        hp = self.hparams
        return VIPaintConfig(keypoints=hp.keypoints, eta=hp.eta, init_gamma=hp.init_gamma,
                             init_var_scale=hp.init_var_scale, n_eval_samples=0,
                             fit=FitConfig(n_iter=fit_iters, beta_prior=hp.beta_prior, beta_hier=hp.beta_hier,
                                           n_grid=hp.n_grid))

    def on_fit_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            self.export(self.hparams.export_dir)

    def export(self, folder: str):
        """The encoder and what it was trained for (keypoints, init, prior, operator, steps) as a folder."""
        from .encoder import save_encoder, training_meta

        step = int(self.trainer.global_step) if self._trainer is not None else None
        return save_encoder(self.encoder, folder, training_meta(dict(self.hparams), step, getattr(self.prior, "name", None)))

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

"""Training the amortized encoder with VIPaint's own bound (``vipaint.bound``), the prior frozen.

Per step: images x and fresh masks from the datamodule (``mask: mixed`` draws box / random boxes /
half / strokes), y = A x; the encoder predicts λ from y; the loss is the negative bound averaged over
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

__all__ = ["AmortizedModule", "predict_posterior"]


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
    """

    def __init__(self, prior: Prior | None = None, operator: OperatorConfig = OperatorConfig(),
                 keypoints: tuple[int, ...] | None = VIPaintConfig.keypoints, eta: float = VIPaintConfig.eta,
                 init_gamma: float = VIPaintConfig.init_gamma, init_var_scale: float = VIPaintConfig.init_var_scale,
                 n_samples: int = 2, beta_prior: float = FitConfig.beta_prior, beta_hier: float = FitConfig.beta_hier,
                 n_grid: int = FitConfig.n_grid, width: int = 64, depth: int = 2, lr: float = 2e-4):
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
        y = op.forward(x)
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
            from torchvision.utils import make_grid

            x1 = terms.x.reshape(y.shape[0], self.hparams.n_samples, *terms.x.shape[1:])[:, 0]
            grid = make_grid(torch.cat([op.to_image(y)[:8], x1[:8], batch["x"][:8]]), nrow=min(8, y.shape[0]),
                             normalize=True, value_range=(-1, 1))
            exp.add_image("val/observation|one-step x0 at T_s|truth", grid, self.global_step)

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

"""Training a model for the task: a conditional DDPM ε̂(z_t, t | y, m) for inpainting (the paper's open question 2).

The prior's objective (``prior.PriorTrainingModule``, Ho et al. 2020 eq. 14) with the observation and the mask as
extra input channels: ``L = E ||ε - ε_θ([α_t x_0 + σ_t ε, y, m], t)||²`` with ``y = m ⊙ (x_0 + σ_y ε_y)``, a fresh
mask of the benchmark's families per training image (``data.train_masks: true, mask: mix4``). Same UNet, same
schedule, same t sampling and EMA as the prior it is compared with, so the comparison is one of training for the
task, not of size. It is sampled in the harness by ``baselines.conditional`` (``--model.method conditional``).

| symbol | here | meaning |
|---|---|---|
| x_0, m | ``batch["x"]``, ``batch["keep_mask"]`` | clean image (B, C, H, W), keep mask (B, 1, H, W), 1 = observed |
| y | first C channels of ``cond`` | the observation, zero in the hole; σ_y as the benchmarks observe |
| cond | ``condition(batch, x0)`` | ``cat(y, m)``: (B, C + 1, H, W) |
"""
from __future__ import annotations

import torch

from ..rng import randn_like
from .common import log_image_grid
from .prior import PriorTrainingModule

__all__ = ["ConditionalPriorModule"]


class ConditionalPriorModule(PriorTrainingModule):
    """Args: those of ``PriorTrainingModule`` (pixel models only: no ``autoencoder``), and
        sigma_y: std of the observation noise added to y in training (the benchmarks' σ_y = 0.05).
        n_val_fills: validation images whose fills (observation | 4 samples | truth) go to TensorBoard (0 = off).
    The exported folder is a diffusers ``UNet2DModel`` with ``in_channels = 2C + 1`` (``priors.conditional``).
    """

    def __init__(self, image_size: int = 28, channels: int = 1, block_out_channels: list[int] = [32, 64, 64],
                 layers_per_block: int = 1, attention_levels: list[int] = [], lr: float = 1e-3,
                 warmup_steps: int = 200, min_lr_ratio: float = 0.02, ema_decay: float = 0.999,
                 high_t_fraction: float = 0.3, high_t_start: int = 400, init_from: str | None = None,
                 export_dir: str | None = None, export_dtype: str = "float32", sigma_y: float = 0.05,
                 n_val_fills: int = 8):
        if sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
        super().__init__(image_size=image_size, channels=channels, block_out_channels=block_out_channels,
                         layers_per_block=layers_per_block, attention_levels=attention_levels, lr=lr,
                         warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, ema_decay=ema_decay,
                         high_t_fraction=high_t_fraction, high_t_start=high_t_start, sample_every_val=0,
                         init_from=init_from, export_dir=export_dir, export_dtype=export_dtype)
        self.save_hyperparameters()
        self._val_batch = None

    @staticmethod
    def condition_channels(channels: int) -> int:
        return channels + 1   # the observation y and the keep mask m

    def condition(self, batch: dict, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if batch.get("keep_mask") is None:
            raise ValueError("the conditional model trains on masked images: set data.init_args.train_masks: true "
                             "(and a mask family, e.g. mask: mix4)")
        m = batch["keep_mask"].to(x0.dtype)
        y = m * (x0 + self.hparams.sigma_y * randn_like(x0, generator))
        return torch.cat([y, m], 1)

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        if batch_idx == 0:
            self._val_batch = batch

    def on_validation_epoch_end(self) -> None:
        n = min(self.hparams.n_val_fills, 0 if self._val_batch is None else self._val_batch["x"].shape[0])
        if n:
            log_image_grid(self, "val/observation|4 fills|truth", lambda: self.fill_grid(self._val_batch, n), nrow=6)

    @torch.no_grad()
    def fill_grid(self, batch: dict, n: int, samples: int = 4, steps: int = 50) -> torch.Tensor:
        """Rows of [observation, ``samples`` EMA fills (DDIM, η = 0), truth] for the first ``n`` items, (n·(samples
        + 2), C, H, W)."""
        from ..baselines import ConditionalConfig, conditional
        from ..operators import Inpainting
        from ..priors.conditional import ConditionalDenoiser
        from ..schedule import NoiseSchedule

        x, m = batch["x"][:n], batch["keep_mask"][:n].to(batch["x"].dtype)
        g = torch.Generator(device="cpu").manual_seed(0)
        y = self.condition({"keep_mask": m}, x, g)[:, :x.shape[1]]
        model = ConditionalDenoiser(self.ema, NoiseSchedule(self.alphas_cumprod.cpu()))
        fills, _ = conditional(None, Inpainting(m, self.hparams.sigma_y), y, samples,
                               ConditionalConfig(n_steps=steps), g, model=model)
        shown = y - (1 - m)   # y is zero in the hole: shown black
        return torch.cat([shown[:, None], fills, x[:, None]], 1).flatten(0, 1)

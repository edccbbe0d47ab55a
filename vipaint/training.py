"""Training a pixel diffusion prior: a diffusers ``UNet2DModel`` with the DDPM ε objective and an EMA.

``L = E_{x_0, t, ε} ||ε - ε_θ(α_t x_0 + σ_t ε, t)||²`` (Ho et al. 2020, eq. 14), t uniform on the
1000-step linear schedule — the schedule of ``schedule.DEFAULT_KEYPOINTS``, so the keypoints need no
mapping. The EMA weights are what ships: ``export_dir`` receives them with ``save_pretrained``
(safetensors) plus the scheduler config, the layout ``external.PixelPrior`` loads.
"""
from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

__all__ = ["PriorTrainingModule"]


class PriorTrainingModule(pl.LightningModule):
    """Args:
        image_size, channels: data shape. block_out_channels, layers_per_block, attention_levels: UNet size
            (attention at the listed resolution levels, 0 = full resolution).
        lr, warmup_steps, ema_decay: optimisation. export_dir: where EMA weights go at the end of fit.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, block_out_channels: list[int] = [64, 128, 128],
                 layers_per_block: int = 2, attention_levels: list[int] = [1], lr: float = 2e-4,
                 warmup_steps: int = 500, ema_decay: float = 0.999, export_dir: str | None = "weights/prior"):
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DModel

        self.save_hyperparameters()
        levels = range(len(block_out_channels))
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels, layers_per_block=layers_per_block,
            block_out_channels=tuple(block_out_channels), norm_num_groups=min(32, block_out_channels[0]),
            down_block_types=tuple("AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in levels),
            up_block_types=tuple("AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(levels)))
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.float(), persistent=False)

    def loss(self, x0: torch.Tensor, unet=None) -> torch.Tensor:
        unet = unet or self.unet
        t = torch.randint(0, 1000, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        ab = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        z_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        return F.mse_loss(unet(z_t, t).sample, eps)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch["x"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.unet.parameters()):
                e.lerp_(p, 1 - self.hparams.ema_decay)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss_ema", self.loss(batch["x"], self.ema), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr, weight_decay=0.0)
        warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, self.hparams.warmup_steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": warm, "interval": "step"}}

    def on_fit_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            self.export(self.hparams.export_dir)

    def export(self, path: str) -> Path:
        """Save the EMA UNet (fp16 safetensors) and the scheduler config in a diffusers folder."""
        path = Path(path)
        self.ema.to(torch.float16).save_pretrained(path, safe_serialization=True)
        self.ema.to(torch.float32)
        self.scheduler.save_pretrained(path)
        return path

"""Training the autoencoder of a latent diffusion prior: a diffusers ``AutoencoderKL`` (Rombach et al. 2022).

    L = |x - D(z)|₁ + w_lpips · LPIPS(x, D(z)) + w_kl · KL(q(z|x) ‖ N(0, I)) / (C·H·W),   z ~ q(z|x)

| symbol | here | meaning |
|---|---|---|
| x | ``x`` | image in [-1, 1], (B, C, H, W) |
| q(z|x) | ``posterior`` | diagonal Gaussian from the encoder, (B, c, H/f, W/f) |
| D | ``self.vae.decode`` | the decoder |
| s | ``scaling_factor`` | 1 / std of the latent means, so the diffusion model sees unit-variance latents |

The KL is summed over latent elements and divided by the number of pixel elements, the convention of the
LDM autoencoders (their loss sums both terms per image; ``kl_weight = 1e-6`` there is this ``kl_weight``).
The decoder bounds everything a latent prior built on it can do, so validation reports reconstruction
PSNR and LPIPS on held-out images at every validation. ``scaling_factor`` comes from a running estimate of the
latent means' variance over the training batches (a buffer, so it survives a resume) and is written into
the exported config, where ``priors.external.LatentPrior`` reads it.

Export (``export``) writes a diffusers ``AutoencoderKL`` folder (config + safetensors); training writes it into
the run's own folder, never into ``weights/`` (``python -m vipaint.priors.publish`` does that, explicitly).
"""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from .common import export_at_fit_end, log_image_grid, warmup_cosine_schedule

__all__ = ["AutoencoderTrainingModule", "build_autoencoder"]


def build_autoencoder(channels: int, block_out_channels: list[int], layers_per_block: int, latent_channels: int):
    """A diffusers ``AutoencoderKL`` downsampling by 2^(len(block_out_channels) - 1)."""
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(in_channels=channels, out_channels=channels, latent_channels=latent_channels,
                         block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         norm_num_groups=min(32, block_out_channels[0]))


class AutoencoderTrainingModule(pl.LightningModule):
    """Args:
        channels: image channels. block_out_channels, layers_per_block, latent_channels: the autoencoder's size.
        lr, warmup_steps, min_lr_ratio: Adam peak rate, linear warm-up, cosine decay to ``lr * min_lr_ratio``.
        lpips_weight, lpips_net, lpips_backbone: the perceptual term (the offline backbone folder comes from
            ``lpips_backbone`` or ``VIPAINT_LPIPS_BACKBONE_DIR``); 0 turns it off.
        kl_weight: weight of the KL term (module docstring).
        scale_momentum: momentum of the running latent-variance estimate behind ``scaling_factor``.
        export_dir: where the autoencoder is exported at the end of fit (None: ``<log_dir>/export``).
    """

    def __init__(self, channels: int = 3, block_out_channels: list[int] = [32, 64, 128], layers_per_block: int = 1,
                 latent_channels: int = 4, lr: float = 1e-3, warmup_steps: int = 200, min_lr_ratio: float = 0.05,
                 lpips_weight: float = 0.1, lpips_net: str = "alex", lpips_backbone: str | None = None,
                 kl_weight: float = 1e-6, scale_momentum: float = 0.01, export_dir: str | None = None):
        super().__init__()
        if lpips_weight < 0 or kl_weight < 0:
            raise ValueError(f"lpips_weight and kl_weight must be >= 0, got {lpips_weight}, {kl_weight}")
        if len(block_out_channels) < 2:
            raise ValueError(f"block_out_channels needs at least 2 levels (one downsampling), got {block_out_channels}")
        self.save_hyperparameters()
        self.vae = build_autoencoder(channels, block_out_channels, layers_per_block, latent_channels)
        self._lpips = None   # loaded lazily, outside the module tree (frozen; not in checkpoints)
        self.register_buffer("latent_var", torch.ones(()))
        self.register_buffer("latent_var_seen", torch.zeros((), dtype=torch.bool))

    def lpips(self):
        if self._lpips is None and self.hparams.lpips_weight > 0:
            from ..evaluation.perceptual import load_lpips

            object.__setattr__(self, "_lpips", load_lpips(self.hparams.lpips_net, self.hparams.lpips_backbone,
                                                          device=self.device))
        return self._lpips

    @property
    def scaling_factor(self) -> float:
        return float(self.latent_var.clamp_min(1e-8).rsqrt())

    def reconstruct(self, x: torch.Tensor, sample: bool = True):
        """(reconstruction, posterior): decode a draw from q(z|x) (its mean if not ``sample``)."""
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mean
        return self.vae.decode(z).sample, posterior

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x_rec, posterior = self.reconstruct(x)
        terms = {"l1": (x_rec.float() - x.float()).abs().mean(),
                 "kl": posterior.kl().float().mean() / x[0].numel()}
        lp = self.lpips()
        terms["lpips"] = lp(x_rec.float(), x.float(), normalize=False).mean() if lp is not None else x.new_zeros(())
        terms["loss"] = terms["l1"] + self.hparams.lpips_weight * terms["lpips"] + self.hparams.kl_weight * terms["kl"]
        with torch.no_grad():   # the running variance of the latent means, for scaling_factor
            var = posterior.mean.float().var()
            m = 1.0 if not bool(self.latent_var_seen) else self.hparams.scale_momentum
            self.latent_var.lerp_(var, m)
            self.latent_var_seen.fill_(True)
        return terms

    def training_step(self, batch, batch_idx):
        terms = self.loss(batch["x"])
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"})
        self.log("train/loss", terms["loss"], prog_bar=True)
        self.log("train/scaling_factor", self.scaling_factor)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        x = batch["x"]
        x_rec, _ = self.reconstruct(x, sample=False)
        from ..evaluation.metrics import psnr

        self.log("val/psnr", psnr(x_rec.float().clamp(-1, 1), x.float()).mean(), sync_dist=True, batch_size=x.shape[0],
                 prog_bar=True)
        lp = self.lpips()
        if lp is not None:
            self.log(f"val/lpips_{self.hparams.lpips_net}", lp(x_rec.float().clamp(-1, 1), x.float()).mean(),
                     sync_dist=True, batch_size=x.shape[0])
        if batch_idx == 0:
            n = min(16, x.shape[0])   # originals above their reconstructions
            log_image_grid(self, "reconstructions (top: held-out images, bottom: decoded)",
                           lambda: torch.cat([x[:n], x_rec[:n]]), nrow=n)

    def configure_optimizers(self):
        return warmup_cosine_schedule(self, torch.optim.Adam(self.vae.parameters(), lr=self.hparams.lr,
                                                             betas=(0.5, 0.9)))

    def on_fit_end(self) -> None:
        export_at_fit_end(self, f"autoencoder (scaling_factor {self.scaling_factor:.4f})")

    def export(self, path: str | Path) -> Path:
        """Save the autoencoder as a diffusers ``AutoencoderKL`` folder with ``scaling_factor`` in its config."""
        import copy

        path = Path(path)
        vae = copy.deepcopy(self.vae).to("cpu", torch.float32)
        vae.register_to_config(scaling_factor=self.scaling_factor)
        vae.save_pretrained(path, safe_serialization=True)
        return path


def export_checkpoint(ckpt_path: str, out_dir: str) -> Path:
    """Export the autoencoder of a training checkpoint (e.g. ``runs/autoencoder_cifar10/checkpoints/last.ckpt``)."""
    return AutoencoderTrainingModule.load_from_checkpoint(ckpt_path, map_location="cpu").export(out_dir)


if __name__ == "__main__":  # python -m vipaint.training.autoencoder CKPT OUT_DIR
    import sys

    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m vipaint.training.autoencoder CHECKPOINT OUT_DIR")
    from vipaint.training.autoencoder import export_checkpoint as _export

    print(_export(sys.argv[1], sys.argv[2]))

"""Training a pixel diffusion prior: a diffusers ``UNet2DModel`` with the DDPM ε or v objective and an EMA.

``L = E_{x_0, t, ε} ||ε - ε_θ(α_t x_0 + σ_t ε, t)||²`` (Ho et al. 2020, eq. 14), or with ``prediction_type``
``v_prediction`` ``L = E ||v - v_θ(z_t, t)||²``, ``v = α_t ε - σ_t x_0`` (Salimans & Ho 2022, §4), on the 1000-step
linear schedule — the schedule of ``schedule.DEFAULT_KEYPOINTS``, so the keypoints need no mapping.

Why v: the two targets have one minimiser, but their errors reach x̂_0 differently. An ε-model's x̂_0 error is
(σ_t/α_t)·‖ε̂ - ε‖, which grows without bound as α_t → 0; a v-model's is σ_t·‖v̂ - v‖ ≤ ‖v̂ - v‖. Measured on the
CIFAR-10 pixel prior after 5,000 ε-steps: x̂_0 was 9–21 dB *below* the best linear denoiser at t ≥ 850, where
sampling starts, and its samples were colour fields. The v-loss equals the ε-loss weighted by 1/α_t².

| symbol | here | meaning |
|---|---|---|
| t | ``t`` | integer timestep in [0, 1000) |
| ᾱ_t | ``ab`` | cumulative signal fraction; α_t = √ᾱ_t, σ_t = √(1-ᾱ_t) |
| x_0, z_t, ε | ``x0``, ``z_t``, ``eps`` | clean image, noised image, noise |
| v | ``target`` | velocity α_t ε - σ_t x_0, the v-model's regression target |

Where t is drawn: uniform by default. ``high_t_fraction`` draws that share of each batch uniformly from
``[high_t_start, 1000)`` instead. Why: at large t the ε-error is tiny in absolute terms (ε ≈ z_t), so
under uniform t its gradient drowns in the noise of the small-t terms; VIPaint's keypoints (550, 400)
and the prior term above them live exactly there. The objective's minimiser is unchanged (each t's
regression target is the same), only the effort per t moves.

The EMA weights are what ships: ``export_dir`` receives them (``save_pretrained``, safetensors) plus the
scheduler config, the layout ``external.PixelPrior`` loads. A grid of DDIM samples from the EMA goes to
TensorBoard at every validation.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..prior import convert_prediction
from ..schedule import q_sample
from .common import export_at_fit_end, log_image_grid, warmup_cosine_schedule

__all__ = ["PriorTrainingModule", "build_unet", "export_checkpoint", "sample_timesteps", "TRAINABLE_PREDICTIONS"]

TRAINABLE_PREDICTIONS = ("epsilon", "v_prediction")


def build_unet(image_size: int, channels: int, block_out_channels: list[int], layers_per_block: int,
               attention_levels: list[int], in_channels: int | None = None):
    """A diffusers ``UNet2DModel``, attention at the listed resolution levels (0 = full resolution);
    ``in_channels`` (default ``channels``) larger for a conditional model's extra input channels."""
    from diffusers import UNet2DModel

    levels = range(len(block_out_channels))
    return UNet2DModel(
        sample_size=image_size, in_channels=in_channels or channels, out_channels=channels,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels), norm_num_groups=min(32, block_out_channels[0]),
        down_block_types=tuple("AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(levels)))


def sample_timesteps(n: int, T: int, high_t_fraction: float, high_t_start: int, device=None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` integer timesteps: uniform on [0, T), except a ``high_t_fraction`` share uniform on [high_t_start, T)."""
    t = torch.randint(0, T, (n,), device=device, generator=generator)
    n_high = int(round(high_t_fraction * n))
    if n_high:
        t[:n_high] = torch.randint(high_t_start, T, (n_high,), device=device, generator=generator)
    return t


class PriorTrainingModule(pl.LightningModule):
    """Args:
        image_size, channels: data shape. block_out_channels, layers_per_block, attention_levels: UNet size.
        lr, warmup_steps: AdamW peak rate after a linear warm-up; then a cosine decay to ``lr * min_lr_ratio``
            at ``trainer.max_steps`` (constant if max_steps is unset).
        ema_decay: EMA of the weights, warmed up as min(decay, (1 + n) / (10 + n)) so early EMAs are not stale.
        high_t_fraction, high_t_start: where t is drawn (module docstring).
        sample_every_val: DDIM samples (EMA, 50 steps) logged as an image grid at each validation (0 = off).
        autoencoder: a diffusers ``AutoencoderKL`` folder (``vipaint.training.autoencoder``): the UNet then learns
            the latents s·E(x) (the encoder's mean, scaled to unit variance by its ``scaling_factor``) and
            ``image_size``/``channels`` are the latent's; None trains on pixels.
        init_from: initial weights (network and EMA) from a weights folder: a pixel prior's diffusers folder, or a
            latent prior's (its ``unet/``), e.g. ``weights/cifar10-ldm``, to train a shipped prior on without its
            checkpoint. The folder's UNet must have this config's architecture (a conditional model may have more
            input channels: they start at zero). None: random initial weights.
        prediction_type: what the network regresses, "epsilon" or "v_prediction" (module docstring); saved in the
            scheduler config, which ``priors.external`` reads. An ε-model's weights are a valid warm start for v.
        export_dir: where the EMA weights go at the end of fit; None: the run's own folder
            (``<log_dir>/export``). Shipped folders under ``weights/`` are written only by
            ``python -m vipaint.priors.publish``. export_dtype: "float32" or "float16".
    """

    def __init__(self, image_size: int = 32, channels: int = 3, block_out_channels: list[int] = [64, 128, 128],
                 layers_per_block: int = 2, attention_levels: list[int] = [1], lr: float = 2e-4,
                 warmup_steps: int = 500, min_lr_ratio: float = 1.0, ema_decay: float = 0.999,
                 high_t_fraction: float = 0.0, high_t_start: int = 500, sample_every_val: int = 16,
                 autoencoder: str | None = None, init_from: str | None = None, prediction_type: str = "epsilon",
                 export_dir: str | None = None, export_dtype: str = "float32"):
        super().__init__()
        from diffusers import DDPMScheduler

        if not 0.0 <= high_t_fraction <= 1.0 or not 0 <= high_t_start < 1000:
            raise ValueError(f"need 0 <= high_t_fraction <= 1 and 0 <= high_t_start < 1000, "
                             f"got {high_t_fraction}, {high_t_start}")
        if prediction_type not in TRAINABLE_PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {TRAINABLE_PREDICTIONS}, got {prediction_type!r}")
        if export_dtype not in ("float32", "float16"):
            raise ValueError(f"export_dtype must be 'float32' or 'float16', got {export_dtype!r}")
        self.save_hyperparameters()
        self.unet = build_unet(image_size, channels, block_out_channels, layers_per_block, attention_levels,
                               in_channels=channels + self.condition_channels(channels))
        if init_from:
            self._warm_start(init_from)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                       prediction_type=prediction_type)
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.float(), persistent=False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.vae = self._load_autoencoder(autoencoder, image_size, channels) if autoencoder else None

    def _warm_start(self, folder: str) -> None:
        """Copy the UNet weights of a weights folder (flat, or in ``unet/``) into ``self.unet``, in float32."""
        from diffusers import UNet2DModel

        root = Path(folder)
        sub = "unet" if (root / "unet" / "config.json").is_file() else None
        if not (root / (sub or "") / "config.json").is_file():
            raise FileNotFoundError(f"init_from: {folder} holds no UNet (config.json at its top or in unet/); pass a "
                                    "weights folder such as weights/cifar10-ldm")
        src = UNet2DModel.from_pretrained(str(root), subfolder=sub, torch_dtype=torch.float32, low_cpu_mem_usage=False)
        mine, theirs = self.unet.state_dict(), src.state_dict()
        w, w_src = mine.get("conv_in.weight"), theirs.get("conv_in.weight")
        if w is not None and w_src is not None and w.shape[1] > w_src.shape[1] and w.shape[2:] == w_src.shape[2:]:
            # A conditional model from a prior: the extra input channels start at zero, so at step 0 the network
            # is the prior exactly and learns to use the condition from there.
            theirs["conv_in.weight"] = torch.cat([w_src, w_src.new_zeros(w.shape[0], w.shape[1] - w_src.shape[1],
                                                                          *w.shape[2:])], 1)
        if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
            raise ValueError(f"init_from: the UNet in {folder} has another architecture than this config "
                             f"(block_out_channels {list(src.config.block_out_channels)}, layers_per_block "
                             f"{src.config.layers_per_block}); set the same sizes as its config.json")
        self.unet.load_state_dict(theirs)

    @staticmethod
    def _load_autoencoder(path: str, image_size: int, channels: int):
        """The frozen autoencoder of a latent prior, outside the module tree (not trained, not checkpointed)."""
        from diffusers import AutoencoderKL

        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"autoencoder folder {path} has no config.json: train one with "
                                    "`python train.py fit --config configs/autoencoder_cifar10.yaml` and pass its "
                                    "export folder as --model.init_args.autoencoder")
        vae = AutoencoderKL.from_pretrained(path, low_cpu_mem_usage=False).eval().requires_grad_(False)
        if vae.config.latent_channels != channels:
            raise ValueError(f"the autoencoder in {path} has {vae.config.latent_channels} latent channels; set "
                             f"--model.init_args.channels {vae.config.latent_channels}")
        return vae

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """The training target x_0: pixels, or the scaled latent means of a latent prior."""
        if self.vae is None:
            return x
        vae = self.vae.to(x.device)
        with torch.no_grad():
            return vae.encode(x).latent_dist.mean * vae.config.scaling_factor

    @property
    def prediction_type(self) -> str:
        """What the network regresses, from the scheduler config that is exported with it (the one record of it:
        a subclass's own ``save_hyperparameters`` may not carry the argument)."""
        return self.scheduler.config.prediction_type

    @staticmethod
    def condition_channels(channels: int) -> int:
        """Extra input channels beside z_t: none for a prior (``conditional.ConditionalPriorModule`` adds some)."""
        return 0

    def condition(self, batch: dict, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """What the network sees beside z_t, concatenated on channels: nothing for an unconditional prior."""
        return None

    @staticmethod
    def predict(unet, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The raw network output at (z_t, t), the condition (if any) concatenated to z_t on channels."""
        return unet(z_t if cond is None else torch.cat([z_t, cond], 1), t).sample.float()

    def denoise(self, unet, z_t: torch.Tensor, t: torch.Tensor,
                cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) at (z_t, t) whatever the network predicts (``prior.convert_prediction``), so the ε-MSE curves
        compare across objectives and the samples read either kind of model."""
        ab = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        out = self.predict(unet, z_t, t, cond)
        return convert_prediction(out, z_t, ab.sqrt(), (1 - ab).sqrt(), self.prediction_type)

    def loss(self, x0: torch.Tensor, unet=None, t: torch.Tensor | None = None,
             cond: torch.Tensor | None = None) -> torch.Tensor:
        """MSE per element of the network's target (ε, or v = α_t ε - σ_t x_0), averaged over the batch."""
        unet = unet or self.unet
        if t is None:
            t = sample_timesteps(x0.shape[0], 1000, self.hparams.high_t_fraction, self.hparams.high_t_start,
                                 x0.device)
        eps = torch.randn_like(x0)
        ab = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        target = eps if self.prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
        return F.mse_loss(self.predict(unet, q_sample(x0, eps, ab), t, cond), target)

    def training_step(self, batch, batch_idx):
        x0 = self.to_latent(batch["x"])
        loss = self.loss(x0, cond=self.condition(batch, x0))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: callbacks (the checkpoint) run before the module's batch-end hook,
        # so a checkpoint would hold an EMA one update behind its weights, and a resumed run would lose it.
        self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        n = float(self.ema_updates)
        decay = min(self.hparams.ema_decay, (1 + n) / (10 + n))
        for e, p in zip(self.ema.parameters(), self.unet.parameters()):
            e.lerp_(p, 1 - decay)
        self.ema_updates += 1

    def validation_step(self, batch, batch_idx):
        # Fixed t's and noise, so the curve shows the model, not the draw.
        x0 = self.to_latent(batch["x"])
        g = torch.Generator(device="cpu").manual_seed(batch_idx)
        cond = self.condition(batch, x0, g)
        for t_val in (50, 200, 400, 550, 800):
            t = torch.full((x0.shape[0],), t_val, device=x0.device, dtype=torch.long)
            eps = torch.randn(x0.shape, generator=g).to(x0.device)
            ab = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
            mse = F.mse_loss(self.denoise(self.ema, q_sample(x0, eps, ab), t, cond)[1], eps)
            self.log(f"val/eps_mse_ema_t{t_val}", mse, sync_dist=True, batch_size=x0.shape[0])

    def on_validation_epoch_end(self) -> None:
        n = self.hparams.sample_every_val
        if n:
            log_image_grid(self, "samples_ema", lambda: self.sample(n, steps=50, seed=0), nrow=int(math.sqrt(n)) or 1)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, seed: int = 0) -> torch.Tensor:
        """``n`` DDIM (η = 0) samples from the EMA network as images (n, C, H, W) in [-1, 1]: x̂_0 clipped to
        the pixel range on pixels; latents unclipped, then decoded."""
        from ..schedule import NoiseSchedule, ddim_sample

        sched = NoiseSchedule(self.scheduler.alphas_cumprod)

        def denoise(z, t):
            return self.denoise(self.ema, z, torch.full((n,), t, device=self.device))

        g = torch.Generator(device="cpu").manual_seed(seed)
        shape = (n, self.hparams.channels, self.hparams.image_size, self.hparams.image_size)
        z = torch.randn(shape, generator=g).to(self.device)
        if self.vae is None:
            return ddim_sample(denoise, sched, z, steps)
        z0 = ddim_sample(denoise, sched, z, steps, clip=None)
        return self.vae.to(self.device).decode(z0 / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    def configure_optimizers(self):
        return warmup_cosine_schedule(self, torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr,
                                                              weight_decay=0.0))

    def on_fit_end(self) -> None:
        export_at_fit_end(self, "EMA weights")

    def export(self, path: str | Path) -> Path:
        """Save the EMA UNet (safetensors, ``export_dtype``) and the scheduler config as a diffusers folder: flat
        for a pixel prior (``google/ddpm-cifar10-32`` layout), ``unet/``, ``vae/``, ``scheduler/`` for a latent
        one (``CompVis/ldm-celebahq-256`` layout), which ``priors.external`` loads."""
        path = Path(path)
        dtype = getattr(torch, self.hparams.export_dtype)
        ema = copy.deepcopy(self.ema).to("cpu", dtype)
        if self.vae is None:
            ema.save_pretrained(path, safe_serialization=True)
            self.scheduler.save_pretrained(path)
            return path
        ema.save_pretrained(path / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(path / "scheduler")
        copy.deepcopy(self.vae).to("cpu", torch.float32).save_pretrained(path / "vae", safe_serialization=True)
        return path


def _module_class(class_path: str | None) -> type[PriorTrainingModule]:
    """The training module a checkpoint names (LightningCLI's ``_class_path``): this class or a subclass of it, such
    as ``conditional.ConditionalPriorModule``; this class for checkpoints that name none or an older path."""
    module, _, name = (class_path or "").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else PriorTrainingModule
    except (ImportError, AttributeError):   # a path from before a move: the weights are still a prior's
        return PriorTrainingModule
    if not (isinstance(cls, type) and issubclass(cls, PriorTrainingModule)):
        raise ValueError(f"the checkpoint was written by {class_path}, not a diffusion prior's training module; "
                         "export it with its own module")
    return cls


def export_checkpoint(ckpt_path: str, out_dir: str, dtype: str | None = None) -> Path:
    """Export the EMA weights of a training checkpoint (e.g. ``runs/prior_mnist/checkpoints/last.ckpt``).

    The module is rebuilt from the checkpoint's hyperparameters rather than through ``load_from_checkpoint``, which
    refuses a checkpoint naming another class path (runs from before the move to ``vipaint.training``)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cls = _module_class(ckpt["hyper_parameters"].get("_class_path"))
    # Lightning saves the init arguments of the whole class chain; a subclass fixes some of its parent's.
    accepted = inspect.signature(cls).parameters
    module = cls(**{k: v for k, v in ckpt["hyper_parameters"].items() if k in accepted})
    module.load_state_dict(ckpt["state_dict"])
    if dtype:
        module.hparams.export_dtype = dtype
    return module.export(out_dir)


if __name__ == "__main__":  # python -m vipaint.training.prior CKPT OUT_DIR
    import sys

    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m vipaint.training.prior CHECKPOINT OUT_DIR  (exports the EMA weights)")
    # Through the importable module, not __main__: the checkpoint names vipaint.training.prior.PriorTrainingModule.
    from vipaint.training.prior import export_checkpoint as _export

    print(_export(sys.argv[1], sys.argv[2]))

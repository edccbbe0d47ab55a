"""Adapters that present diffusers models as a ``Prior`` (k-diffusion's ``external.py`` in spirit).

* ``PixelPrior``: a ``UNet2DModel`` + its scheduler config (``google/ddpm-ema-church-256`` layout:
  the UNet's config and weights at the top of the folder, or in ``unet/``; ``scheduler_config.json``
  at the top or in ``scheduler/``).
* ``LatentPrior``: ``VQModel`` or ``AutoencoderKL`` + UNet (``CompVis/ldm-celebahq-256`` layout:
  ``unet/``, ``vqvae/`` or ``vae/``, ``scheduler/``). Latents are scaled by the autoencoder's
  ``scaling_factor`` inside ``encode``/``decode``, so the math sees unit-scale latents; ``decode`` is
  differentiable (the likelihood is always computed on pixels).

``pretrained`` is a local folder, a hub id, or the name of a prior shipped in this repository
(``shipped.SHIPPED_PRIORS``: ``"vipaint-mnist"``, the default, trained here by ``python train.py``; its card is
``weights/mnist-ddpm/README.md``). ``"tiny-random"`` builds (once) and loads a tiny randomly initialised
UNet — a placeholder that produces noise, for tests only. A prior loaded from a folder carries the settings
tuned for it (``Prior.tuned``, the folder's ``vipaint.json``).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..decoder_error import DecoderError
from ..prior import Prior
from ..schedule import NoiseSchedule
from .shipped import DEFAULT_PRIOR, SHIPPED_PRIORS, NotShipped, shipped_folder, tuned_settings

__all__ = ["PixelPrior", "LatentPrior", "PriorLoadError", "load_prior", "load_decoder_error", "tiny_random_unet",
           "TINY_RANDOM", "DECODER_ERROR_NAME"]

log = logging.getLogger(__name__)
TINY_RANDOM = "tiny-random"
#: The autoencoder's measured error field, in its subfolder (``vae/`` or ``vqvae/``) of a latent prior.
DECODER_ERROR_NAME = "decoder_error.safetensors"


class PriorLoadError(RuntimeError):
    pass


def _load(cls, pretrained: str, subfolders: tuple[str | None, ...], what: str, **kwargs):
    """``cls.from_pretrained`` trying each subfolder in turn; a clear error if none works."""
    errors = []
    local = Path(pretrained).expanduser()
    if not local.exists() and _looks_local(pretrained):
        raise PriorLoadError(f"the prior folder '{pretrained}' does not exist (--model.prior.init_args.pretrained: "
                             "a shipped name such as 'vipaint-mnist', a local diffusers folder or a hub id)")
    if "Scheduler" not in cls.__name__:
        kwargs.setdefault("low_cpu_mem_usage", False)  # else diffusers nags about `accelerate` on every load
        # Weights may ship as float16 (smaller folders); the math runs in float32 (bf16 only by autocast).
        kwargs.setdefault("torch_dtype", torch.float32)
    for sub in subfolders:
        if local.exists() and not (local / (sub or "") / ("scheduler_config.json" if "Scheduler" in cls.__name__ else "config.json")).exists():
            continue
        try:
            return cls.from_pretrained(str(local) if local.exists() else pretrained, subfolder=sub, **kwargs)
        except (OSError, ValueError, EnvironmentError) as e:  # hub unreachable, missing files, bad config
            errors.append(f"{sub or '.'}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    where = "the local folder" if local.exists() else "the Hugging Face hub (offline or no such id?)"
    raise PriorLoadError(
        f"could not load the {what} of '{pretrained}' from {where}; tried subfolders "
        f"{[s or '.' for s in subfolders]} ({'; '.join(errors) or 'no config.json found'}). "
        "On a machine without internet, download the model elsewhere (e.g. `huggingface-cli download "
        f"{pretrained} --local-dir DIR`) and pass the folder: --model.prior.init_args.pretrained DIR")


def _looks_local(pretrained: str) -> bool:
    """A path, not a hub id ("org/name"): absolute, relative with ./ or ~, or more than one separator."""
    return pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1 or "\\" in pretrained


def _schedule(pretrained: str, **kwargs) -> tuple[NoiseSchedule, str]:
    from diffusers import DDPMScheduler

    sched = _load(DDPMScheduler, pretrained, ("scheduler", None), "scheduler", **kwargs)
    return NoiseSchedule(sched.alphas_cumprod), sched.config.prediction_type


def tiny_random_unet(path: str | os.PathLike, image_size: int = 32, channels: int = 3, seed: int = 0) -> Path:
    """Save a tiny, randomly initialised ``UNet2DModel`` + DDPM scheduler at ``path`` (once) and return it."""
    from diffusers import DDPMScheduler, UNet2DModel

    path = Path(path)
    if (path / "config.json").exists() and (path / "scheduler_config.json").exists():
        return path
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    unet.save_pretrained(tmp)
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(tmp)
    try:
        tmp.replace(path)          # atomic publish; another process may have won the race
    except OSError:
        if not (path / "config.json").exists():
            raise
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _resolve(pretrained: str) -> str:
    if pretrained in SHIPPED_PRIORS:
        try:
            return str(shipped_folder(pretrained))
        except NotShipped as e:
            raise PriorLoadError(str(e)) from None
    if pretrained != TINY_RANDOM:
        return pretrained
    cache = Path(os.environ.get("VIPAINT_CACHE", Path.home() / ".cache" / "vipaint"))
    banner = ("\n" + "!" * 78 + "\n!! vipaint: using a TINY RANDOMLY INITIALISED UNet as the prior: outputs are NOISE.\n"
              "!! It only shows that the pipeline runs. Point --model.prior.init_args.pretrained at a\n"
              "!! trained diffusers model (a local folder or a hub id such as google/ddpm-cifar10-32).\n" + "!" * 78)
    warnings.warn(banner, stacklevel=3)
    return str(tiny_random_unet(cache / "tiny-random-unet-32"))


class _DiffusersPrior(Prior):
    """Speed options shared by the diffusers adapters."""

    def _configure(self, precision: str, channels_last: bool, compile: bool) -> None:
        if precision not in ("32", "bf16"):
            raise ValueError(f"precision must be '32' or 'bf16', got {precision!r}")
        self.precision, self.channels_last = precision, channels_last
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        # Compiled lazily, outside the module tree, so state_dict keys stay those of diffusers.
        object.__setattr__(self, "_compiled", torch.compile(self.unet) if compile else None)

    def _call_unet(self, z_t: Tensor, t: Tensor) -> Tensor:
        net = self._compiled if self._compiled is not None else self.unet
        return net(z_t, t).sample


class PixelPrior(_DiffusersPrior):
    """A diffusers ``UNet2DModel`` on pixels.

    Args:
        pretrained: a shipped prior's name (default "vipaint-mnist"), a local folder or a hub id
            (``google/ddpm-ema-church-256``), or "tiny-random" (tests only).
        local_files_only: never touch the network (diffusers' flag).
        data_std: assumed std of clean pixels in [-1, 1] units, for r_t² (``Prior.denoiser_variance``).
        precision: "32" or "bf16" (autocast of the network only; see ``Prior.precision``).
        channels_last: NHWC memory format for the network (faster convolutions on GPUs).
        compile: ``torch.compile`` the network call (pays off for long runs; compiling takes minutes).
    """

    def __init__(self, pretrained: str = DEFAULT_PRIOR, local_files_only: bool = False, data_std: float = 0.5,
                 precision: str = "32", channels_last: bool = False, compile: bool = False):
        from diffusers import UNet2DModel

        pretrained = _resolve(pretrained)
        kw = {"local_files_only": local_files_only}
        unet = _load(UNet2DModel, pretrained, (None, "unet"), "UNet", **kw)
        schedule, prediction_type = _schedule(pretrained, **kw)
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (unet.config.in_channels, *size)
        super().__init__(schedule, latent_shape=shape, image_shape=shape)
        self.unet = unet
        self.prediction_type = prediction_type
        self.data_std = data_std
        self.name = pretrained
        self.tuned = tuned_settings(pretrained if Path(pretrained).is_dir() else None)
        self._configure(precision, channels_last, compile)
        self.freeze()

    def network_output(self, z_t: Tensor, t: Tensor) -> Tensor:
        if self.channels_last:
            z_t = z_t.contiguous(memory_format=torch.channels_last)
        out = self._call_unet(z_t, t)
        # Models trained with learned variances (out_channels = 2C) put the mean prediction first.
        return out[:, : z_t.shape[1]]


class LatentPrior(_DiffusersPrior):
    """A latent diffusion model: UNet on latents of a ``VQModel`` or ``AutoencoderKL``.

    Args:
        pretrained: a shipped name, a folder or a hub id in the ``CompVis/ldm-celebahq-256`` layout.
        autoencoder_subfolder: "vqvae" (VQModel) or "vae" (AutoencoderKL); None tries both.
        data_std: std of the clean latents for r_t²: 1 for latents scaled to unit variance by the autoencoder's
            ``scaling_factor`` (what the LDM recipe and ``training.autoencoder`` do), not the pixels' 0.5.
        decoder_error: the autoencoder's measured error field (``vipaint.decoder_error``; written by
            ``python -m bench.decoder_error``): "auto" (default) loads ``DECODER_ERROR_NAME`` from the
            autoencoder's folder where it is there, a path loads that file, None takes the decoder as exact.
        Other arguments as ``PixelPrior``'s.
    """

    def __init__(self, pretrained: str, autoencoder_subfolder: str | None = None, local_files_only: bool = False,
                 data_std: float = 1.0, precision: str = "32", channels_last: bool = False, compile: bool = False,
                 decoder_error: str | None = "auto"):
        from diffusers import AutoencoderKL, UNet2DModel, VQModel

        pretrained = _resolve(pretrained)
        kw = {"local_files_only": local_files_only}
        unet = _load(UNet2DModel, pretrained, ("unet",), "UNet", **kw)
        schedule, prediction_type = _schedule(pretrained, **kw)
        if autoencoder_subfolder in (None, "vqvae"):
            try:
                ae = _load(VQModel, pretrained, ("vqvae",), "autoencoder", **kw)
            except PriorLoadError:
                if autoencoder_subfolder == "vqvae":
                    raise
                ae = _load(AutoencoderKL, pretrained, ("vae",), "autoencoder", **kw)
        else:
            ae = _load(AutoencoderKL, pretrained, (autoencoder_subfolder,), "autoencoder", **kw)
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        factor = 2 ** (len(ae.config.block_out_channels) - 1)
        super().__init__(schedule, latent_shape=(unet.config.in_channels, *size),
                         image_shape=(ae.config.in_channels, size[0] * factor, size[1] * factor))
        self.unet, self.autoencoder = unet, ae
        self._configure(precision, channels_last, compile)
        self.scaling_factor = float(getattr(ae.config, "scaling_factor", 1.0) or 1.0)
        self.prediction_type = prediction_type
        self.data_std = data_std
        self.name = pretrained
        self.tuned = tuned_settings(pretrained if Path(pretrained).is_dir() else None)
        if decoder_error == "auto":
            found = [Path(pretrained) / sub / DECODER_ERROR_NAME for sub in ("vae", "vqvae")]
            decoder_error = next((str(p) for p in found if p.is_file()), None)
        if decoder_error is not None:
            self.decoder_error = load_decoder_error(decoder_error, self.image_shape)
        self.freeze()

    @property
    def is_latent(self) -> bool:
        return True

    def network_output(self, z_t: Tensor, t: Tensor) -> Tensor:
        if self.channels_last:
            z_t = z_t.contiguous(memory_format=torch.channels_last)
        return self._call_unet(z_t, t)[:, : z_t.shape[1]]

    def encode(self, x: Tensor) -> Tensor:
        enc = self.autoencoder.encode(x)
        z = enc.latents if hasattr(enc, "latents") else enc.latent_dist.mean
        return z * self.scaling_factor

    def decode(self, z0: Tensor) -> Tensor:
        return self.autoencoder.decode(z0 / self.scaling_factor).sample


def load_decoder_error(path: str | os.PathLike, image_shape: tuple[int, int, int]) -> DecoderError:
    """The ``DecoderError`` saved at ``path`` (safetensors, key "kernel"), checked against the prior's images."""
    from safetensors.torch import load_file

    try:
        err = DecoderError(load_file(str(path))["kernel"])
    except (OSError, KeyError, ValueError) as e:
        raise PriorLoadError(f"cannot read the decoder error {path} ({type(e).__name__}: {e}); measure it again with "
                             "python -m bench.decoder_error, or pass decoder_error null") from None
    if err.shape != tuple(image_shape):
        raise PriorLoadError(f"the decoder error {path} was measured on {err.shape} images, the prior makes "
                             f"{tuple(image_shape)}: measure it again with python -m bench.decoder_error")
    return err


def load_prior(pretrained: str = DEFAULT_PRIOR, **kwargs) -> Prior:
    """A ``Prior`` from a shipped name, a local diffusers folder or a hub id: ``LatentPrior`` where the folder
    holds ``unet/`` beside ``vae/`` or ``vqvae/`` (the hub's latent layout), else ``PixelPrior``."""
    folder = SHIPPED_PRIORS.get(pretrained, Path(pretrained).expanduser())
    latent = (folder / "unet").is_dir() and ((folder / "vae").is_dir() or (folder / "vqvae").is_dir())
    return (LatentPrior if latent else PixelPrior)(pretrained, **kwargs)

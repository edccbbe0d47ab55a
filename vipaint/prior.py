r"""The one interface every diffusion prior presents to the math: a denoiser on a VP schedule (docs/method.md §3).

Notation (see ``schedule.py``): ``z_t = α_t z_0 + σ_t ε``; for pixel priors z ≡ x.

===================  ============================================================
``denoise(z_t, t)``  (x̂_0, ε̂): the clean-latent estimate E[z_0 | z_t] and the noise
                     estimate, from ONE network evaluation
``x0_hat(z_t, t)``   first element of ``denoise``
``eps_hat(z_t, t)``  second element of ``denoise``
``encode(x)``        pixels (B,C,H,W) in [-1,1] -> latents z_0 (identity for pixel priors)
``decode(z_0)``      latents -> pixels, differentiable (identity for pixel priors)
``latent_shape``     (C, H, W) of z
``schedule``         the ``NoiseSchedule`` of the model (ᾱ_t for t = 0..T-1)
===================  ============================================================

Networks predict ε, x_0 or v; ``Prior.denoise`` converts once, using α_t² + σ_t² = 1:

* epsilon: ``x̂_0 = (z_t - σ_t ε̂) / α_t``
* sample:  ``ε̂ = (z_t - α_t x̂_0) / σ_t``
* v:       ``x̂_0 = α_t z_t - σ_t v̂``,  ``ε̂ = σ_t z_t + α_t v̂``  (Salimans & Ho 2022)

This module imports only torch: the adapters for diffusers models live in ``vipaint.priors.external``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .schedule import NoiseSchedule

__all__ = ["Prior", "PREDICTION_TYPES", "convert_prediction", "native_bf16"]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


_NATIVE_BF16: dict[str, bool] = {}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively: a CUDA GPU that supports bf16, or a CPU with
    AVX512-BF16 or AMX. Elsewhere autocast emulates bf16 and is far *slower* than float32 (measured on an
    AVX2-only CPU, 2026-12-01: the MNIST prior's forward pass 16.5x slower), so ``precision="bf16"`` falls
    back to float32 there, with one warning per device type."""
    kind = torch.device(device).type
    if kind not in _NATIVE_BF16:
        if kind == "cuda":
            ok = torch.cuda.is_bf16_supported()
        elif kind == "cpu":
            ok = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        else:
            ok = True   # trust the user on other backends
        if not ok:
            import warnings

            warnings.warn(f"precision 'bf16' requested, but this {kind} has no native bf16 (CPU: AVX512-BF16 or "
                          "AMX); emulated bf16 is several times slower than float32, so the network runs float32",
                          stacklevel=3)
        _NATIVE_BF16[kind] = ok
    return _NATIVE_BF16[kind]


def convert_prediction(output: Tensor, z_t: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε̂) from a network output of the given type. alpha/sigma broadcast to z_t, shape (B,1,1,1)."""
    if prediction_type == "epsilon":
        return (z_t - sigma * output) / alpha, output
    if prediction_type == "sample":
        return output, (z_t - alpha * output) / sigma
    if prediction_type == "v_prediction":
        return alpha * z_t - sigma * output, sigma * z_t + alpha * output
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


class Prior(nn.Module):
    """Base class of diffusion priors. Subclasses implement ``network_output`` and set ``prediction_type``.

    The prior is frozen: its parameters never receive gradients (``freeze`` is called by subclasses);
    gradients flow only to inputs (z_t) and from there to the variational parameters.
    """

    prediction_type: str = "epsilon"
    #: What the bound and refiner assume for the spread of clean data (in [-1,1] units), used for the
    #: one-step denoiser variance r_t² (see ``denoiser_variance``).
    data_std: float = 0.5
    #: Range that decoded samples are clamped to at the end of refinement (None: no clamping).
    output_range: tuple[float, float] | None = (-1.0, 1.0)
    #: Network precision: "32" or "bf16" (autocast around the network call only; parameters, inputs,
    #: outputs and all bound arithmetic stay float32). "bf16" on a device without native bf16 runs float32,
    #: with a warning (``native_bf16``).
    precision: str = "32"
    #: VIPaint settings tuned for this prior (dotted names of ``pipeline.TUNABLE`` -> value), shipped with its
    #: weights; applied only where a run leaves the setting unset.
    tuned: dict[str, float] = {}

    def __init__(self, schedule: NoiseSchedule, latent_shape: tuple[int, int, int], image_shape: tuple[int, int, int]):
        super().__init__()
        self.schedule = schedule
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.image_shape = tuple(int(s) for s in image_shape)
        #: The autoencoder's error field Σ_e (``decoder_error.DecoderError``, a submodule) where it was measured and
        #: shipped with the prior (latent priors); None: the decoder is taken as exact (always for pixel priors).
        self.decoder_error = None

    def freeze(self) -> "Prior":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Prior":
        # A prior is never trained here; keeping eval mode means dropout stays off even when Lightning
        # calls .train() on the parent module.
        return super().train(False)

    # -- to be implemented ---------------------------------------------------------------------------
    def network_output(self, z_t: Tensor, t: Tensor) -> Tensor:
        """Raw network prediction (of ``prediction_type``) for z_t (B, *latent_shape) at integer t (B,)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------------
    def _t_batch(self, t: Tensor | int, batch: int, device: torch.device) -> Tensor:
        t = torch.as_tensor(t, device=device)
        if t.is_floating_point():
            raise TypeError("t must be an integer timestep index")
        return t.long().expand(batch) if t.ndim == 0 else t.long()

    def denoise(self, z_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """(x̂_0, ε̂), each (B, *latent_shape), from one network call."""
        if tuple(z_t.shape[1:]) != self.latent_shape:
            raise ValueError(f"z_t has shape {tuple(z_t.shape[1:])}, the prior expects {self.latent_shape}")
        t = self._t_batch(t, z_t.shape[0], z_t.device)
        coef_shape = (-1,) + (1,) * (z_t.ndim - 1)
        alpha = self.schedule.alpha(t).to(z_t.dtype).reshape(coef_shape)
        sigma = self.schedule.sigma(t).to(z_t.dtype).reshape(coef_shape)
        with torch.autocast(z_t.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16" and native_bf16(z_t.device)):
            output = self.network_output(z_t, t)
        return convert_prediction(output.to(z_t.dtype), z_t, alpha, sigma, self.prediction_type)

    def x0_hat(self, z_t: Tensor, t: Tensor | int) -> Tensor:
        return self.denoise(z_t, t)[0]

    def eps_hat(self, z_t: Tensor, t: Tensor | int) -> Tensor:
        return self.denoise(z_t, t)[1]

    def encode(self, x: Tensor) -> Tensor:
        """Pixels -> z_0. Identity for pixel priors."""
        return x

    def decode(self, z0: Tensor) -> Tensor:
        """z_0 -> pixels, differentiable. Identity for pixel priors."""
        return z0

    @property
    def is_latent(self) -> bool:
        return False

    def denoiser_variance(self, t: Tensor | int) -> Tensor:
        r"""r_t² = Var[x_0 | z_t] for data of std ``data_std`` (per element, isotropic approximation):

        ``r_t² = s² σ_t² / (α_t² s² + σ_t²)``, exact for x_0 ~ N(m, s² I) (ΠGDM, Song et al. 2023).
        In the prior's own units: latent units for latent priors, whose likelihood carries it to the pixels
        through the decoder's Jacobian (``likelihood.GaussianLikelihood``, reach "residual").
        """
        ab = self.schedule.alpha_bar(t)
        s2 = self.data_std**2
        return s2 * (1 - ab) / (ab * s2 + (1 - ab))

r"""A model trained for the task, in the harness beside the training-free methods: a conditional DDPM
ε̂(z_t, t | y, m) whose UNet sees the noisy image with the observation and the keep mask as extra input channels
(``vipaint.training.conditional``; the paper's open question 2: how far is a specialist ahead?).

| symbol | here | meaning |
|---|---|---|
| z_t | ``z`` | noisy image (B, C, H, W) at integer timestep t |
| y, m | ``cond`` | the observation m ⊙ (x + σ_y ε) (zero in the hole) and the keep mask (B, 1, H, W), 1 = observed |
| ε̂ | return value | the network's noise estimate, float32 |

Folder layout: a diffusers ``UNet2DModel`` (``in_channels = 2C + 1``, ``out_channels = C``) with its DDPM
scheduler config, flat like a pixel prior's (``export`` of the training module). It is not a ``Prior``: its
denoiser needs (y, m), so ``Prior.denoise(z, t)`` cannot express it; ``baselines.conditional`` samples it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..schedule import NoiseSchedule
from .external import PriorLoadError, _load, _schedule
from .shipped import SHIPPED_CONDITIONAL, NotShipped, shipped_folder

__all__ = ["ConditionalDenoiser", "load_conditional"]


class ConditionalDenoiser(torch.nn.Module):
    """ε̂(z_t, t | y, m) of a conditional UNet: ``model(z, t, cond)`` with ``cond = cat(y, m)`` on channels.

    Attributes: ``schedule`` (its own ``NoiseSchedule``), ``image_shape`` (C, H, W), ``name``, ``output_range``
    (pixels in [-1, 1], where DDIM clips x̂_0).
    """

    output_range = (-1.0, 1.0)

    def __init__(self, unet, schedule: NoiseSchedule, name: str = "conditional"):
        super().__init__()
        c_in, c = unet.config.in_channels, unet.config.out_channels
        if c_in != 2 * c + 1:
            raise ValueError(f"'{name}' is not a conditional inpainting model: its UNet takes {c_in} input channels, "
                             f"a conditional one takes 2·{c} + 1 = {2 * c + 1} (image, observation, mask)")
        self.unet, self.schedule, self.name = unet.eval().requires_grad_(False), schedule, name
        size = unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.image_shape = (c, h, w)

    def forward(self, z: Tensor, t: int, cond: Tensor) -> Tensor:
        """ε̂ (B, C, H, W) for z_t (B, C, H, W) at integer timestep t, ``cond`` (B, C + 1, H, W)."""
        tt = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        return self.unet(torch.cat([z, cond.to(z.dtype)], 1), tt).sample.float()


def load_conditional(pretrained: str) -> ConditionalDenoiser:
    """A conditional model from a shipped name (``shipped.SHIPPED_CONDITIONAL``: "vipaint-mnist-inpaint"), a
    local diffusers folder or a hub id."""
    from diffusers import UNet2DModel

    path = pretrained
    if pretrained in SHIPPED_CONDITIONAL:
        try:
            path = str(shipped_folder(pretrained))
        except NotShipped as e:
            raise PriorLoadError(str(e)) from None
    unet = _load(UNet2DModel, path, (None, "unet"), "conditional UNet")
    schedule, prediction = _schedule(path)
    if prediction != "epsilon":
        raise PriorLoadError(f"the conditional model '{pretrained}' predicts {prediction!r}; only ε-models are supported")
    return ConditionalDenoiser(unet, schedule, name=pretrained)

"""The amortized encoder: (encoded observation, keep_mask) -> VIPaint-K's λ = (μ, logvar, γ) per keypoint.

It works at the prior's latent resolution: inputs are z_y = E(Aᵀ-image of y) (C channels) and the
keep_mask resized to the latent grid (1 channel; all ones for blur/super-resolution), outputs are
3·K·C channels read as residuals on top of the hand-made initialisation
(``HierarchicalPosterior.initial_values``):

    λ = λ_init(z_y) + s ⊙ net(z_y, m),   the last convolution zero-initialised

so an untrained encoder reproduces the hand-made λ exactly and training starts from the baseline.
s is (scale_mu, scale_logvar, scale_gamma), so residual units stay comparable across the three groups.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipaint.atomic import atomic_save_json, atomic_write_bytes
from vipaint.operators import UnsupportedOperator
from vipaint.posterior import HierarchicalPosterior
from vipaint.priors.shipped import SHIPPED_ENCODERS

__all__ = ["AmortizedEncoder", "save_encoder", "load_encoder", "shipped_encoder_for", "encoder_for", "training_meta", "predict_posterior", "AmortizedInit", "WEIGHTS_NAME", "CONFIG_NAME"]

WEIGHTS_NAME, CONFIG_NAME = "encoder.safetensors", "config.json"


class _ResBlock(nn.Module):
    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                  nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class AmortizedEncoder(nn.Module):
    """Args:
        latent_channels: C of the prior's latent. n_keypoints: K.
        width, depth: hidden channels and residual blocks (full resolution, then one downsampled stage).
        scale_mu, scale_logvar, scale_gamma: output scaling of the residuals per parameter group.
    """

    def __init__(self, latent_channels: int = 3, n_keypoints: int = 2, width: int = 64, depth: int = 2,
                 scale_mu: float = 1.0, scale_logvar: float = 0.5, scale_gamma: float = 2.0):
        super().__init__()
        self.latent_channels, self.n_keypoints = latent_channels, n_keypoints
        groups = min(8, width)
        self.stem = nn.Conv2d(latent_channels + 1, width, 3, padding=1)
        self.high = nn.Sequential(*[_ResBlock(width, groups) for _ in range(depth)])
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.low = nn.Sequential(*[_ResBlock(width, groups) for _ in range(depth)])
        self.out_norm = nn.GroupNorm(groups, width)
        self.out = nn.Conv2d(width, 3 * n_keypoints * latent_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("scales", torch.tensor([scale_mu, scale_logvar, scale_gamma]), persistent=False)
        self.config = {"latent_channels": latent_channels, "n_keypoints": n_keypoints, "width": width, "depth": depth,
                       "scale_mu": scale_mu, "scale_logvar": scale_logvar, "scale_gamma": scale_gamma}

    def forward(self, z_y: Tensor, keep_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Residuals (Δμ, Δlogvar, Δγ), each (B, K, C, h, w), for z_y (B, C, h, w) and keep_mask (B, 1, H, W)."""
        m = F.interpolate(keep_mask.to(z_y.dtype), size=z_y.shape[-2:], mode="area")
        h = self.high(self.stem(torch.cat([z_y, m], dim=1)))
        low = self.low(self.down(h))
        h = h + F.interpolate(low, size=h.shape[-2:], mode="nearest")
        r = self.out(F.silu(self.out_norm(h)))
        B, (C, hh, ww) = z_y.shape[0], z_y.shape[1:]
        r = r.reshape(B, 3, self.n_keypoints, C, hh, ww) * self.scales.to(r.dtype).reshape(1, 3, 1, 1, 1, 1)
        return r[:, 0], r[:, 1], r[:, 2]


def save_encoder(encoder: AmortizedEncoder, folder: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``encoder.safetensors`` (float32) and ``config.json`` (constructor arguments, plus ``meta``: the
    keypoints and init settings it was trained for) into ``folder``, each file atomically."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in encoder.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, save(state))
    atomic_save_json(folder / CONFIG_NAME, {"encoder": encoder.config, **(meta or {})})
    return folder


def load_encoder(path: str | os.PathLike) -> tuple[AmortizedEncoder, dict]:
    """(encoder in eval mode, its config.json) from a folder written by ``save_encoder`` or a training checkpoint
    of ``amortized.module.AmortizedModule`` (.ckpt). Errors name the file and what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise ValueError(f"{path} is not an encoder folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
        cfg = json.loads((path / CONFIG_NAME).read_text())
        state, kwargs = load_file(str(path / WEIGHTS_NAME)), cfg["encoder"]
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # missing, truncated, not a torch file (UnpicklingError), ...
            raise ValueError(f"cannot read the encoder checkpoint {path}: {e}") from e
        hp = dict(ckpt.get("hyper_parameters", {}))
        state = {k.removeprefix("encoder."): v for k, v in ckpt.get("state_dict", {}).items()
                 if k.startswith("encoder.")}
        if not state:
            raise ValueError(f"{path} holds no encoder weights (expected an AmortizedModule checkpoint)")
        w = state["stem.weight"]
        kwargs = {"latent_channels": w.shape[1] - 1, "n_keypoints": state["out.weight"].shape[0] // (3 * (w.shape[1] - 1)),
                  "width": hp.get("width", 64), "depth": hp.get("depth", 2)}
        cfg = {"encoder": kwargs, **_meta_from_hparams(hp, ckpt.get("global_step"))}
    encoder = AmortizedEncoder(**kwargs)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"the encoder weights in {path} do not match its configuration {kwargs}: {e}") from e
    return encoder.eval().requires_grad_(False), cfg


def training_meta(config, operator, global_step: int | None = None, prior_name: str | None = None) -> dict:
    """What an encoder was trained for: the keypoints (nominal 1000-step levels, ``VIPaintConfig.keypoints``),
    the init settings its residuals are relative to, the observation model, the prior and the training steps.
    ``config``: a ``VIPaintConfig``; ``operator``: an ``OperatorConfig``."""
    return {"keypoints": [int(k) for k in config.keypoints], "eta": config.eta, "init_gamma": config.init.gamma,
            "init_var_scale": config.init.var_scale, "operator": {"name": operator.name, "sigma_y": operator.sigma_y},
            "prior": prior_name, "global_step": global_step}


def _meta_from_hparams(hparams: dict, global_step: int | None) -> dict:
    """``training_meta`` from an ``AmortizedModule`` checkpoint's (plain) hyperparameters."""
    from vipaint.operators import OperatorConfig
    from vipaint.pipeline import InitConfig, VIPaintConfig

    vip = dict(hparams.get("vipaint") or {})
    config = VIPaintConfig(keypoints=tuple(vip.get("keypoints") or VIPaintConfig.keypoints),
                           eta=vip.get("eta", VIPaintConfig.eta), init=InitConfig(**(vip.get("init") or {})))
    op = dict(hparams.get("operator") or {})
    return training_meta(config, OperatorConfig(**op), global_step)


def predict_posterior(encoder: AmortizedEncoder, prior, keypoints: list[int], operator, y: Tensor,
                      keep_mask: Tensor, config) -> HierarchicalPosterior:
    """λ = hand-made init + encoder residuals, as a posterior differentiable w.r.t. the encoder (training).
    ``keypoints``: resolved timestep indices; ``config``: the ``VIPaintConfig`` (eta, init)."""
    with torch.no_grad():
        z_y = prior.encode(operator.to_image(y))
    base = HierarchicalPosterior(keypoints, prior.latent_shape, batch=y.shape[0], eta=config.eta).to(y.device)
    mu0, logvar0, gamma0 = base.initial_values(prior, z_y, gamma=config.init.gamma, var_scale=config.init.var_scale)
    d_mu, d_logvar, d_gamma = encoder(z_y, keep_mask)
    return HierarchicalPosterior.from_tensors(keypoints, mu0 + d_mu, logvar0 + d_logvar, gamma0 + d_gamma,
                                              eta=config.eta)


class AmortizedInit:
    """An ``Initialiser`` (``vipaint.pipeline``): the encoder's λ for a batch whose keep mask is ``keep_mask``, as a
    fresh posterior whose parameters are leaves, which the per-image fit then fine-tunes."""

    def __init__(self, encoder: AmortizedEncoder, keep_mask: Tensor):
        self.encoder, self.keep_mask = encoder, keep_mask

    def __call__(self, prior, operator, y: Tensor, keypoints: list[int], config, generator=None):
        with torch.no_grad():
            pred = predict_posterior(self.encoder, prior, keypoints, operator, y, self.keep_mask, config)
        post = HierarchicalPosterior(keypoints, prior.latent_shape, batch=y.shape[0], eta=config.eta)
        post.load_parameters(pred.mu.float(), pred.logvar.float(), pred.gamma.float())
        return post.to(y.device)


def shipped_encoder_for(prior) -> str | None:
    """The shipped encoder folder of a shipped prior (matched by the folder it was loaded from), else None."""
    name = getattr(prior, "name", None)
    if not name:
        return None
    folder = SHIPPED_ENCODERS.get(Path(name).resolve())
    if folder is None:
        return None
    if not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(f"the shipped encoder is missing from {folder}: the checkout is incomplete")
    return str(folder)


def encoder_for(prior, keypoints: list[int], path: str | os.PathLike | None = None,
                operator: str = "inpainting") -> AmortizedEncoder:
    """The encoder that initialises VIPaint-K on ``prior`` at the resolved ``keypoints`` (timestep indices) for
    observations of ``operator`` (its name).

    ``path``: an encoder folder or an ``AmortizedModule`` checkpoint; None takes the shipped prior's shipped
    encoder. Errors name what does not match (no encoder for this prior, K, latent channels, keypoints, operator).
    """
    path = path or shipped_encoder_for(prior)
    if not path:
        raise ValueError("init='amortized' needs an encoder for this prior (--model.encoder_ckpt PATH: an encoder "
                         "folder or a checkpoint of `python train.py fit --config configs/amortized_mnist.yaml`); "
                         "only the shipped prior 'vipaint-mnist' has a shipped encoder")
    encoder, cfg = load_encoder(path)
    enc = cfg["encoder"]
    if (enc["latent_channels"], enc["n_keypoints"]) != (prior.latent_shape[0], len(keypoints)):
        raise ValueError(f"the encoder in {path} predicts {enc['n_keypoints']} keypoints of {enc['latent_channels']} "
                         f"channels; this run has K={len(keypoints)} on a prior with latent shape "
                         f"{tuple(prior.latent_shape)} (set --model.vipaint.keypoints to the encoder's)")
    trained = cfg.get("keypoints")
    if trained and prior.schedule.keypoints(tuple(trained)) != list(keypoints):
        raise ValueError(f"the encoder in {path} was trained for keypoints {trained}, this run uses {list(keypoints)}")
    # An encoder reads (observation, keep mask) as its training operator made them: a blurred image is not a
    # partly observed one.
    seen = (cfg.get("operator") or {}).get("name", "inpainting")
    if seen != operator:
        raise UnsupportedOperator(f"the encoder in {path} was trained on {seen} observations, this run's operator "
                                  f"is {operator} (use init 'hand', or an encoder trained for {operator})")
    return encoder


if __name__ == "__main__":  # python -m amortized.encoder CKPT DIR: export a training checkpoint's encoder
    import sys

    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m amortized.encoder CHECKPOINT.ckpt OUTPUT_DIR")
    enc, meta = load_encoder(sys.argv[1])
    meta.pop("encoder")
    print(f"wrote {save_encoder(enc, sys.argv[2], meta)}")

"""LPIPS loading that works on offline machines, plus the masked LPIPS used by the recon loss.

``lpips.LPIPS(pretrained=True)`` ships its linear heads inside the wheel but fetches the
ImageNet backbone (AlexNet / VGG16) from torchvision's servers, which fails on compute nodes
without internet. :func:`load_lpips` can instead build the network with a random backbone and
load the backbone from a local safetensors file whose keys follow the ``lpips`` state-dict
names (``net.slice1.0.weight``, ...). Where to find that file:

1. the ``backbone_path`` argument: a ``.safetensors`` file, or a directory holding
   ``<net>_backbone.safetensors``;
2. else the directory of the ``lpips`` resource (``vipaint.resources``: the environment variable
   ``VIPAINT_LPIPS_BACKBONE_DIR``);
3. else the normal torchvision download.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import lpips
import torch
from safetensors.torch import load_file

from .. import resources

__all__ = ["load_lpips", "masked_lpips", "lpips_ready", "LPIPS_MIN_SIZE"]

#: The shortest side LPIPS is computed at: its backbones pool by 16-32x, so a 28x28 or 32x32 image would reach the
#: deepest layers as 1-2 cells; smaller images are upsampled first (bilinear), for scoring and for the loss alike.
LPIPS_MIN_SIZE = 64

_ENV = resources.RESOURCES["lpips"].env

# lpips accepts "vgg16" as an alias of "vgg"; the backbone files are named after the short form.
_NET_ALIASES = {"alex": "alex", "vgg": "vgg", "vgg16": "vgg", "squeeze": "squeeze"}

_CACHE: dict[tuple[str, str | None, str], lpips.LPIPS] = {}
_CACHE_LOCK = threading.Lock()


def _resolve_backbone(net: str, backbone_path: str | os.PathLike | None) -> Path | None:
    """Return the backbone file to load, or None to fall back to the torchvision download."""
    if backbone_path is not None and Path(backbone_path).expanduser().is_file():
        return Path(backbone_path).expanduser().resolve()   # an explicit file: the resource is a folder
    source = "backbone_path" if backbone_path is not None else f"${_ENV}"
    folder = resources.find("lpips", backbone_path)
    if folder is None:
        return None
    path = folder / f"{net}_backbone.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS backbone file for net={net!r} not found: {path} (from {source}); expected a "
            f"safetensors file with lpips state-dict keys, e.g. '{net}_backbone.safetensors'"
        )
    return path.resolve()


def _load_backbone(model: lpips.LPIPS, net: str, path: Path) -> None:
    """Load ``path`` into ``model.net``; raise a clear error unless it matches exactly."""
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for a corrupt header
        raise ValueError(f"cannot read LPIPS backbone file {path}: {e}") from e
    expected = {k: v.shape for k, v in model.state_dict().items() if k.startswith("net.")}
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(
        k for k in set(tensors) & set(expected) if tuple(tensors[k].shape) != tuple(expected[k])
    )
    if unexpected or mismatched:
        # Checked up front because load_state_dict(strict=False) would silently ignore foreign
        # keys and fail with an opaque size-mismatch dump on shared ones.
        raise ValueError(
            f"LPIPS backbone file {path} does not match net={net!r}: "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}), "
            f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]}). "
            f"Is it the backbone of another network (expected '{net}_backbone.safetensors')?"
        )
    result = model.load_state_dict(tensors, strict=False)
    # strict=False is needed because the file holds only the backbone (the linear heads come
    # from the wheel), so "missing" keys are expected -- but never backbone ones: a partially
    # loaded backbone would give a silently wrong metric.
    missing_net = sorted(k for k in result.missing_keys if k.startswith("net."))
    if missing_net:
        raise ValueError(
            f"LPIPS backbone file {path} is incomplete for net={net!r}: {len(missing_net)} "
            f"backbone tensors missing (e.g. {missing_net[:3]})"
        )


def _build(net: str, path: Path | None) -> lpips.LPIPS:
    with warnings.catch_warnings():
        # lpips calls torchvision with the deprecated ``pretrained=`` argument; the resulting
        # UserWarnings are about lpips' internals, not something our users can act on.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models")
        return _build_unfiltered(net, path)


def _build_unfiltered(net: str, path: Path | None) -> lpips.LPIPS:
    if path is None:
        try:
            return lpips.LPIPS(net=net, pretrained=True, verbose=False)
        except Exception as e:  # URLError, HTTPError, socket errors, ... depending on the stack
            raise RuntimeError(
                f"could not load the ImageNet backbone for LPIPS net={net!r} (torchvision "
                f"download failed: {type(e).__name__}: {e}). On a machine without internet, "
                f"pass backbone_path=<{net}_backbone.safetensors or its directory> or set "
                f"{_ENV} to a directory holding '{net}_backbone.safetensors'."
            ) from e
    # pnet_rand=True: build the backbone randomly initialised (no download), then overwrite it.
    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    _load_backbone(model, net, path)
    return model


def _freeze(model: lpips.LPIPS) -> lpips.LPIPS:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # The linear heads contain Dropout layers (their index is part of the pretrained key names,
    # so they cannot be built without). If a parent LightningModule registers this model and
    # calls .train(), dropout would make the metric random; Identity keeps it deterministic.
    for lin in getattr(model, "lins", []):
        for idx, layer in enumerate(lin.model):
            if isinstance(layer, torch.nn.Dropout):
                lin.model[idx] = torch.nn.Identity()
    return model


def load_lpips(
    net: str = "vgg",
    backbone_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> lpips.LPIPS:
    """Return a frozen (eval, ``requires_grad=False``) LPIPS model on ``device``.

    Models are cached per (net, backbone file, device) and the SAME instance is returned on
    later calls, so do not move or modify it in place; ask for another device instead.
    Gradients still flow to the inputs, so it can be used inside a loss.
    """
    if net not in _NET_ALIASES:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {sorted(_NET_ALIASES)}")
    net = _NET_ALIASES[net]
    path = _resolve_backbone(net, backbone_path)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())  # "cuda" and "cuda:0" share
    key = (net, None if path is None else str(path), str(dev))
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = _freeze(_build(net, path)).to(dev)
            _CACHE[key] = model
    return model


def lpips_ready(x: torch.Tensor) -> torch.Tensor:
    """(M, C, H, W) -> 3 channels (grey replicated), at least ``LPIPS_MIN_SIZE`` pixels on the short side."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    short = min(x.shape[-2:])
    if short < LPIPS_MIN_SIZE:
        size = [round(s * LPIPS_MIN_SIZE / short) for s in x.shape[-2:]]
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


def masked_lpips(
    model: lpips.LPIPS, a: torch.Tensor, b: torch.Tensor, keep_mask: torch.Tensor | None
) -> torch.Tensor:
    """LPIPS between ``keep_mask * a`` and ``keep_mask * b``, shape (B,).

    Inputs are images in [-1, 1] (B, C, H, W), which is what lpips expects with
    ``normalize=False``; ``keep_mask`` is (B, 1, H, W) with 1 = observed, so only the observed
    region is compared (missing pixels become 0 = grey in both). ``None`` means no mask. The masked
    images go through ``lpips_ready`` (grey to 3 channels, upsampled to ``LPIPS_MIN_SIZE``).
    """
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"masked_lpips expects a, b of equal shape (B, C, H, W); got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] not in (1, 3):
        raise ValueError(f"LPIPS needs grey or RGB images, got C={a.shape[1]}")
    if keep_mask is not None:
        if keep_mask.dim() != 4 or keep_mask.shape[1] != 1 or keep_mask.shape[2:] != a.shape[2:] \
                or keep_mask.shape[0] not in (1, a.shape[0]):
            raise ValueError(f"keep_mask must be (B, 1, H, W) = {(a.shape[0], 1, *a.shape[2:])}, "
                             f"got {tuple(keep_mask.shape)}")
        keep_mask = keep_mask.to(dtype=a.dtype)
        a, b = keep_mask * a, keep_mask * b
    return model(lpips_ready(a), lpips_ready(b), normalize=False).reshape(a.shape[0])

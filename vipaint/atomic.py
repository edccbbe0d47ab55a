"""Atomic output helpers: PNG / JSON / raw bytes written so a crash never leaves a torn file.

Every writer here goes through :func:`atomic_write_bytes`: the data is written to a temporary
file *in the same directory* as the target (so the final ``os.replace`` is a same-filesystem
rename, which POSIX guarantees to be atomic), fsync'ed, and only then renamed over the target.
A run that is killed half-way (pre-emption on a cluster, Ctrl-C, OOM) therefore leaves either
the previous complete file or the new complete file, never a truncated PNG or half a JSON
document -- which is what lets ``result.json`` act as a reliable "this image is done" marker.

Image convention: float tensors in [-1, 1], shape (C, H, W); they are quantised with
``round((x + 1) * 127.5)`` clamped to [0, 255].
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "atomic_write_bytes",
    "atomic_save_png",
    "encode_png",
    "atomic_save_json",
    "to_uint8",
    "to_jsonable",
]

PathLike = str | os.PathLike


def _fsync_dir(directory: Path) -> None:
    # The rename itself lives in the directory entry; fsync'ing the directory makes it durable
    # across a power loss. Not every platform/filesystem allows opening a directory
    # (Windows, some network filesystems), so this is best-effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(directory: Path, name: str) -> tuple[int, str]:
    """A new hidden temp file beside the target, opened for writing: (fd, path).

    Uniquely named and created exclusively (O_EXCL), so concurrent writers (several ranks, or a re-run
    racing a stale process) never clobber each other's partial data. Unlike ``tempfile.mkstemp``
    (mode 0600) it is created with mode 0666 filtered by the umask, so the renamed output has the
    permissions of any ordinary file and other people can read it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp_name = str(directory / f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp_name, flags, 0o666), tmp_name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temporary file beside {directory / name}")


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, ``os.replace``).

    Parent directories are created. On any failure the temporary file is removed and the
    previous content of ``path`` (if any) is left untouched.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes expects bytes, got {type(data).__name__}")
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _create_temp(directory, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp_name, path)
    except BaseException:
        # BaseException so that KeyboardInterrupt also cleans up the temp file.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """Convert a (C, H, W) or (H, W) image in [-1, 1] to a uint8 array (H, W, C) or (H, W).

    Quantisation: ``round((x + 1) * 127.5)`` clamped to [0, 255]. NaNs raise: silently mapping
    them to some grey level would hide a diverged fit in a plausible-looking picture.
    """
    if not isinstance(img, torch.Tensor):
        img = torch.as_tensor(img)
    if img.dim() not in (2, 3):
        raise ValueError(f"to_uint8 expects (C, H, W) or (H, W), got shape {tuple(img.shape)}")
    x = img.detach().to("cpu", torch.float32)
    if torch.isnan(x).any():
        raise ValueError("to_uint8: image contains NaN values")
    x = ((x + 1.0) * 127.5).clamp(0.0, 255.0).round().to(torch.uint8)
    if x.dim() == 3:
        x = x.permute(1, 2, 0)
    return x.contiguous().numpy()


_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def encode_png(img: torch.Tensor) -> bytes:
    """Encode a (C, H, W) image in [-1, 1] (C in 1, 3, 4) as PNG bytes (lossless)."""
    if not isinstance(img, torch.Tensor) or img.dim() != 3:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"encode_png expects a (C, H, W) tensor, got {shape}")
    channels = img.shape[0]
    if channels not in _PIL_MODES:
        raise ValueError(f"encode_png supports 1, 3 or 4 channels, got {channels}")
    arr = to_uint8(img)
    if channels == 1:
        arr = arr[:, :, 0]  # PIL's 'L' mode wants a 2-D array
    # Let PIL infer the mode from the uint8 array (the ``mode=`` argument is deprecated in
    # recent Pillow) and check it is the one we mean.
    pil = Image.fromarray(arr)
    if pil.mode != _PIL_MODES[channels]:
        raise RuntimeError(f"PIL inferred mode {pil.mode!r}, expected {_PIL_MODES[channels]!r}")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def atomic_save_png(path: PathLike, img: torch.Tensor) -> None:
    """Save a (C, H, W) image in [-1, 1] as an 8-bit PNG, atomically. 1 channel -> mode 'L'."""
    # Encode fully in memory first: an encoding error must not touch the target file.
    atomic_write_bytes(path, encode_png(img))


def to_jsonable(obj: Any) -> Any:
    """Recursively convert ``obj`` to strict-JSON-serialisable Python values.

    Tensors / numpy values become Python numbers or lists, paths become strings, tuples and
    sets become lists. Non-finite floats become the strings "NaN", "Infinity", "-Infinity":
    strict JSON has no NaN, but a NaN ELBO is exactly the information a failed fit should
    keep, and ``float("NaN")`` parses these strings back.
    """
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        return to_jsonable(obj.item() if obj.dim() == 0 else obj.tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"to_jsonable: cannot serialise object of type {type(obj).__name__}")


def atomic_save_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` (via :func:`to_jsonable`) as strict JSON and write it atomically."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


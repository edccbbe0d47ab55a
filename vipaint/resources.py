"""Local resources (data sets, LPIPS backbones): one way to find each.

Every resource is looked up the same way: an explicit path (a config value or a command-line flag)
first, then its one environment variable; if neither gives an existing path, ``ResourceNotFound``
names both. Nothing is ever looked up at a hard-coded location.

| resource | environment variable            | what it points at                                        |
|----------|---------------------------------|----------------------------------------------------------|
| mnist    | ``VIPAINT_MNIST_DIR``           | folder of the MNIST IDX files (``*-idx?-ubyte[.gz]``)     |
| cifar10  | ``VIPAINT_CIFAR10_ZIP``         | ``cifar10_jpeg.zip`` (``train|test/<class>/NNNN.jpg``)    |
| lpips    | ``VIPAINT_LPIPS_BACKBONE_DIR``  | folder of ``alex|vgg_backbone.safetensors``               |

Where the project's shared folder is at hand (developers, CI), ``.ci/run`` sets all three from it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RESOURCES", "Resource", "ResourceNotFound", "resolve", "find"]


class ResourceNotFound(FileNotFoundError):
    """No usable path for a resource: the message names the config option and the environment variable."""


@dataclass(frozen=True)
class Resource:
    name: str
    env: str
    kind: str          # "dir" or "file"
    what: str


RESOURCES: dict[str, Resource] = {
    "mnist": Resource("mnist", "VIPAINT_MNIST_DIR", "dir", "the folder of the MNIST IDX files"),
    "cifar10": Resource("cifar10", "VIPAINT_CIFAR10_ZIP", "file", "the CIFAR-10 JPEG zip"),
    "lpips": Resource("lpips", "VIPAINT_LPIPS_BACKBONE_DIR", "dir", "the folder of the LPIPS backbone safetensors"),
}


def _ok(path: Path, kind: str) -> bool:
    return path.is_dir() if kind == "dir" else path.is_file()


def find(name: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """The resource's path from ``explicit``, else from its environment variable; None if neither is set.

    Raises ``ResourceNotFound`` when a path is given but does not exist (a typo must not silently fall back).
    """
    res = RESOURCES[name]
    for source, value in (("the given path", explicit), (f"${res.env}", os.environ.get(res.env))):
        if value:
            path = Path(value).expanduser()
            if not _ok(path, res.kind):
                raise ResourceNotFound(f"{res.what} from {source} does not exist or is not a {res.kind}: {path}")
            return path
    return None


def resolve(name: str, explicit: str | os.PathLike | None = None, option: str = "the config option") -> Path:
    """Like ``find``, but an error naming ``option`` and the environment variable when nothing is set."""
    path = find(name, explicit)
    if path is None:
        res = RESOURCES[name]
        raise ResourceNotFound(f"{res.what} is not set: pass {option} or set the environment variable {res.env}")
    return path

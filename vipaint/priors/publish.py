"""Shipping trained weights: the one, explicit way a folder gets into ``weights/``.

    python -m vipaint.priors.publish runs/prior_mnist/version_0/export weights/mnist-ddpm          # refuses to
    python -m vipaint.priors.publish runs/prior_mnist/version_0/export weights/mnist-ddpm --force  # replace a model

Training exports into its run folder only (``<log_dir>/export``), so a short test run can never overwrite a shipped
model. Publishing copies the exported folder (config, safetensors, subfolders) into the destination; the files a
person wrote there (``README.md``, the model card; ``vipaint.json``, tuned settings; sample grids) stay unless the
source has its own. A destination that holds a *different* model (other weight bytes) is replaced only with
``--force``; the copy goes to a temporary folder first and replaces the destination in one rename.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

__all__ = ["publish", "weights_digest"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")


def weights_digest(folder: Path) -> str | None:
    """sha256 over the weight files under ``folder`` (relative names and bytes), None if it holds none."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def publish(source: str | Path, dest: str | Path, force: bool = False) -> Path:
    """Copy the exported model folder ``source`` to ``dest`` (see the module docstring); return ``dest``."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir() or weights_digest(source) is None:
        raise ValueError(f"{source} holds no exported weights (*.safetensors): pass the export folder of a run, "
                         "e.g. runs/prior_mnist/version_0/export")
    old = weights_digest(dest) if dest.is_dir() else None
    if old is not None and old != weights_digest(source) and not force:
        raise ValueError(f"{dest} holds a different model; pass --force to replace it")
    tmp = dest.with_name(dest.name + ".publishing")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    if dest.is_dir():   # keep what people wrote beside the weights
        for p in dest.iterdir():
            if p.is_file() and p.suffix not in _WEIGHT_SUFFIXES and p.name != "config.json" \
                    and not (tmp / p.name).exists():
                shutil.copy2(p, tmp / p.name)
        backup = dest.with_name(dest.name + ".replaced")
        shutil.rmtree(backup, ignore_errors=True)
        dest.rename(backup)
        tmp.rename(dest)
        shutil.rmtree(backup)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vipaint.priors.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="an export folder written by training (<log_dir>/export)")
    parser.add_argument("dest", help="the shipped folder, e.g. weights/mnist-ddpm")
    parser.add_argument("--force", action="store_true", help="replace a destination that holds another model")
    args = parser.parse_args(argv)
    try:
        print(f"published {publish(args.source, args.dest, args.force)}")
    except ValueError as e:
        raise SystemExit(f"vipaint: error: {e}") from None


if __name__ == "__main__":
    main()

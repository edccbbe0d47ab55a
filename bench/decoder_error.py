"""Measuring a latent prior's autoencoder error field Σ_e (``vipaint.decoder_error``), once per autoencoder.

    python -m bench.decoder_error --prior weights/cifar10-ldm --out runs/decoder_error_cifar10

Encodes and decodes ``--n`` CIFAR-10 training images (seeded; the zip from ``--data-path`` or
``$VIPAINT_CIFAR10_ZIP``), estimates Σ_e from the errors e = x − D(E(x)), and writes ``decoder_error.safetensors``
and ``decoder_error.json`` (command, date, RMS, correlations, and the RMS on the held-out benchmark dev split) into
``--out``. Nothing goes into ``weights/``: ship it by copying the file into the prior's ``vae/`` folder and citing
this command in its model card.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.report import header, write_json
from vipaint.decoder_error import DecoderError

__all__ = ["reconstruction_errors", "measure", "main"]


@torch.no_grad()
def reconstruction_errors(prior, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """e = x − D(E(x)) (N, C, H, W), float32, in batches."""
    return torch.cat([b - prior.decode(prior.encode(b)).float() for b in x.split(batch)])


def _lag_correlation(err: DecoderError, dy: int, dx: int) -> float:
    """Mean over channels of the error's correlation between pixels (dy, dx) apart."""
    k = err.kernel
    return float((k[:, :, dy, dx].diagonal() / k[:, :, 0, 0].diagonal()).mean())


def measure(prior, x: torch.Tensor, held_out: torch.Tensor | None = None) -> tuple[DecoderError, dict]:
    """Σ_e from images ``x`` and a summary (RMS, correlations; RMS on ``held_out`` if given)."""
    err = DecoderError.estimate(reconstruction_errors(prior, x))
    c = err.kernel[:, :, 0, 0]
    summary = {"n_images": len(x), "rms": err.rms,
               "channel_correlation": (c / torch.outer(c.diagonal().sqrt(), c.diagonal().sqrt())).tolist(),
               "lag_correlation": {f"{dy},{dx}": _lag_correlation(err, dy, dx) for dy, dx in
                                   ((0, 1), (1, 0), (1, 1), (0, 2), (0, 4), (4, 0))}}
    if held_out is not None:
        summary["rms_held_out"] = float(reconstruction_errors(prior, held_out).pow(2).mean().sqrt())
    return err, summary


def main(argv=None) -> None:
    from safetensors.torch import save_file

    from datamodules.cifar10 import Cifar10Zip, bench_images
    from vipaint.priors.external import DECODER_ERROR_NAME, load_prior

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", required=True, help="a latent prior: shipped name, diffusers folder or hub id")
    ap.add_argument("--data-path", default=None, help="the CIFAR-10 zip (else $VIPAINT_CIFAR10_ZIP)")
    ap.add_argument("--n", type=int, default=10000, help="training images to measure on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="folder for decoder_error.safetensors and .json")
    args = ap.parse_args(argv)
    prior = load_prior(args.prior)
    if not prior.is_latent:
        raise SystemExit(f"--prior {args.prior} is a pixel prior: it has no decoder whose error to measure")
    source = Cifar10Zip(args.data_path, "train")
    if prior.image_shape != (3, 32, 32):
        raise SystemExit(f"--prior {args.prior} makes {prior.image_shape} images; this command measures on 32x32 "
                         "CIFAR-10 images only")
    pick = torch.randperm(len(source), generator=torch.Generator().manual_seed(args.seed))[:args.n].tolist()
    x = torch.stack([source.load_image(i) for i in pick])
    held_out = bench_images(90, "dev", zip_path=args.data_path)[0]
    err, summary = measure(prior, x, held_out)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"kernel": err.kernel.contiguous()}, str(out / DECODER_ERROR_NAME))
    summary = {**header("decoder_error", argv), "prior": args.prior, "seed": args.seed, **summary}
    write_json(out / "decoder_error.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "channel_correlation"}, indent=1))


if __name__ == "__main__":
    main()

"""Evidence of a pixel prior's quality: held-out ε-MSE, unconditional samples, nearest training images.

    python -m bench.prior_quality --prior vipaint-mnist --data mnist --out bench/results/prior_mnist    # CPU, ~1 min
    python -m bench.prior_quality --prior weights/cifar10-ddpm --data cifar10 --out bench/results/prior_cifar10

1. Held-out ε-MSE ||ε - ε̂(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)||² per element, on the first ``--test-limit`` test
   images (MNIST: 256 digits; scored on the 28x28 digit area — the whole image for a 28x28 prior, the
   centre crop for one padded to 32x32), at t = 50, 200, 400, 550, 800, noise from a fixed seed, in float32.
   ``--reference`` prints a reference model's numbers beside ours (default for MNIST: an independently
   trained 847k-parameter DDPM, 50 epochs).
2. 64 unconditional samples (DDIM, η = 0, 100 steps, x̂_0 clipped to [-1, 1]) as a PNG grid.
3. The nearest training image (pixel L2) of 8 samples, shown beside each, with its distance, and the
   distance between two training images at the same rank as a yardstick: a prior that memorises would
   reproduce training images (distance ~0).
Prints a table and writes ``<out>.json``, ``<out>_samples.png`` and ``<out>_neighbours.png`` (default
``bench/results/prior_mnist``).
"""
from __future__ import annotations

import argparse
import io
import time

import torch
import torch.nn.functional as F

from bench.report import RESULTS, header, write_json
from vipaint.atomic import atomic_write_bytes
from vipaint.priors.external import PixelPrior
from vipaint.schedule import ddim_sample, q_sample

TS = [50, 200, 400, 550, 800]
MNIST_REFERENCE = {"50": 0.0960, "200": 0.0419, "400": 0.0221, "550": 0.0098, "800": 0.00066}


def load_images(data: str, split: str, limit: int | None, path: str | None) -> torch.Tensor:
    if data == "mnist":
        from datamodules.mnist import load_mnist

        x = load_mnist(path, split)[0]
    else:   # class-balanced: the zip is sorted by class, so a plain prefix would be all airplanes
        from datamodules.cifar10 import Cifar10Zip, _Subset

        ds = Cifar10Zip(path, split=split)
        sub = _Subset(ds, len(ds) if limit is None else min(limit, len(ds)))
        x = torch.stack([sub.load_image(i) for i in range(len(sub))])
    return x if limit is None else x[:limit]


def fit_to_prior(x: torch.Tensor, shape: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Pad (with the background value -1) to the prior's size; the slices select the original area."""
    _, h, w = shape
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph < 0 or pw < 0:
        raise ValueError(f"images {tuple(x.shape[-2:])} are larger than the prior's {h}x{w}")
    x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=-1.0)
    return x, (slice(ph // 2, h - (ph - ph // 2)), slice(pw // 2, w - (pw - pw // 2)))


@torch.no_grad()
def heldout_eps_mse(prior, x: torch.Tensor, ts: list[int], batch: int, device, area=None) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    area = area or (slice(None), slice(None))
    out = {}
    for t in ts:
        total, count = 0.0, 0
        for i in range(0, len(x), batch):
            x0 = x[i:i + batch].to(device)
            eps = torch.randn(x0.shape, generator=g).to(device)
            ab = prior.schedule.alpha_bar(t).to(device).float()
            _, eps_hat = prior.denoise(q_sample(x0, eps, ab), t)
            err = (eps_hat - eps)[..., area[0], area[1]] ** 2
            total += float(err.sum())
            count += err.numel()
        out[str(t)] = total / count
    return out


@torch.no_grad()
def ddim_samples(prior, n: int, steps: int, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((n, *prior.latent_shape), generator=g).to(device)
    clip = None if prior.is_latent else (-1.0, 1.0)   # latents have no [-1, 1] range to clip to
    return prior.decode(ddim_sample(prior.denoise, prior.schedule, z, steps, clip)).clamp(-1, 1)


def nearest(samples: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and RMS distance of each sample's nearest training image."""
    d = torch.cdist(samples.flatten(1), train.flatten(1))
    dist, idx = d.min(1)
    return idx, dist / samples[0].numel() ** 0.5


def save_png(images: torch.Tensor, path: str, **grid) -> None:
    """A grid of images in [0, 1] (``torchvision.utils.save_image``'s), written atomically."""
    from torchvision.utils import save_image

    buf = io.BytesIO()
    save_image(images, buf, format="png", **grid)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="vipaint-mnist", help="shipped name, folder or hub id")
    ap.add_argument("--data", choices=["mnist", "cifar10"], default="mnist")
    ap.add_argument("--data-path", default=None, help="MNIST folder / CIFAR-10 zip (else VIPAINT_MNIST_DIR / "
                                                       "VIPAINT_CIFAR10_ZIP)")
    ap.add_argument("--test-limit", type=int, default=256)
    ap.add_argument("--train-limit", type=int, default=None, help="training images searched for neighbours")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(RESULTS / "prior_mnist"), help="output prefix (default: %(default)s)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    prior = PixelPrior(args.prior).to(device)
    t0 = time.perf_counter()
    test, area = fit_to_prior(load_images(args.data, "test", args.test_limit, args.data_path), prior.image_shape)
    losses = heldout_eps_mse(prior, test, TS, args.batch, device, area)
    samples = ddim_samples(prior, 64, 100, device).cpu()
    save_png((samples + 1) / 2, f"{args.out}_samples.png", nrow=8, padding=1)
    train, _ = fit_to_prior(load_images(args.data, "train", args.train_limit, args.data_path), prior.image_shape)
    idx, dist = nearest(samples[:8], train)
    # Yardstick: how far apart distinct training images typically are (nearest other of 8 training images).
    ref_idx, ref_dist = nearest(train[:8], train[8:])
    pairs = torch.stack([im for s, i in zip(samples[:8], idx) for im in (s, train[i])])
    save_png((pairs + 1) / 2, f"{args.out}_neighbours.png", nrow=4, padding=1)
    n_params = sum(p.numel() for p in prior.parameters())
    reference = MNIST_REFERENCE if args.data == "mnist" else None
    report = {**header("prior_quality", argv, device), "prior": args.prior, "data": args.data,
              "parameters": n_params, "test_images": len(test),
              "heldout_eps_mse": losses, "reference_eps_mse": reference,
              "nearest_train_rms": [round(float(d), 4) for d in dist],
              "nearest_train_index": [int(i) for i in idx],
              "train_to_train_nearest_rms": [round(float(d), 4) for d in ref_dist],
              "seconds": time.perf_counter() - t0, "samples_png": f"{args.out}_samples.png",
              "neighbours_png": f"{args.out}_neighbours.png"}
    write_json(f"{args.out}.json", report)
    print(f"| t | held-out ε-MSE | reference |\n|---|---|---|")
    for t, v in losses.items():
        print(f"| {t} | {v:.5f} | {reference[t] if reference else '-'} |")
    print(f"nearest training image, RMS distance of 8 samples: {', '.join(f'{d:.3f}' for d in dist)} "
          f"(training image to its nearest other: {', '.join(f'{d:.3f}' for d in ref_dist)})")
    print(f"parameters {n_params / 1e6:.3f} M; wrote {args.out}.json")


if __name__ == "__main__":
    main()

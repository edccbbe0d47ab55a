"""Evidence of a pixel prior's quality: held-out denoising loss, unconditional samples, nearest neighbours.

    python bench/prior_quality.py --prior weights/cifar10-ddpm --out bench/prior_quality     # GPU or CPU

1. Held-out ε-loss ||ε - ε̂(α_t x_0 + σ_t ε, t)||² (per element) on the CIFAR-10 test split at
   t = 50, 250, 500, 750, 950 (and averaged over uniform t), fixed noise seed.
2. A grid of 64 unconditional samples with DDIM (η = 0, 100 steps), saved as PNG.
3. For 8 samples, the nearest CIFAR-10 training image in pixel L2 (shown next to the sample): a prior
   that memorises would reproduce training images.
Prints a table and writes ``<out>.json`` and ``<out>_samples.png``, ``<out>_neighbours.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vipaint.external import PixelPrior  # noqa: E402
from vipaint.schedule import ddim_std, ddim_step_mean  # noqa: E402


def cifar(split: str, limit: int | None, zip_path: str | None) -> torch.Tensor:
    from datamodules.cifar10 import Cifar10Zip

    ds = Cifar10Zip(zip_path, split=split)
    n = len(ds) if limit is None else min(limit, len(ds))
    return torch.stack([ds[i]["x"] for i in range(n)])


@torch.no_grad()
def heldout_loss(prior, x: torch.Tensor, ts: list[int], batch: int, device) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for t in ts:
        total, count = 0.0, 0
        for i in range(0, len(x), batch):
            x0 = x[i:i + batch].to(device)
            eps = torch.randn(x0.shape, generator=g).to(device)
            ab = prior.schedule.alpha_bar(t).to(device).float()
            _, eps_hat = prior.denoise(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t)
            total += float(((eps_hat - eps) ** 2).sum())
            count += eps.numel()
        out[str(t)] = total / count
    return out


@torch.no_grad()
def ddim_samples(prior, n: int, steps: int, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((n, *prior.latent_shape), generator=g).to(device)
    ts = prior.schedule.strided(prior.schedule.T - 1, steps)
    x0 = z
    for j, t in enumerate(ts):
        x0, eps = prior.denoise(z, t)
        if j + 1 < len(ts):
            ab_s = prior.schedule.alpha_bar(ts[j + 1])
            z = ddim_step_mean(x0, eps, ab_s.to(device), ddim_std(prior.schedule.alpha_bar(t), ab_s, 0.0).to(device))
    return prior.decode(x0).clamp(-1, 1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", required=True)
    ap.add_argument("--cifar-zip", default=os.environ.get("VIPAINT_CIFAR10_ZIP"))
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--train-limit", type=int, default=None, help="training images searched for neighbours")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="bench/prior_quality")
    args = ap.parse_args(argv)
    from torchvision.utils import save_image

    device = torch.device(args.device)
    prior = PixelPrior(args.prior).to(device)
    t0 = time.perf_counter()
    test = cifar("test", args.test_limit, args.cifar_zip)
    ts = [50, 250, 500, 750, 950]
    losses = heldout_loss(prior, test, ts, args.batch, device)
    samples = ddim_samples(prior, 64, 100, device)
    save_image((samples + 1) / 2, f"{args.out}_samples.png", nrow=8)
    train = cifar("train", args.train_limit, args.cifar_zip)
    pairs = []
    for s in samples[:8].cpu():
        d = ((train - s) ** 2).flatten(1).sum(1)
        pairs += [s, train[int(d.argmin())]]
    save_image((torch.stack(pairs) + 1) / 2, f"{args.out}_neighbours.png", nrow=2)
    n_params = sum(p.numel() for p in prior.parameters())
    report = {"prior": args.prior, "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
              "date": time.strftime("%Y-%m-%d"), "parameters": n_params, "heldout_eps_mse": losses,
              "test_images": len(test), "seconds": time.perf_counter() - t0,
              "samples_png": f"{args.out}_samples.png", "neighbours_png": f"{args.out}_neighbours.png"}
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2))
    print("| t | held-out ε-MSE |\n|---|---|")
    for t, v in losses.items():
        print(f"| {t} | {v:.4f} |")
    print(f"parameters {n_params / 1e6:.2f} M; wrote {args.out}.json")


if __name__ == "__main__":
    main()

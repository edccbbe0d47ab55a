"""Side-by-side benchmark: VIPaint vs DPS, RED-diff and RePaint on the same prior, images and masks.

    python bench/compare.py --prior tiny-random --n-images 4 --samples 4           # CPU smoke run
    python bench/compare.py --prior weights/cifar10-ddpm --n-images 100 --samples 4 --device cuda

Images: CIFAR-10 test split (``VIPAINT_CIFAR10_ZIP`` or --cifar-zip), else the scikit-image demo photos.
Masks: box 50%, random boxes 30-70%, half, free-form strokes; seeded per image, identical for every
method. Prints a table and writes JSON (--out): per method and mask, LPIPS (mean over samples and
best-of-S), PSNR, SSIM, diversity, wall seconds per image, NFEs per image, peak memory.
``--equal-time S`` gives every method the same wall budget per image by scaling its step count from a
short calibration run.
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

from datamodules.masks import make_mask  # noqa: E402
from vipaint.baselines import BASELINES  # noqa: E402
from vipaint.external import PixelPrior  # noqa: E402
from vipaint.fit import FitConfig  # noqa: E402
from vipaint.likelihood import GaussianLikelihood  # noqa: E402
from vipaint.metrics import score_samples  # noqa: E402
from vipaint.operators import Inpainting  # noqa: E402
from vipaint.refine import RefineConfig  # noqa: E402
from vipaint.sampler import VIPaintConfig, vipaint  # noqa: E402

MASKS = {"box50": ("box", 0.5), "random_boxes": ("random_boxes", (0.3, 0.7)), "half": ("half", None),
         "strokes": ("strokes", (0.2, 0.5))}


def load_images(n: int, size: int, zip_path: str | None) -> tuple[torch.Tensor, list[str]]:
    zip_path = zip_path or os.environ.get("VIPAINT_CIFAR10_ZIP")
    if zip_path and Path(zip_path).exists() and size == 32:
        from datamodules.cifar10 import Cifar10DataModule

        dm = Cifar10DataModule(zip_path=zip_path, split="test", limit=n, batch_size=n)
    else:
        from datamodules.demo import DemoDataModule

        dm = DemoDataModule(image_size=size, limit=n, batch_size=n)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    return batch["x"], list(batch["name"])


def masks_for(kind: str, n: int, size: int, seed: int) -> torch.Tensor:
    name, ratio = MASKS[kind]
    gen = make_mask(name, ratio) if ratio is not None else make_mask(name)
    return torch.stack([gen((size, size), torch.Generator().manual_seed(seed + i)) for i in range(n)])


def add_common_args(ap: argparse.ArgumentParser, out: str) -> None:
    """Options every image benchmark shares: data, LPIPS weights, device, output path."""
    ap.add_argument("--cifar-zip", default=None)
    ap.add_argument("--lpips-backbone", default=os.environ.get("VIPAINT_LPIPS_BACKBONE_DIR"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=out)


def setup(args) -> tuple[torch.device, PixelPrior, torch.Tensor, list[str]]:
    """(device, prior on it, the images at the prior's size, their names)."""
    device = torch.device(args.device)
    prior = PixelPrior(args.prior).to(device)
    x_all, names = load_images(args.n_images, prior.image_shape[-1], args.cifar_zip)
    return device, prior, x_all, names


def run_method(method: str, prior, op, y, samples: int, steps: int | None, gen):
    if method == "vipaint":
        cfg = VIPaintConfig(fit=FitConfig(n_iter=steps if steps is not None else 50), refine=RefineConfig())
        out = vipaint(prior, op, GaussianLikelihood(op, prior), y, samples, cfg, gen)
        return out.samples, out.nfe
    fn, cfg_cls = BASELINES[method]
    cfg = cfg_cls()
    if steps is not None:
        field = "n_levels" if method == "repaint" else "n_steps"
        setattr(cfg, field, max(2, steps))
    s, nfe_per_sample = fn(prior, op, y, samples, cfg, gen)
    return s, nfe_per_sample * samples


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="tiny-random", help="diffusers folder or hub id of a pixel prior")
    ap.add_argument("--methods", default="vipaint,dps,red_diff,repaint")
    ap.add_argument("--masks", default=",".join(MASKS))
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4, help="images per batch")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="override every method's step count (smoke runs)")
    ap.add_argument("--equal-time", type=float, default=None, help="seconds per image for every method")
    ap.add_argument("--seed", type=int, default=0)
    add_common_args(ap, "bench/compare.json")
    args = ap.parse_args(argv)

    device, prior, x_all, names = setup(args)
    size = prior.image_shape[-1]
    rows = []
    for mask_kind in args.masks.split(","):
        keep_all = masks_for(mask_kind, len(names), size, args.seed)
        for method in args.methods.split(","):
            steps = args.steps
            if args.equal_time is not None:
                steps = calibrate(method, prior, x_all[:1].to(device), keep_all[:1].to(device), args, device)
            scores, seconds, nfes = [], 0.0, []
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for i in range(0, len(names), args.batch):
                x, keep = x_all[i:i + args.batch].to(device), keep_all[i:i + args.batch].to(device)
                op = Inpainting(keep, 0.05)
                y = op.forward(x)
                gen = torch.Generator().manual_seed(args.seed + i)
                t0 = time.perf_counter()
                s, nfe = run_method(method, prior, op, y, args.samples, steps, gen)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds += time.perf_counter() - t0
                nfes.append(nfe)
                scores.append(score_samples(s.cpu(), x.cpu(), keep.cpu(), backbone_path=args.lpips_backbone))
            merged = {k: torch.cat([sc[k] for sc in scores]).mean().item() for k in scores[0]}
            row = {"method": method, "mask": mask_kind, "steps": steps, **merged,
                   "seconds_per_image": seconds / len(names), "nfe_per_image": sum(nfes) / len(nfes),
                   "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None}
            rows.append(row)
            print(fmt(row), flush=True)
    report = {"prior": args.prior, "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
              "date": time.strftime("%Y-%m-%d"), "n_images": len(names), "samples": args.samples,
              "command": " ".join(["python bench/compare.py", *(argv if argv is not None else sys.argv[1:])]), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("\n" + table(rows))
    print(f"\nwrote {args.out}")


def calibrate(method, prior, x, keep, args, device) -> int:
    """Steps that fit args.equal_time seconds per image, from a timed run at a small step count."""
    probe = 10
    op = Inpainting(keep, 0.05)
    t0 = time.perf_counter()
    run_method(method, prior, op, op.forward(x), args.samples, probe, torch.Generator().manual_seed(0))
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / probe
    return max(2, int(args.equal_time / per_step))


def fmt(r: dict) -> str:
    return (f"{r['method']:>9} {r['mask']:>13} lpips {r['lpips_mean']:.3f} best {r['lpips_best']:.3f} "
            f"psnr {r['psnr_mean']:.2f} ssim {r['ssim_mean']:.3f} div {r.get('diversity', float('nan')):.3f} "
            f"{r['seconds_per_image']:.2f} s/img nfe {r['nfe_per_image']:.0f}")


def table(rows: list[dict]) -> str:
    head = "| method | mask | steps | LPIPS mean | LPIPS best | PSNR | SSIM | diversity | s / image | NFE / image | peak MB |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['method']} | {r['mask']} | {r['steps'] or 'default'} | {r['lpips_mean']:.3f} | "
                     f"{r['lpips_best']:.3f} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.3f} | "
                     f"{r.get('diversity', float('nan')):.3f} | {r['seconds_per_image']:.2f} | "
                     f"{r['nfe_per_image']:.0f} | {r['peak_mem_mb'] or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Latent priors: why VIPaint's guidance through the decoder overshot, and every lever measured against the fix.

    python -m bench.latent --out bench/results/latent_cifar10          # CIFAR-10 dev split, the shipped latent prior

1. **Trace** (``--trace-images`` dev images per mask, one sample each): at every refinement step t, the RMS of z_t
   against the prior's own (forward-noised latents of the same images: sqrt(ᾱ_t E[z_0²] + 1 − ᾱ_t)), the share of
   hole pixels of D(x̂_0^y) at the clamp (|x| ≥ 0.98), and the RMS of D(x̂_0^y) − y on the observed pixels against
   the autoencoder's own reconstruction error there (D(E(x)) − x: no latent reproduces y better than that),
   for the guidance before the fix (reach "diagonal") and after (reach "residual", docs/method.md §5.2).
2. **Sweep** of the levers, one at a time, on ``--n-images`` dev images × masks (``score_inpainting``: LPIPS-VGG,
   PSNR in the hole, observed-pixel RMS, the saturated share): the guidance weight ζ, the likelihood's σ, the
   guidance form, r_t² (off), the authors' L1 + LPIPS loss — each on the old guidance and on the fix.
Prints tables and writes ``<out>.json`` (``bench.report.header``: command, commit, device, date).
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.compare import SIGMA_Y, add_common_args, apply_overrides, evaluate, masks_for, settings_of
from bench.report import RESULTS, header, write_json
from datamodules.cifar10 import bench_images
from vipaint.jobs.api import Inpainter
from vipaint.likelihood import make_likelihood
from vipaint.operators import OperatorConfig, make_operator
from vipaint.pipeline import VIPaintConfig, hand_made_posterior, resolve_keypoints, vipaint
from vipaint.priors.external import load_prior

BEFORE = ["likelihood.reach=diagonal"]
#: label -> VIPaintConfig overrides (``section.field=value``), one lever at a time.
VARIANTS = {
    "before: defaults (reach diagonal)": BEFORE,
    "before: ζ 0.2": BEFORE + ["refine.scale=0.2"],
    "before: likelihood σ 0.15": BEFORE + ["likelihood.sigma_y=0.15"],
    "before: no r_t² (marginalize off)": BEFORE + ["likelihood.marginalize_denoiser=false"],
    "before: gradient form (authors')": BEFORE + ["refine.guidance=gradient"],
    "fix: defaults (reach residual)": [],
    "fix: ζ 2": ["refine.scale=2"],
    "fix: likelihood σ 0.112 (σ_y² + decoder error²)": ["likelihood.sigma_y=0.112"],
    "fix: gradient form": ["refine.guidance=gradient"],
    "fix: refine 50 steps": ["refine.n_steps=50"],
    "L1 + LPIPS loss (authors')": ["likelihood.kind=l1_lpips"],
}


@torch.no_grad()
def trace(prior, x: torch.Tensor, keep: torch.Tensor, overrides: list[str], seed: int) -> list[dict]:
    """Per refinement step, the diagnostics of the module docstring (1.), averaged over the images."""
    cfg = apply_overrides(VIPaintConfig(), overrides)
    op = make_operator(OperatorConfig(sigma_y=SIGMA_Y), keep)
    g = torch.Generator().manual_seed(seed)
    y = op.observe(x, g)
    z0 = prior.encode(x)
    data_ms = float(z0.pow(2).mean())                        # E[z_0²] of these images' latents
    floor = (prior.decode(z0).clamp(-1, 1) - x).pow(2)
    m, hole = keep.expand_as(x), 1 - keep.expand_as(x)
    floor_rms = float((floor * m).sum().div(m.sum()).sqrt())
    rows = []

    def record(t, z, x0_hat, x0y):
        ab = float(prior.schedule.alpha_bar(t))
        dec = prior.decode(x0y)
        rows.append({"t": int(t), "rms_z": float(z.pow(2).mean().sqrt()),
                     "prior_rms_z": (ab * data_ms + 1 - ab) ** 0.5,
                     "saturated_hole": float(((dec.abs() >= 0.98) * hole).sum() / hole.sum()),
                     "obs_rms": float(((dec - y) ** 2 * m).sum().div(m.sum()).sqrt()),
                     "autoencoder_obs_rms": floor_rms})

    lik = make_likelihood(cfg.likelihood, op, prior)
    keypoints = resolve_keypoints(prior, cfg)
    post = hand_made_posterior(prior, op, y, keypoints, cfg, g)
    with torch.enable_grad():
        vipaint(prior, op, lik, y, n_samples=1, config=cfg, generator=g, posterior=post, refine_trace=record)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--masks", default="box50,half,strokes,pixels90")
    ap.add_argument("--variants", default=None, help="comma-separated labels of VARIANTS (default: all)")
    ap.add_argument("--trace-images", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    add_common_args(ap, RESULTS / "latent_cifar10")
    ap.set_defaults(prior="vipaint-cifar10-latent", data="cifar10", n_images=16, lpips_net="vgg", split="dev")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    prior = load_prior(args.prior).to(device)
    x_all = bench_images(max(args.n_images, args.trace_images), args.split, zip_path=args.data_path)[0]
    report = {**header("latent", argv, device), "prior": args.prior, "split": args.split, "n_images": args.n_images,
              "samples": args.samples, "sigma_y": SIGMA_Y, "trace": {}, "rows": []}
    masks = args.masks.split(",")
    for mask in masks:
        keep = masks_for(mask, args.trace_images, prior.image_shape[-1], args.seed)
        for label, over in (("before", BEFORE), ("fix", [])):
            t0 = time.perf_counter()
            rows = trace(prior, x_all[:args.trace_images].to(device), keep.to(device), over, args.seed)
            report["trace"][f"{mask}/{label}"] = rows
            print(f"trace {mask} {label} ({time.perf_counter() - t0:.0f} s)\n| t | RMS z_t | prior's | saturated | "
                  "obs. RMS | autoencoder's |\n|---|---|---|---|---|---|")
            for r in rows[::4] + (rows[-1:] if (len(rows) - 1) % 4 else []):
                print(f"| {r['t']} | {r['rms_z']:.3f} | {r['prior_rms_z']:.3f} | {r['saturated_hole']:.3f} | "
                      f"{r['obs_rms']:.3f} | {r['autoencoder_obs_rms']:.3f} |", flush=True)
        write_json(f"{args.out}.json", report)
    labels = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [lb for lb in labels if lb not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    x = x_all[:args.n_images]
    print("| variant | mask | LPIPS | PSNR hole | obs. RMS | saturated | s / image |\n|---|---|---|---|---|---|---|")
    for mask in masks:
        for label in labels:
            solver = Inpainter(prior, vipaint=apply_overrides(VIPaintConfig(), VARIANTS[label]),
                               operator=OperatorConfig(sigma_y=SIGMA_Y, add_noise=True), n_samples=args.samples,
                               init="hand").to(device)
            row = evaluate(args, device, solver, x, None, None, "vipaint2", None, mask)
            row.update(variant=label, overrides=VARIANTS[label], settings=settings_of(solver))
            report["rows"].append(row)
            print(f"| {label} | {mask} | {row['lpips_mean']:.3f} | {row['psnr_hole']:.2f} | {row['consistency_rms']:.3f}"
                  f" | {row['saturated_hole']:.3f} | {row['seconds_per_image']:.1f} |", flush=True)
            write_json(f"{args.out}.json", report)
    print(f"wrote {args.out}.json")


if __name__ == "__main__":
    main()

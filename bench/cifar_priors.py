"""The quality of a CIFAR-10 prior (pixel or latent) and of a latent prior's autoencoder, on held-out test images.

    python -m bench.cifar_priors --prior vipaint-cifar10-latent --out bench/results/prior_cifar10_latent
    python -m bench.cifar_priors --prior vipaint-cifar10 --out bench/results/prior_cifar10

1. Autoencoder (latent priors): reconstruction PSNR and LPIPS (VGG, the offline backbone, at 32x32) of the first
   ``--n`` test images, through the encoder's mean. The decoder bounds what the latent prior can do.
2. Held-out ε-MSE per element at t = 50, 200, 400, 550, 800 on the prior's own space (pixels, or the scaled
   latents of the test images), fixed noise (``bench.prior_quality.heldout_eps_mse``).
3. Against the best linear denoiser: x̂_0 = E[x_0 | z_t] under a Gaussian fitted to ``--n-fit`` training images'
   mean and full covariance (3072 dimensions for pixels, 256 for 8x8x4 latents; ``priors.gaussian.GaussianPrior``),
   at t = 100, 300, 500 on the test images: MSE of each, and the prior's gain in dB (10 log10 MSE_linear / MSE).
   A prior that learned more than second-order statistics has a positive gain at every t. Also at t = 700, 850,
   950, 990, where sampling starts: there the Gaussian is near optimal and the gain should be about 0 dB, not far
   below (an ε-model's x̂_0 error grows as σ_t/α_t: the CIFAR-10 priors' colour-field samples).
4. KID (``evaluation.kid``: VGG16 relu5_3 features, images at 64x64) of ``--n`` DDIM samples (50 steps) against the
   first ``--n`` test images, with two floors: ``--n`` training images against the same test images (real data),
   and, for latent priors, the autoencoder's reconstructions of those test images (the best its decoder allows).
5. A grid of 64 samples and the nearest training image (pixel L2, among ``--n-fit``) of 8 of them.
6. Float16 storage (``float16_check``): x̂_0 and one VIPaint fill with the UNet's weights rounded to float16, against
   the prior as loaded (meaningful on a float32 export; ``--fp16-check-only`` runs just this).
Prints a table and writes ``<out>.json``, ``<out>_samples.png``, ``<out>_neighbours.png``.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.prior_quality import ddim_samples, heldout_eps_mse, load_images, nearest, save_png
from bench.report import RESULTS, header, write_json
from vipaint.evaluation.denoiser import linear_denoiser_gain
from vipaint.evaluation.kid import FEATURE_LAYER, kid, vgg_features
from vipaint.evaluation.metrics import lpips_distance, psnr
from vipaint.priors.external import load_prior
from vipaint.schedule import q_sample

TS_EPS = [50, 200, 400, 550, 800]
TS_LINEAR = [100, 300, 500, 700, 850, 950, 990]


@torch.no_grad()
def encode(prior, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    return torch.cat([prior.encode(x[i:i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def decode(prior, z: torch.Tensor, batch: int = 250) -> torch.Tensor:
    return torch.cat([prior.decode(z[i:i + batch]).clamp(-1, 1) for i in range(0, len(z), batch)])


@torch.no_grad()
def float16_check(prior, x: torch.Tensor, keep: torch.Tensor) -> dict:
    """Does storing the UNet in float16 change results? The prior against a copy whose UNet weights are rounded to
    float16 (and computed in float32, as loaded): max |Δx̂_0| on ``x`` noised to t = 100 and 500 (fixed noise), and
    max |Δ| of one VIPaint fill (defaults, seeded) of ``x[:1]`` under ``keep[:1]``. Zero where the weights already
    are float16 values (a shipped float16 folder): run it on the float32 export."""
    import copy

    from vipaint.jobs.api import Inpainter

    rounded = copy.deepcopy(prior)
    for p in rounded.unet.parameters():
        p.copy_(p.half().float())
    out = {"weights_max_abs_change": max(float((a - b).abs().max()) for a, b in
                                         zip(prior.unet.parameters(), rounded.unet.parameters()))}
    z0 = prior.encode(x)
    for t in (100, 500):
        ab = prior.schedule.alpha_bar(t).float()
        z = q_sample(z0, torch.randn(z0.shape, generator=torch.Generator().manual_seed(t)), ab)
        out[f"x0_hat_max_abs_diff_t{t}"] = float((prior.x0_hat(z, t) - rounded.x0_hat(z, t)).abs().max())
    fills = [Inpainter(p, init="hand")(x[:1], keep[:1], torch.Generator().manual_seed(0)).samples for p in (prior, rounded)]
    out["fill_max_abs_diff"] = float((fills[0] - fills[1]).abs().max())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="vipaint-cifar10-latent", help="shipped name or folder")
    ap.add_argument("--data-path", default=None, help="CIFAR-10 zip (else VIPAINT_CIFAR10_ZIP)")
    ap.add_argument("--n", type=int, default=1000, help="test images (and samples) for reconstruction and KID")
    ap.add_argument("--n-fit", type=int, default=10000, help="training images for the Gaussian and neighbours")
    ap.add_argument("--eps-n", type=int, default=256, help="test images for the ε-MSE and linear comparison")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of the samples")
    ap.add_argument("--out", default=str(RESULTS / "prior_cifar10_latent"))
    ap.add_argument("--fp16-check-only", action="store_true", help="only the float16 check (module docstring, 6.)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    prior = load_prior(args.prior)
    test = load_images("cifar10", "test", args.n, args.data_path)
    train = load_images("cifar10", "train", args.n_fit, args.data_path)
    report = {**header("cifar_priors", argv, torch.device("cpu")), "prior": args.prior, "latent": prior.is_latent,
              "parameters": sum(p.numel() for p in prior.parameters()), "kid_features": FEATURE_LAYER}
    space_test, space_fit = test[:args.eps_n], train
    if prior.is_latent:
        recon = decode(prior, encode(prior, test))
        report["autoencoder"] = {"psnr": float(psnr(recon, test).mean()),
                                 "lpips_vgg": float(lpips_distance(recon, test).mean()), "images": len(test)}
        space_test, space_fit = encode(prior, test[:args.eps_n]), encode(prior, train)
        report["latent_std_test"] = float(space_test.std())
    from bench.compare import masks_for

    report["float16"] = float16_check(prior, test[:64], masks_for("box50", 1, test.shape[-1], 0))
    print("float16 weights:", report["float16"])
    if args.fp16_check_only:
        write_json(f"{args.out}_fp16.json", report)
        return
    report["heldout_eps_mse"] = heldout_eps_mse(prior, space_test, TS_EPS, 250, torch.device("cpu"))
    report["linear_denoiser"] = linear_denoiser_gain(prior, space_fit, space_test, TS_LINEAR)
    samples = ddim_samples(prior, args.n, args.steps, torch.device("cpu"))
    f_test = vgg_features(test)
    report["kid"] = {"samples": kid(vgg_features(samples), f_test),
                     "train_images_floor": kid(vgg_features(train[-args.n:]), f_test)}
    if prior.is_latent:
        report["kid"]["autoencoder_reconstructions_floor"] = kid(vgg_features(recon), f_test)
    save_png((samples[:64] + 1) / 2, f"{args.out}_samples.png", nrow=8, padding=1)
    idx, dist = nearest(samples[:8], train)
    _, ref = nearest(train[:8], train[8:])
    pairs = torch.stack([im for s, i in zip(samples[:8], idx) for im in (s, train[i])])
    save_png((pairs + 1) / 2, f"{args.out}_neighbours.png", nrow=4, padding=1)
    report.update(nearest_train_rms=[round(float(d), 4) for d in dist],
                  train_to_train_nearest_rms=[round(float(d), 4) for d in ref], seconds=time.perf_counter() - t0)
    write_json(f"{args.out}.json", report)
    if prior.is_latent:
        ae = report["autoencoder"]
        print(f"autoencoder: PSNR {ae['psnr']:.2f} dB, LPIPS(VGG) {ae['lpips_vgg']:.4f} on {ae['images']} test images")
    print("| t | held-out ε-MSE |\n|---|---|")
    for t, v in report["heldout_eps_mse"].items():
        print(f"| {t} | {v:.5f} |")
    print("| t | x̂0 MSE prior | x̂0 MSE linear | gain dB |\n|---|---|---|---|")
    for t, v in report["linear_denoiser"].items():
        print(f"| {t} | {v['mse_prior']:.5f} | {v['mse_linear']:.5f} | {v['gain_db']:+.2f} |")
    print("KID:", {k: round(v, 5) for k, v in report["kid"].items()}, f"({FEATURE_LAYER})")
    print(f"wrote {args.out}.json in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()

"""Is VIPaint's spread right? On a Gaussian prior, where the posterior is closed form, the per-pixel sample std in
the hole against the exact posterior std, by guidance (exact CG, the default isotropic r_t²), refinement steps and
η of the refinement (bench/README "Open questions", 1).

    python -m bench.gaussian_spread                  # about 2 minutes at one CPU thread

The problem is ``tests/test_closed_form.py``'s: x_0 ~ N(0, S) on 8x8 (S a squared-exponential kernel, std 0.5,
length 2), the right half missing, σ_y = 0.05, 1,024 samples, 50 fit iterations of 8 samples. Prints a table and
writes ``bench/results/gaussian_spread.json``: per setting the std ratio (mean, min, max over hole pixels) and the
mean error of the sample mean in prior stds.
"""
from __future__ import annotations

import argparse
import itertools

import torch

from bench.report import RESULTS, header, write_json
from vipaint.fit import FitConfig
from vipaint.likelihood import GaussianLikelihood
from vipaint.operators import Inpainting
from vipaint.pipeline import VIPaintConfig, vipaint
from vipaint.priors.gaussian import GaussianPrior, smooth_covariance
from vipaint.refine import RefineConfig
from vipaint.schedule import NoiseSchedule, linear_alphas_cumprod

PRIOR_STD = 0.5


def problem():
    """(prior, operator, y, exact posterior mean (1, 8, 8), exact std (1, 8, 8), hole mask (1, 8, 8) bool)."""
    prior = GaussianPrior(torch.zeros(1, 8, 8), smooth_covariance(8, 8, std=PRIOR_STD, length_scale=2.0),
                          NoiseSchedule(linear_alphas_cumprod()))
    g = torch.Generator().manual_seed(0)
    x = (torch.linalg.cholesky(prior.cov) @ torch.randn(64, generator=g, dtype=torch.float64)).reshape(1, 1, 8, 8)
    keep = torch.ones(1, 1, 8, 8)
    keep[..., 4:] = 0
    op = Inpainting(keep, sigma_y=0.05)
    y = op.observe(x.float(), g)
    mean, cov = prior.posterior(y[0], keep[0], 0.05)
    return prior, op, y, mean, cov.diagonal().sqrt().reshape(1, 8, 8), keep[0] == 0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--out", default=str(RESULTS / "gaussian_spread.json"))
    args = ap.parse_args(argv)
    prior, op, y, mean, std, hole = problem()
    report = {**header("gaussian_spread", argv), "samples": args.samples, "rows": []}
    print("| guidance | refine steps | η | std ratio mean [min, max] | mean error (prior std) |\n|---|---|---|---|---|")
    for cg, steps, eta in itertools.product((10, 0), (25, 50), (1.0, 0.0)):
        cfg = VIPaintConfig(fit=FitConfig(n_iter=50, n_samples=8), refine=RefineConfig(n_steps=steps, eta=eta))
        out = vipaint(prior, op, GaussianLikelihood(op, prior, cg_steps=cg), y, n_samples=args.samples, config=cfg,
                      generator=torch.Generator().manual_seed(1))
        s = out.samples[0].double()
        ratio = (s.std(0) / std)[hole.expand_as(std)]
        err = float(((s.mean(0) - mean).abs()[hole.expand_as(std)] / PRIOR_STD).mean())
        row = {"cg_steps": cg, "refine_steps": steps, "eta": eta, "std_ratio_mean": float(ratio.mean()),
               "std_ratio_min": float(ratio.min()), "std_ratio_max": float(ratio.max()), "mean_error": err}
        report["rows"].append(row)
        print(f"| {'exact (CG 10)' if cg else 'isotropic r_t² (default)'} | {steps} | {eta:g} | "
              f"{row['std_ratio_mean']:.3f} [{row['std_ratio_min']:.3f}, {row['std_ratio_max']:.3f}] | {err:.3f} |",
              flush=True)
        write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""Exact multimodal posteriors: how each method's samples split between the modes of a Gaussian mixture.

    python -m bench.mixture --samples 1024 --out bench/results/mixture            # CPU, about a minute

The three-mode example of ``vipaint.priors.gaussian_mixture.three_mode_example`` (4x4, right half missing,
σ_y = 0.05): the exact posterior weights are 0.612 / 0.271 / 0.117 (prior: 0.5 / 0.3 / 0.2). Each sample
goes to its most responsible exact mode; reported: the fraction per mode, the largest absolute error
against the exact weights, the per-mode mean error and std ratio on the missing pixels (units of the
exact within-mode std), seconds. Rows for VIPaint separate the stages: with and without the fit
(``fit0``), isotropic (``cg0``) or covariance-aware (``cg10``) likelihood gradients, and the isotropic
gradient at twice its weight (``ζ2``, the shipped MNIST prior's tuned setting). ``exact`` samples the
true posterior: its error is the sampling noise of the fractions. Every method runs through the one entry
point, ``vipaint.Inpainter``, on the exact mixture prior (the example's observation y, zero at the missing
pixels, is passed as the image: without added noise the Inpainter observes A y = y). Nothing here is
asserted; the VIPaint ``cg10`` row is also a test (``tests/test_gaussian_mixture.py``).
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.report import RESULTS, header, write_json
from vipaint.baselines import BaselinesConfig
from vipaint.fit import FitConfig
from vipaint.jobs.api import Inpainter
from vipaint.likelihood import LikelihoodConfig
from vipaint.operators import OperatorConfig
from vipaint.pipeline import VIPaintConfig
from vipaint.priors.gaussian_mixture import mode_statistics, three_mode_example
from vipaint.refine import RefineConfig
from vipaint.schedule import NoiseSchedule, linear_alphas_cumprod


def methods(n_fit: int) -> dict[str, dict]:
    """Row name -> ``Inpainter`` arguments (method and its settings; each baseline at its default budget)."""
    def vip(fit_steps: int, cg: int, scale: float = 1.0) -> dict:
        cfg = VIPaintConfig(fit=FitConfig(n_iter=fit_steps, n_samples=8), refine=RefineConfig(n_steps=50, scale=scale),
                            likelihood=LikelihoodConfig(cg_steps=cg))
        return {"method": "vipaint", "vipaint": cfg, "init": "hand"}

    return {
        f"VIPaint-2 fit{n_fit} cg10": vip(n_fit, 10),
        "VIPaint-2 fit0 cg10": vip(0, 10),
        f"VIPaint-2 fit{n_fit} cg0": vip(n_fit, 0),
        "VIPaint-2 fit0 cg0": vip(0, 0),
        f"VIPaint-2 fit{n_fit} cg0 ζ2": vip(n_fit, 0, 2.0),   # the shipped MNIST prior's guidance weight
        "DPS-1000": {"method": "dps", "baselines": BaselinesConfig()},
        "RED-diff-100": {"method": "red_diff", "baselines": BaselinesConfig()},
        "RePaint-250/10/10": {"method": "repaint", "baselines": BaselinesConfig()},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--fit-steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "mixture"), help="writes <out>.json (default: %(default)s)")
    args = ap.parse_args(argv)
    prior, op, y, keep, post = three_mode_example(NoiseSchedule(linear_alphas_cumprod()))
    operator = OperatorConfig(sigma_y=op.sigma_y)   # y is given: no noise added
    rows = []
    exact, _ = post.sample(args.samples, torch.Generator().manual_seed(args.seed))
    runs: dict[str, dict | None] = {"exact posterior": None, **methods(args.fit_steps)}
    for name, kwargs in runs.items():
        solver = None if kwargs is None else Inpainter(prior, operator=operator, n_samples=args.samples, **kwargs)
        t0 = time.perf_counter()
        if solver is None:
            samples = exact.float()
        else:
            samples = solver(y, keep, torch.Generator().manual_seed(args.seed)).samples[0]
        stats = mode_statistics(samples, post, keep)
        rows.append({"method": name, "fractions": [round(float(f), 3) for f in stats["fractions"]],
                     "max_weight_error": round(float((stats["fractions"] - post.weights).abs().max()), 3),
                     "mean_err": [round(v, 3) for v in stats["mean_err"]],
                     "std_ratio": [round(v, 3) for v in stats["std_ratio"]],
                     "seconds": round(time.perf_counter() - t0, 2)})
        print(rows[-1], flush=True)
    report = {**header("mixture", argv), "exact_weights": [round(float(w), 3) for w in post.weights],
              "samples": args.samples, "fit_steps": args.fit_steps, "seed": args.seed, "rows": rows}
    write_json(f"{args.out}.json", report)
    print(f"\nexact weights {report['exact_weights']}, {args.samples} samples per method\n")
    print("| method | mode fractions | max weight error | mean error per mode (std) | std ratio per mode | s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {' / '.join(map(str, r['fractions']))} | {r['max_weight_error']} | "
              f"{' / '.join(map(str, r['mean_err']))} | {' / '.join(map(str, r['std_ratio']))} | {r['seconds']} |")


if __name__ == "__main__":
    main()

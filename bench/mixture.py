"""Exact multimodal posteriors: how each method's samples split between the modes of a Gaussian mixture.

    python bench/mixture.py --samples 1024 --out bench/mixture            # CPU, about a minute

The three-mode example of ``vipaint.gaussian_mixture.three_mode_example`` (4x4, right half missing,
σ_y = 0.05): the exact posterior weights are 0.612 / 0.271 / 0.117 (prior: 0.5 / 0.3 / 0.2). Each sample
goes to its most responsible exact mode; reported: the fraction per mode, the largest absolute error
against the exact weights, the per-mode mean error and std ratio on the missing pixels (units of the
exact within-mode std), seconds. Rows for VIPaint separate the stages: with and without the fit
(``fit0``), isotropic (``cg0``) or covariance-aware (``cg10``) likelihood gradients, and the isotropic
gradient at twice its weight (``ζ2``, ``configs/infer_default.yaml``'s setting for the MNIST prior). ``exact`` samples the
true posterior: its error is the sampling noise of the fractions. Nothing here is asserted; the VIPaint
``cg10`` row is also a test (``tests/test_gaussian_mixture.py``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vipaint.baselines import DPSConfig, REDDiffConfig, RePaintConfig, dps, red_diff, repaint  # noqa: E402
from vipaint.fit import FitConfig  # noqa: E402
from vipaint.gaussian_mixture import mode_statistics, three_mode_example  # noqa: E402
from vipaint.likelihood import GaussianLikelihood  # noqa: E402
from vipaint.refine import RefineConfig  # noqa: E402
from vipaint.sampler import VIPaintConfig, vipaint  # noqa: E402
from vipaint.schedule import NoiseSchedule, linear_alphas_cumprod  # noqa: E402


def methods(n_fit: int):
    def vip(fit_steps: int, cg: int, scale: float = 1.0):
        def run(prior, op, y, n, g):
            cfg = VIPaintConfig(fit=FitConfig(n_iter=fit_steps, n_samples=8),
                                refine=RefineConfig(n_steps=50, scale=scale))
            return vipaint(prior, op, GaussianLikelihood(op, prior, cg_steps=cg), y, n_samples=n, config=cfg,
                           generator=g).samples
        return run

    return {
        f"VIPaint-2 fit{n_fit} cg10": vip(n_fit, 10),
        "VIPaint-2 fit0 cg10": vip(0, 10),
        f"VIPaint-2 fit{n_fit} cg0": vip(n_fit, 0),
        "VIPaint-2 fit0 cg0": vip(0, 0),
        f"VIPaint-2 fit{n_fit} cg0 ζ2": vip(n_fit, 0, 2.0),   # the shipped MNIST job's guidance weight
        "DPS-1000": lambda p, o, y, n, g: dps(p, o, y, n, DPSConfig(), g)[0],
        "RED-diff-100": lambda p, o, y, n, g: red_diff(p, o, y, n, REDDiffConfig(), g)[0],
        "RePaint-250/10/10": lambda p, o, y, n, g: repaint(p, o, y, n, RePaintConfig(), g)[0],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--fit-steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench/mixture")
    args = ap.parse_args(argv)
    prior, op, y, keep, post = three_mode_example(NoiseSchedule(linear_alphas_cumprod()))
    rows = []
    exact, _ = post.sample(args.samples, torch.Generator().manual_seed(args.seed))
    runs = {"exact posterior": lambda *a: exact.float()[None], **methods(args.fit_steps)}
    for name, run in runs.items():
        t0 = time.perf_counter()
        samples = run(prior, op, y, args.samples, torch.Generator().manual_seed(args.seed))[0]
        stats = mode_statistics(samples, post, keep)
        rows.append({"method": name, "fractions": [round(float(f), 3) for f in stats["fractions"]],
                     "max_weight_error": round(float((stats["fractions"] - post.weights).abs().max()), 3),
                     "mean_err": [round(v, 3) for v in stats["mean_err"]],
                     "std_ratio": [round(v, 3) for v in stats["std_ratio"]],
                     "seconds": round(time.perf_counter() - t0, 2)})
        print(rows[-1], flush=True)
    report = {"exact_weights": [round(float(w), 3) for w in post.weights], "samples": args.samples,
              "date": time.strftime("%Y-%m-%d"), "device": "cpu", "rows": rows}
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nexact weights {report['exact_weights']}, {args.samples} samples per method\n")
    print("| method | mode fractions | max weight error | mean error per mode (std) | std ratio per mode | s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {' / '.join(map(str, r['fractions']))} | {r['max_weight_error']} | "
              f"{' / '.join(map(str, r['mean_err']))} | {' / '.join(map(str, r['std_ratio']))} | {r['seconds']} |")


if __name__ == "__main__":
    main()

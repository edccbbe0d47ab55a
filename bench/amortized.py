"""Hand-made vs amortized initialisation: the bound and the scores after 0, 5, 10, 25, 50 fit iterations.

    python -m bench.amortized --n-images 100 --masks mix4 --precision bf16          # the shipped encoder
    python -m bench.amortized --encoder runs/amortized_mnist/checkpoints/last.ckpt --n-images 8   # a checkpoint

MNIST test digits x the benchmark's masks (seeded; the same digits, masks, observation noise and sampling
seeds for both inits). Every (init, fit budget) is one ``vipaint.Inpainter`` (``init="hand"``, or
``init="amortized"`` with the encoder, which it checks like ``infer.py`` does: K, channels, trained keypoints),
built once and called on every batch with the batch's seed, so the first N iterations of a longer fit are the
N-iteration fit. For each init and fit budget: the bound after the fit (nats per image, an 8-sample estimate,
``Restoration.bound``), the plausibility of the refined samples (``vipaint.evaluation.scoring.score_inpainting``:
the bench's digit classifier), PSNR in the hole, and the pipeline's own cost of the call: wall seconds per image
(``Restoration.seconds``: encoder + fit + the bound's estimate + sampling and refinement) and network evaluations
per image (``Restoration.nfe``, the bound's estimate included, as in ``bench.compare``). The claim under test:
amortized init with 10 iterations reaches the bound and the plausibility of hand-made init with 50 (5x fewer fit
passes). "Reaches" is judged per digit (paired): the mean difference must not be below zero by more than two
standard errors. Prints a table and writes JSON (default under ``bench/results/``) whether or not the claim holds.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from amortized.encoder import shipped_encoder_for
from bench.compare import DEFAULT_MASKS, SIGMA_Y, add_common_args, apply_overrides, masks_for, setup
from bench.report import RESULTS, header, write_json
from datamodules.masks import MIX4
from vipaint.evaluation.scoring import score_inpainting
from vipaint.jobs.api import Inpainter
from vipaint.operators import OperatorConfig
from vipaint.pipeline import VIPaintConfig

EVAL_SAMPLES = 8  # Monte Carlo samples of the reported bound (per-digit standard error ~1-2 nats)
INITS = ("hand", "amortized")


def make_solvers(prior, encoder: str, base: VIPaintConfig, budgets: list[int], samples: int) -> dict:
    """{(init, budget): Inpainter}, the amortized ones first so that an encoder that does not fit fails early."""
    operator = OperatorConfig(sigma_y=SIGMA_Y, add_noise=True)
    solvers = {}
    for init in reversed(INITS):
        for n in budgets:
            cfg = dataclasses.replace(base, fit=dataclasses.replace(base.fit, n_iter=n))
            solvers[(init, n)] = Inpainter(prior, "vipaint", vipaint=cfg, operator=operator, n_samples=samples,
                                           init=init, encoder=encoder if init == "amortized" else None)
    return {(init, n): solvers[(init, n)] for init in INITS for n in budgets}


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error of a - b over the same digits."""
    d = torch.tensor(a) - torch.tensor(b)
    return float(d.mean()), float(d.std() / len(d) ** 0.5)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--samples", type=int, default=4, help="refined samples per digit (plausibility)")
    ap.add_argument("--budgets", default="0,5,10,25,50")
    ap.add_argument("--masks", default=None, help="comma-separated mask presets, or mix4 (default: the four "
                                                  "benchmark masks, each on every digit)")
    ap.add_argument("--keypoints", default=None, help="comma-separated nominal keypoint levels (VIPaintConfig."
                                                      "keypoints; default 550,400; must be the encoder's)")
    ap.add_argument("--vipaint-set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                    help="VIPaintConfig overrides for both inits (e.g. refine.scale=1: the isotropic guidance weight "
                         "instead of the prior's tuned one)")
    ap.add_argument("--seed", type=int, default=0)
    add_common_args(ap, RESULTS / "amortized.json")
    args = ap.parse_args(argv)

    device, prior, x_all, labels, classify = setup(args)
    path = args.encoder or shipped_encoder_for(prior)
    if path is None:
        raise SystemExit(f"--encoder is needed: the prior {args.prior!r} has no shipped encoder")
    base = apply_overrides(VIPaintConfig(n_eval_samples=EVAL_SAMPLES), args.vipaint_set)
    if args.keypoints:
        base = dataclasses.replace(base, keypoints=tuple(int(k) for k in args.keypoints.split(",")))
    budgets = [int(b) for b in args.budgets.split(",")]
    solvers = {key: s.to(device) for key, s in make_solvers(prior, str(path), base, budgets, args.samples).items()}
    size = prior.image_shape[-1]
    acc = {key: {"elbo": [], "plausibility": [], "psnr": [], "mask": [], "seconds": 0.0, "nfe": 0.0, "failed": 0}
           for key in solvers}
    for mask in (args.masks or DEFAULT_MASKS[args.data]).split(","):
        keep_all = masks_for(mask, len(x_all), size, args.seed)
        for i in range(0, len(x_all), args.batch):
            x, keep = x_all[i:i + args.batch].to(device), keep_all[i:i + args.batch].to(device)
            lab = None if labels is None else labels[i:i + args.batch]
            for key, solver in solvers.items():
                res = solver(x, keep, torch.Generator().manual_seed(args.seed + i))   # same noise and seeds for all
                a = acc[key]
                sc = score_inpainting(res.samples.cpu(), x.cpu(), res.y_image.cpu(), keep.cpu(), classify, lab, None)
                a["elbo"] += res.bound["elbo"].cpu().tolist()
                a["psnr"] += sc["psnr_hole"].tolist()
                a["plausibility"] += sc["plausibility_mean"].tolist() if "plausibility_mean" in sc else []
                a["mask"] += [MIX4[k % 4] if mask == "mix4" else mask for k in range(i, i + len(x))]
                a["seconds"] += res.seconds * len(x)
                a["nfe"] += res.nfe * len(x)
                a["failed"] += len(res.failed)
            print(f"{mask}: {i + len(x)}/{len(x_all)} digits", flush=True)
    rows = []
    for (init, steps), a in acc.items():
        count = len(a["elbo"])
        row = {"init": init, "fit_iters": steps, "images": count, "elbo": sum(a["elbo"]) / count,
               "psnr_hole": sum(a["psnr"]) / count, "seconds_per_image": a["seconds"] / count,
               "nfe_per_image": a["nfe"] / count, "failed_images": a["failed"]}
        if a["plausibility"]:
            p = torch.tensor(a["plausibility"])
            row |= {"plausibility": float(p.mean()), "plausibility_se": float(p.std() / count ** 0.5),
                    "plausibility_by_mask": {m: float(p[[k for k, mk in enumerate(a["mask"]) if mk == m]].mean())
                                             for m in dict.fromkeys(a["mask"])}}
        rows.append(row)
    verdict = None
    ref, cand = acc.get(("hand", 50)), acc.get(("amortized", 10))
    if ref and cand:
        verdict = {"elbo_diff": paired(cand["elbo"], ref["elbo"])}
        if ref["plausibility"]:
            verdict["plausibility_diff"] = paired(cand["plausibility"], ref["plausibility"])
        verdict["holds"] = all(m + 2 * se >= 0 for m, se in (v for k, v in verdict.items() if k.endswith("_diff")))
    resolved = solvers[("hand", budgets[0])].settings()["vipaint"]   # the prior's tuned values filled in
    resolved["fit"]["n_iter"] = "per row (fit_iters)"
    report = {**header("amortized", argv, device), "prior": args.prior, "encoder": str(path),
              "precision": args.precision, "n_images": len(x_all), "masks": args.masks or DEFAULT_MASKS[args.data],
              "samples": args.samples, "sigma_y": SIGMA_Y, "eval_samples": EVAL_SAMPLES,
              "vipaint_set": args.vipaint_set, "vipaint": resolved,
              "keypoints": list(base.keypoints), "rows": rows, "claim_amortized10_vs_hand50": verdict}
    write_json(Path(args.out), report)
    print("\n| init | fit iterations | bound (nats) | plausibility | PSNR hole | s / image | NFE / image |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        plaus = f"{r['plausibility']:.3f} ± {r['plausibility_se']:.3f}" if "plausibility" in r else "-"
        print(f"| {r['init']} | {r['fit_iters']} | {r['elbo']:.1f} | {plaus} | {r['psnr_hole']:.2f} | "
              f"{r['seconds_per_image']:.2f} | {r['nfe_per_image']:.0f} |")
    print(f"\namortized + 10 vs hand-made + 50 (paired mean difference, s.e.): {verdict}\nwrote {args.out}")


if __name__ == "__main__":
    main()

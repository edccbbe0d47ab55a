"""Hand-made vs amortized initialisation: the bound and the scores after 0, 5, 10, 25, 50 fit iterations.

    python bench/amortized.py --n-images 100 --masks mix4 --precision bf16          # the shipped encoder
    python bench/amortized.py --encoder runs/amortized_mnist/checkpoints/last.ckpt --n-images 8   # a checkpoint

MNIST test digits x the benchmark's masks (seeded; the same digits, masks, observation noise and sampling
seeds for both inits). Per init, one fit of the largest budget is snapshotted after each smaller one (the same
as separate fits: the fit's schedule does not depend on its length). For each init and fit budget: the bound
after the fit (nats per image, an 8-sample estimate), the plausibility of the refined samples (``vipaint.scoring.score_inpainting``: the bench's digit
classifier), PSNR in the hole, wall seconds per image (encoder + fit + sampling + refinement; the reported
bound's own passes are left out) and network evaluations per image. The claim under test: amortized init with
10 iterations reaches the bound and the plausibility of hand-made init with 50 (5x fewer fit passes).
"Reaches" is judged per digit (paired): the mean difference must not be below zero by more than two standard
errors. Prints a table and writes JSON whether or not the claim holds.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amortized.encoder import encoder_for, shipped_encoder_for  # noqa: E402
from amortized.module import initial_posterior  # noqa: E402
from datamodules.masks import MIX4  # noqa: E402
from bench.compare import DEFAULT_MASKS, SIGMA_Y, add_common_args, masks_for, setup, write_json  # noqa: E402
from vipaint.fit import fit  # noqa: E402
from vipaint.likelihood import GaussianLikelihood  # noqa: E402
from vipaint.operators import Inpainting  # noqa: E402
from vipaint.posterior import HierarchicalPosterior  # noqa: E402
from vipaint.sampler import VIPaintConfig, hand_made_posterior, resolve_keypoints, vipaint  # noqa: E402
from vipaint.scoring import score_inpainting  # noqa: E402

EVAL_SAMPLES = 8  # Monte Carlo samples of the reported bound (per-digit standard error ~1-2 nats)


def run_batch(prior, encoder, cfg: VIPaintConfig, budgets: list[int], x, keep, samples: int, seed: int) -> dict:
    """One batch, one init: a single fit of max(budgets) iterations whose λ is snapshotted after each budget
    (the fit's schedule does not depend on its length, so the first N iterations of a long fit are an N-iteration
    fit), then per budget: the bound (not timed), refined samples, wall seconds (init + the first N iterations +
    sampling and refinement) and NFE per image. Returns {budget: (bound (B,), samples, seconds, nfe)}, y."""
    op = Inpainting(keep, SIGMA_Y)
    gen = torch.Generator().manual_seed(seed)
    y = op.observe(x, gen)
    lik = GaussianLikelihood(op, prior)
    keypoints = resolve_keypoints(prior, cfg.keypoints)
    K, B = len(keypoints), len(x)
    t0 = time.perf_counter()
    post = (hand_made_posterior(prior, op, y, cfg, gen) if encoder is None else
            initial_posterior(encoder, prior, keypoints, op, y, keep, cfg.eta, cfg.init_gamma, cfg.init_var_scale))
    snaps: dict[int, tuple] = {}

    def snapshot(done: int) -> None:
        if done in budgets:
            snaps[done] = ([p.detach().clone() for p in (post.mu, post.logvar, post.gamma)], time.perf_counter() - t0)

    snapshot(0)
    fit(prior, post, lik, y, dataclasses.replace(cfg.fit, n_iter=max(budgets)), gen, on_step=lambda it: snapshot(it + 1))
    no_fit = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, n_iter=0))
    out = {}
    for n in budgets:
        params, seconds = snaps[n]
        p = HierarchicalPosterior(keypoints, prior.latent_shape, batch=B, eta=cfg.eta).to(x.device)
        p.load_parameters(*params)
        timings: dict[str, float] = {}
        res = vipaint(prior, op, lik, y, samples, no_fit, torch.Generator().manual_seed(seed + 1), posterior=p,
                      timings=timings)
        nfe = n * (K + 1) * cfg.fit.n_samples + res.nfe - (K + 1) * cfg.n_eval_samples   # the bound is measurement
        out[n] = (res.bound["elbo"].float(), res.samples.detach().float(), seconds + timings["chain"] + timings["refine"], nfe)
    return out, y


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error of a - b over the same digits."""
    d = torch.tensor(a) - torch.tensor(b)
    return float(d.mean()), float(d.std() / len(d) ** 0.5)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default=None, help="encoder folder or AmortizedModule checkpoint (default: the "
                                                    "shipped encoder of the shipped prior)")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--samples", type=int, default=4, help="refined samples per digit (plausibility)")
    ap.add_argument("--budgets", default="0,5,10,25,50")
    ap.add_argument("--masks", default=None, help="comma-separated mask presets, or mix4 (default: the four "
                                                  "benchmark masks, each on every digit)")
    ap.add_argument("--keypoints", default=None, help="comma-separated timestep indices (default: the prior's "
                                                      "default keypoints; must be the encoder's)")
    ap.add_argument("--seed", type=int, default=0)
    add_common_args(ap, "bench/amortized.json")
    args = ap.parse_args(argv)

    device, prior, x_all, labels, classify = setup(args)
    path = args.encoder or shipped_encoder_for(prior)
    if path is None:
        raise SystemExit(f"--encoder is needed: the prior {args.prior!r} has no shipped encoder")
    base = VIPaintConfig(keypoints=tuple(int(k) for k in args.keypoints.split(",")) if args.keypoints else None,
                         n_eval_samples=EVAL_SAMPLES)
    # the same lookup and checks (K, channels, trained keypoints) as `infer.py --model.init amortized`
    encoder = encoder_for(prior, resolve_keypoints(prior, base.keypoints), path).to(device)
    size = prior.image_shape[-1]
    budgets = [int(b) for b in args.budgets.split(",")]
    acc = {(init, n): {"elbo": [], "plausibility": [], "psnr": [], "mask": [], "seconds": 0.0, "nfe": 0.0}
           for init in ("hand", "amortized") for n in budgets}
    for mask in (args.masks or DEFAULT_MASKS[args.data]).split(","):
        keep_all = masks_for(mask, len(x_all), size, args.seed)
        for i in range(0, len(x_all), args.batch):
            x, keep = x_all[i:i + args.batch].to(device), keep_all[i:i + args.batch].to(device)
            lab = None if labels is None else labels[i:i + args.batch]
            for init in ("hand", "amortized"):
                out, y = run_batch(prior, encoder if init == "amortized" else None, base, budgets, x, keep,
                                   args.samples, args.seed + i)
                for n, (elbo, samples, secs, nfe) in out.items():
                    a = acc[(init, n)]
                    sc = score_inpainting(samples.cpu(), x.cpu(), y.cpu(), keep.cpu(), classify, lab, None)
                    a["elbo"] += elbo.cpu().tolist()
                    a["psnr"] += sc["psnr_hole"].tolist()
                    a["plausibility"] += sc["plausibility_mean"].tolist() if "plausibility_mean" in sc else []
                    a["mask"] += [MIX4[k % 4] if mask == "mix4" else mask for k in range(i, i + len(x))]
                    a["seconds"] += secs
                    a["nfe"] += nfe * len(x)
            print(f"{mask}: {i + len(x)}/{len(x_all)} digits", flush=True)
    rows = []
    for (init, steps), a in acc.items():
        count = len(a["elbo"])
        row = {"init": init, "fit_iters": steps, "images": count, "elbo": sum(a["elbo"]) / count,
               "psnr_hole": sum(a["psnr"]) / count, "seconds_per_image": a["seconds"] / count,
               "nfe_per_image": a["nfe"] / count}
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
    report = {"prior": args.prior, "encoder": str(path), "precision": args.precision, "n_images": len(x_all),
              "masks": args.masks or DEFAULT_MASKS[args.data], "samples": args.samples, "sigma_y": SIGMA_Y,
              "eval_samples": EVAL_SAMPLES, "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
              "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
              "command": " ".join(["python bench/amortized.py", *(argv if argv is not None else sys.argv[1:])]),
              "rows": rows, "claim_amortized10_vs_hand50": verdict}
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

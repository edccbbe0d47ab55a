"""Hand-made vs amortized initialisation: the bound and the scores after 0, 5, 10, 25, 50 fit iterations.

    python bench/amortized.py --data mnist --encoder-ckpt ENC.ckpt --n-images 100

Test images x the benchmark's masks for the data set (seeded, the same for both inits). For each init and fit
budget: the bound (nats per image, 16-sample estimate), the plausibility (MNIST) and LPIPS of the refined
samples (``vipaint.scoring.score_inpainting``), and wall seconds per image. The claim under test: amortized init + 10 iterations reaches
at least the bound and LPIPS of hand-made init + 50 (5x fewer network passes). Prints a table and
writes JSON, whether or not the claim holds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.compare import DEFAULT_MASKS, add_common_args, masks_for, setup  # noqa: E402
from vipaint.fit import FitConfig  # noqa: E402
from vipaint.scoring import score_inpainting  # noqa: E402
from vipaint.module import VIPaintModule  # noqa: E402
from vipaint.sampler import VIPaintConfig  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder-ckpt", required=True)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--budgets", default="0,5,10,25,50")
    add_common_args(ap, "bench/amortized.json")
    args = ap.parse_args(argv)

    device, prior, x_all, labels, classify = setup(args)
    names = [f"test_{i:05d}" for i in range(len(x_all))]
    masks = DEFAULT_MASKS[args.data].split(",")
    size = prior.image_shape[-1]
    rows = []
    for init in ("hand", "amortized"):
        for steps in [int(s) for s in args.budgets.split(",")]:
            module = VIPaintModule(prior=prior, init=init, encoder_ckpt=args.encoder_ckpt if init == "amortized" else None,
                                   vipaint=VIPaintConfig(fit=FitConfig(n_iter=steps)), n_samples=args.samples,
                                   progress=False, log_images=False).to(device)
            elbo, plaus, lp, secs = [], [], [], 0.0
            for mask_kind in masks:
                keep_all = masks_for(mask_kind, len(names), size, 0)
                for i in range(0, len(names), args.batch):
                    batch = {"x": x_all[i:i + args.batch].to(device), "keep_mask": keep_all[i:i + args.batch].to(device),
                             "name": names[i:i + args.batch], "index": torch.arange(i, i + len(names[i:i + args.batch]))}
                    t0 = time.perf_counter()
                    out = module._run(batch, i)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    secs += time.perf_counter() - t0
                    ok = [b for b, s in enumerate(out["status"]) if s == "ok"]
                    elbo += [out["bound"][b]["elbo"] for b in ok]
                    lab = None if labels is None else labels[i:i + args.batch][ok]
                    sc = score_inpainting(out["samples"][ok], out["x"][ok], out["y"][ok], out["keep_mask"][ok],
                                          classify, lab, None if args.lpips_net == "none" else args.lpips_net,
                                          args.lpips_backbone)
                    lp += sc["lpips_mean"].tolist()
                    plaus += sc.get("plausibility_mean", torch.zeros(0)).tolist()
            row = {"init": init, "fit_steps": steps, "elbo": sum(elbo) / len(elbo), "lpips": sum(lp) / len(lp),
                   "plausibility": sum(plaus) / len(plaus) if plaus else None,
                   "seconds_per_image": secs / (len(names) * len(masks)), "images": len(elbo)}
            rows.append(row)
            print(row, flush=True)
    hand50 = next((r for r in rows if r["init"] == "hand" and r["fit_steps"] == 50), None)
    am10 = next((r for r in rows if r["init"] == "amortized" and r["fit_steps"] == 10), None)
    claim = None if not (hand50 and am10) else bool(am10["elbo"] >= hand50["elbo"] and am10["lpips"] <= hand50["lpips"])
    report = {"prior": args.prior, "encoder": args.encoder_ckpt, "date": time.strftime("%Y-%m-%d"),
              "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(), "rows": rows,
              "claim_amortized10_matches_hand50": claim}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("| init | fit steps | bound (nats) | LPIPS | s / image |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['init']} | {r['fit_steps']} | {r['elbo']:.1f} | {r['lpips']:.4f} | {r['seconds_per_image']:.2f} |")
    print(f"claim (amortized+10 >= hand+50 on both): {claim}")


if __name__ == "__main__":
    main()

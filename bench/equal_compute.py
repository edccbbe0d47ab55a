"""Quality against cost: each method at three budgets on one mask, plausibility against seconds per image.

    python bench/equal_compute.py --data mnist --mask half --n-images 100      # CPU: about an hour
    python bench/equal_compute.py --n-images 8 --budgets "vipaint2=5,10 dps=20,50"   # a quick look

Budgets (default): VIPaint-2 fit iterations 10 / 25 / 50; DPS steps 100 / 250 / 1000; RED-diff steps
25 / 50 / 100; RePaint levels 50 / 100 / 250. Every point is ``bench/compare.py``'s ``evaluate`` (same
digits, masks, noise and scoring). Writes ``<out>.json`` and ``<out>.png`` (one curve per method; MNIST:
plausibility, else PSNR in the hole) and prints the table. The question: at the same wall time per image,
which method wins?
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.compare import add_common_args, evaluate, setup, table  # noqa: E402

DEFAULT_BUDGETS = "vipaint2=10,25,50 dps=100,250,1000 red_diff=25,50,100 repaint=50,100,250"


def plot(rows: list[dict], metric: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["seconds_per_image"], r[metric], r["budget"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        for s, v, b in pts:
            ax.annotate(str(b), (s, v), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (log)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against cost, mask '{rows[0]['mask']}'")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mask", default="half")
    ap.add_argument("--budgets", default=DEFAULT_BUDGETS, help="'method=b1,b2,... method=...'")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--vipaint-set", nargs="*", default=[])
    ap.add_argument("--seed", type=int, default=0)
    add_common_args(ap, "bench/equal_compute")
    args = ap.parse_args(argv)
    device, prior, x_all, labels, classify = setup(args)
    rows = []
    for item in args.budgets.split():
        method, _, budgets = item.partition("=")
        for b in budgets.split(","):
            rows.append(evaluate(args, device, prior, x_all, labels, classify, method, int(b), args.mask))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    metric = "plausibility_mean" if labels is not None else "psnr_hole"
    plot(rows, metric, f"{args.out}.png")
    report = {"prior": args.prior, "data": args.data, "mask": args.mask, "n_images": len(x_all),
              "samples": args.samples, "date": time.strftime("%Y-%m-%d"),
              "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
              "command": " ".join(["python bench/equal_compute.py", *(argv if argv is not None else sys.argv[1:])]),
              "rows": rows}
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + table(rows) + f"\n\nwrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()

"""Quality against cost: each method at three budgets on one mask, plausibility against seconds per image.

    python bench/equal_compute.py --data mnist --mask pixels90 --n-images 32 --batch 16   # CPU: about 40 min
    python bench/equal_compute.py --n-images 8 --budgets "vipaint2=5,10 dps=20,50"   # a quick look

Budgets (default, spanning about 0.5-10 s per digit on a 2-core CPU): VIPaint-2 fit iterations 10 / 25 / 50,
and 0 / 10 / 25 from the amortized encoder's λ; DPS steps 50 / 100 / 250; RED-diff steps 25 / 100 / 400;
RePaint levels 15 / 25 / 50. Every point is ``bench/compare.py``'s ``evaluate`` (same
digits, masks, noise and scoring). Writes ``<out>.json`` and ``<out>.png`` (one curve per method; MNIST:
plausibility, else PSNR in the hole) and prints the table. The question: at the same wall time per image,
which method wins?
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.compare import add_common_args, evaluate, finished_rows, run_header, setup, table, write_json  # noqa: E402

DEFAULT_BUDGETS = "vipaint2=10,25,50 vipaint2_amortized=0,10,25 dps=50,100,250 red_diff=25,100,400 repaint=15,25,50"


def plot(rows: list[dict], metric: str, path: str, n_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["seconds_per_image"], r[metric], r.get(f"{metric}_se", 0.0), r["budget"])
                     for r in rows if r["method"] == method)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=2,
                    label=method)   # error bars: one standard error over images
        for s, v, _, b in pts:
            ax.annotate(str(b), (s, v), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (log)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against cost: mask '{rows[0]['mask']}', {n_images} images, ±1 s.e.", fontsize=10)
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
    ap.add_argument("--resume", action="store_true", help="keep the points of <out>.json measured with the same settings")
    add_common_args(ap, "bench/equal_compute")
    args = ap.parse_args(argv)
    device, prior, x_all, labels, classify = setup(args)
    report = {**run_header(args, device, len(x_all), "equal_compute.py", argv), "mask": args.mask}
    out = Path(f"{args.out}.json")
    done = finished_rows(out, report) if args.resume else {}
    for item in args.budgets.split():
        method, _, budgets = item.partition("=")
        for b in budgets.split(","):
            row = done.get((method, int(b), args.mask))
            if row is None:
                row = evaluate(args, device, prior, x_all, labels, classify, method, int(b), args.mask)
            report["rows"].append(row)
            print(table([row]).splitlines()[-1], flush=True)
            write_json(out, report)
    rows = report["rows"]
    metric = "plausibility_mean" if labels is not None else "psnr_hole"
    plot(rows, metric, f"{args.out}.png", len(x_all))
    print("\n" + table(rows) + f"\n\nwrote {out} and {args.out}.png")


if __name__ == "__main__":
    main()

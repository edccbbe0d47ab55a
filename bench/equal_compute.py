"""Quality against cost: each method at three budgets on one mask, plausibility against seconds per image.

    python -m bench.equal_compute --data mnist --mask pixels90 --n-images 32 --batch 16   # CPU: about 40 min
    python -m bench.equal_compute --n-images 8 --budgets "vipaint2=5,10 dps=20,50"   # a quick look
    python -m bench.equal_compute --plot PIXEL.json LATENT.json --out bench/results/equal_compute_cifar10  # together

Budgets (default, spanning about 0.5-10 s per digit on a 2-core CPU): VIPaint-2 fit iterations 10 / 25 / 50,
and 0 / 10 / 25 from the amortized encoder's λ; DPS steps 50 / 100 / 250; RED-diff steps 25 / 100 / 400;
RePaint levels 15 / 25 / 50. Every point is ``bench.compare``'s ``evaluate`` through ``vipaint.Inpainter`` (same
digits, masks, noise and scoring). Writes ``<out>.json`` and ``<out>.png`` (default under ``bench/results/``;
one curve per method; ``--metric``, by default plausibility where a classifier scores, else LPIPS, else PSNR in
the hole) and prints the table. The question: at the
same wall time per image, which method wins?
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from bench.compare import add_common_args, measure, parse_method, run_header, setup
from bench.report import RESULTS
from bench.tables import table
from vipaint.atomic import atomic_write_bytes

DEFAULT_BUDGETS = "vipaint2=10,25,50 vipaint2_amortized=0,10,25 dps=50,100,250 red_diff=25,100,400 repaint=15,25,50"
#: Axis labels of the usual plotted scores, with the direction that is better (any other row key plots as named).
LABELS = {"lpips_mean": "LPIPS, mean over samples (lower is better)",
          "plausibility_mean": "plausibility (higher is better)", "energy_score": "energy score (lower is better)",
          "psnr_hole": "PSNR in the hole, dB (higher is better)"}


def curves(rows: list[dict], metric: str) -> dict[str, dict]:
    """Each curve's points and style: ``row["curve"]`` (default: the method) → ``{"points": [(seconds per image,
    metric, its SE, budget), ...] by seconds, "colour": one per method, "linestyle": row["linestyle"] or solid}``."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("curve", r["method"]), []).append(r)
    colours: dict[str, str] = {}
    out: dict[str, dict] = {}
    for curve, mine in groups.items():
        out[curve] = {"points": sorted((r["seconds_per_image"], float(r[metric]), float(r.get(f"{metric}_se", 0.0)),
                                        r["budget"]) for r in mine),
                      "colour": colours.setdefault(mine[0]["method"], f"C{len(colours)}"),
                      "linestyle": mine[0].get("linestyle", "-")}
    return out


def default_metric(rows: list[dict]) -> str:
    """The plotted score where ``--metric`` is not given: plausibility where a classifier scored the rows, else
    LPIPS, else PSNR in the hole."""
    return ("plausibility_mean" if "plausibility_mean" in rows[0] else
            "lpips_mean" if "lpips_mean" in rows[0] else "psnr_hole")


def plot(rows: list[dict], metric: str, path: str, n_images: int) -> None:
    """``curves(rows, metric)`` drawn: seconds per image (log) against ``metric`` ± one standard error over images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, c in curves(rows, metric).items():
        pts = c["points"]
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=2,
                    label=name, color=c["colour"], linestyle=c["linestyle"])
        for s, v, _, b in pts:
            ax.annotate(str(b), (s, v), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (log)")
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title(f"quality against cost: mask '{rows[0]['mask']}', {n_images} images, ±1 s.e. over images", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))   # outside: the curves fill the axes
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_runs(paths: list[str], metric: str | None, out: str) -> None:
    """Several runs' points on one figure, each curve named "prior: method" (runs on the same images and mask)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    if len({(r["mask"], r["n_images"], r.get("split")) for r in reports}) > 1:
        raise SystemExit("--plot: the runs differ in mask, images or split; plot runs of the same images and mask")
    rows = [{**row, "curve": f"{Path(str(r['prior'])).name}: {row['method']}",
             "linestyle": ("-", "--", ":", "-.")[i % 4]} for i, r in enumerate(reports) for row in r["rows"]]
    metric = metric or default_metric(rows)
    plot(rows, metric, out, reports[0]["n_images"])
    print(f"wrote {out}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mask", default="half")
    ap.add_argument("--budgets", default=DEFAULT_BUDGETS, help="'method=b1,b2,... method=...'")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--vipaint-set", nargs="*", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="keep the points of <out>.json measured with the same settings")
    ap.add_argument("--metric", default=None, help="the plotted score (a row key, e.g. lpips_mean, energy_score); "
                                                   "default: plausibility where labelled, else LPIPS, else PSNR in the hole")
    add_common_args(ap, RESULTS / "equal_compute")
    ap.add_argument("--plot", nargs="+", metavar="JSON", help="only plot earlier runs on one figure (e.g. a pixel "
                                                                "and a latent prior's, same images and mask) to <out>.png")
    args = ap.parse_args(argv)
    if args.plot:
        return plot_runs(args.plot, args.metric, f"{args.out}.png")
    device, prior, x_all, labels, classify = setup(args)
    report = {**run_header(args, device, len(x_all), "equal_compute", argv), "mask": args.mask}
    out = Path(f"{args.out}.json")
    specs = [(*parse_method(f"{method}:{b}"), args.mask) for item in args.budgets.split()
             for method, _, budgets in [item.partition("=")] for b in budgets.split(",")]
    rows = measure(args, device, prior, x_all, labels, classify, specs, report, out)
    metric = args.metric or default_metric(rows)
    plot(rows, metric, f"{args.out}.png", len(x_all))
    print("\n" + table(rows) + f"\n\nwrote {out} and {args.out}.png")


if __name__ == "__main__":
    main()

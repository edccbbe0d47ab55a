"""Ablations of VIPaint (bench/README "Open questions", 2): one setting changed at a time against the defaults, paired
over the same digits, masks, seeds and observation noise (``compare.evaluate``, the one scoring function).

    python -m bench.ablations --n-images 50 --masks box50,pixels90 --out bench/results/ablations_mnist.json --resume
    python -m bench.ablations --variants default,K1,K4 --n-images 8        # a quick look
    python -m bench.ablations --render bench/results/ablations_mnist.json   # the README table of a run

Each variant is VIPaint-2 (K = 2, the hand-made λ; ``--method vipaint2_amortized``: from the amortized
encoder's λ) with ``--vipaint-set`` overrides (``VARIANTS``): the number and
place of the keypoints, the bound's weights, fit only / refinement only, and splits of a fixed network budget
between the fit and the refinement (per image: fit ``n_iter · (K + 1) · fit.n_samples`` plus ``(K - 1 + refine
steps) · samples``; the default 25 · 3 · 4 + 4 · 26 = 404). Rows carry per-image scores, so the table gives each
variant's paired difference from the defaults with its standard error.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.compare import add_common_args, evaluate, make_inpainter, run_header, setup
from bench.report import RESULTS, write_json
from bench.tables import paired_se

#: name -> (what it tests, ``--vipaint-set`` overrides of VIPaint-2's defaults).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "default": ("VIPaint-2 defaults: keypoints 550/400, fit 25, refine 25", []),
    "K1": ("K = 1: keypoint 400", ["keypoints=[400]"]),
    "K4": ("K = 4: 550/500/450/400", ["keypoints=[550, 500, 450, 400]"]),
    "K6": ("K = 6: 650/600/.../400", ["keypoints=[650, 600, 550, 500, 450, 400]"]),
    "Ts_low": ("hierarchy ends lower: 550/400/300/200", ["keypoints=[550, 400, 300, 200]"]),
    "Ts_high": ("hierarchy ends higher: 700/550", ["keypoints=[700, 550]"]),
    "top_700": ("top keypoint higher, same end: 700/400", ["keypoints=[700, 400]"]),
    "init_noise": ("initial means with noise (std 0.5, the authors' range 0.1-0.8)", ["init.mean_noise=0.5"]),
    "init_var_x2": ("initial variances below the top keypoint ×2", ["init.var_scale=2"]),
    "refine_ddim": ("refinement by DDIM (η = 0) instead of ancestral steps", ["refine.eta=0"]),
    "refine_50": ("50 refinement steps instead of 25", ["refine.n_steps=50"]),
    "zeta_1": ("refinement guidance weight ζ = 1 (the prior's tuned weight is 2)", ["refine.scale=1"]),
    "lr_logvar_x10": ("the fit moves the variances 10× faster (lr_logvar 1e-2)", ["fit.lr_logvar=0.01"]),
    "no_hier_kl": ("no KL between keypoints (β_hier = 0)", ["fit.beta_hier=0"]),
    "no_prior_term": ("no prior term above the top keypoint (β_prior = 0)", ["fit.beta_prior=0"]),
    "fit_only": ("fit only: x̂_0 of the bottom keypoint, no guided refinement", ["refine.n_steps=1", "refine.scale=0"]),
    "refine_only": ("refinement only: no fit (the hand-made λ as is)", ["fit.n_iter=0"]),
    "split_8_76": ("fixed budget (~404 NFE): fit 8, refine 76", ["fit.n_iter=8", "refine.n_steps=76"]),
    "split_17_50": ("fixed budget (~408 NFE): fit 17, refine 50", ["fit.n_iter=17", "refine.n_steps=50"]),
    "split_32_4": ("fixed budget (~404 NFE): fit 32, refine 4", ["fit.n_iter=32", "refine.n_steps=4"]),
}


def measure(args, device, prior, x_all, labels, classify, report: dict, out: Path) -> list[dict]:
    """Each (variant, mask) in turn, variant-major; with ``--resume`` rows of ``out`` measured with the same overrides
    are kept. The report is written after every row."""
    done = {}
    if args.resume and out.is_file():
        old = json.loads(out.read_text())
        same = all(old.get(k) == report.get(k) for k in ("prior", "data", "n_images", "samples", "seed", "sigma_y",
                                                          "method"))
        done = {(r["variant"], r["mask"]): r for r in old["rows"]} if same else {}
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}: one of {', '.join(VARIANTS)}")
    for name in names:             # variant-major: a run stopped early still pairs each variant on every mask
        for mask in args.masks.split(","):
            overrides = VARIANTS[name][1]
            row = done.get((name, mask))
            if row is None or row.get("overrides") != overrides:
                solver = make_inpainter(prior, args.method, None, args.samples, overrides, encoder=args.encoder)
                solver = solver.to(device)
                row = evaluate(args, device, solver, x_all, labels, classify, args.method, None, mask)
                row.update(variant=name, overrides=overrides)
            report["rows"].append(row)
            print(f"{name:14s} {mask:9s} " + " ".join(f"{k} {row[k]:.4f}" for k in HEADLINE if k in row), flush=True)
            write_json(out, report)
    return report["rows"]


HEADLINE = ("plausibility_mean", "lpips_mean", "energy_score", "psnr_hole", "diversity_hole", "seconds_per_image")


def readme_table(report: dict) -> str:
    """Variant rows per mask: the headline score (plausibility where a classifier scored, else LPIPS, else PSNR in
    the hole; ± SE) and the energy score, each with its paired difference from the defaults on the same images
    (± SE), PSNR in the hole, diversity, seconds and NFE per image."""
    rows = report["rows"]
    key = next(k for k in ("plausibility_mean", "lpips_mean", "psnr_hole") if k in rows[0])
    name = {"plausibility_mean": "plaus.", "lpips_mean": "LPIPS", "psnr_hole": "PSNR hole"}[key]
    cover = "pit_coverage_50" in rows[0]
    head = ["mask", "variant", name, f"Δ {name} (paired)", "energy score", "Δ ES (paired)", "PSNR hole", "diversity",
            *(["cover. 50 / 90%"] if cover else []), "s / image", "NFE / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mask in dict.fromkeys(r["mask"] for r in rows):
        group = [r for r in rows if r["mask"] == mask]
        base = next((r for r in group if r["variant"] == "default"), None)

        def delta(r, k):
            if base is None or r is base:
                return "–"
            d, se = paired_se(r, base, k)
            return f"{d:+.3f} ± {se:.3f}"

        for r in group:
            se = f" ± {r[key + '_se']:.3f}" if key + "_se" in r else ""
            lines.append(f"| {mask} | {VARIANTS[r['variant']][0] if r['variant'] in VARIANTS else r['variant']} | "
                         f"{r[key]:.3f}{se} | {delta(r, key)} | {r['energy_score']:.3f} | {delta(r, 'energy_score')} | "
                         f"{r['psnr_hole']:.2f} | {r['diversity_hole']:.3f} | "
                         + (f"{r['pit_coverage_50']:.2f} / {r['pit_coverage_90']:.2f} | " if cover else "")
                         + f"{r['seconds_per_image']:.2f} | "
                         f"{r['nfe_per_image']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated of: " + ", ".join(VARIANTS))
    ap.add_argument("--masks", default="box50,pixels90")
    ap.add_argument("--method", choices=["vipaint2", "vipaint2_amortized"], default="vipaint2",
                    help="the variants' base: the hand-made λ (the paper's) or the amortized encoder's")
    ap.add_argument("--batch", type=int, default=25, help="digits fitted / sampled together")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="keep the rows of --out measured with the same settings")
    ap.add_argument("--render", metavar="JSON", help="print the README table of an earlier run's JSON and exit")
    add_common_args(ap, RESULTS / "ablations_mnist.json")
    args = ap.parse_args(argv)
    if args.render:
        print(readme_table(json.loads(Path(args.render).read_text())))
        return
    args.vipaint_set = []
    device, prior, x_all, labels, classify = setup(args)
    report = run_header(args, device, len(x_all), "ablations", argv)
    if args.method != "vipaint2":        # files of the hand-made base, written before the option, lack the key
        report["method"] = args.method
    measure(args, device, prior, x_all, labels, classify, report, Path(args.out))
    print("\n" + readme_table(report) + f"\n\nwrote {args.out}")


if __name__ == "__main__":
    main()

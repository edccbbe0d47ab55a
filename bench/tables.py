"""How the benches print their rows: the console table of a run (``table``), the README table grouped by mask
(``readme_table``), and paired differences between two rows on the same images (``paired_se``). Rows are the
dicts ``bench.compare.evaluate`` returns.
"""
from __future__ import annotations

import torch

__all__ = ["paired_se", "table", "readme_table", "COLUMNS", "LABELS", "UNITS"]


def paired_se(a: dict, b: dict, key: str) -> tuple[float, float]:
    """(mean of a − b, its standard error) over the images two rows share, paired image by image; images where
    either is NaN (stored as the string, e.g. a PIT coverage with nothing informative) are left out."""
    d = torch.tensor([float(u) - float(v) for u, v in zip(a["per_image"][key], b["per_image"][key])])
    d = d[d.isfinite()]
    return float(d.mean()), float(d.std() / len(d) ** 0.5)


COLUMNS = [("plausibility_mean", "plaus.", 3), ("plausibility_best", "plaus. best", 3), ("psnr_hole", "PSNR hole", 2),
           ("ssim_hole", "SSIM hole", 3), ("lpips_mean", "LPIPS", 3), ("lpips_best", "LPIPS best", 3),
           ("diversity_hole", "diversity", 3), ("kid", "KID", 4), ("energy_score", "energy score", 4),
           ("pit_coverage_50", "cover. 50%", 2), ("pit_coverage_90", "cover. 90%", 2), ("consistency_rms", "obs. RMS", 4),
           ("saturated_hole", "saturated", 3),
           ("seconds_per_image", "s / image", 2), ("nfe_per_image", "NFE / image", 0)]


def _fmt(value, digits: int) -> str:
    """A number (or the "NaN" string strict JSON stores for one) with ``digits`` decimals."""
    return f"{float(value):.{digits}f}"


def table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| method | budget | mask | " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * (3 + len(cols))]
    for r in rows:
        vals = [_fmt(r[k], d) if k in r else "-" for k, _, d in cols]
        lines.append(f"| {r['method']} | {'default' if r['budget'] is None else r['budget']} | {r['mask']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


LABELS = {"vipaint2": "VIPaint-2, hand-made init (paper)", "vipaint2_amortized": "VIPaint-2, amortized init (default)",
          "vipaint4": "VIPaint-4, hand-made init", "dps": "DPS", "psld": "PSLD", "red_diff": "RED-diff",
          "repaint": "RePaint", "mean_fill": "mean-colour fill", "conditional": "conditional DDPM (trained for the task)"}
UNITS = {"dps": "steps", "psld": "steps", "red_diff": "steps", "repaint": "levels", "conditional": "steps"}


def _budget(r: dict) -> str:
    if r["method"].startswith("vipaint"):
        return f"fit {r['settings']['fit']['n_iter']}"
    steps = r["settings"].get("n_levels", r["settings"].get("n_steps"))
    return "-" if steps is None else f"{steps} {UNITS.get(r['method'], 'steps')}"


def readme_table(report: dict) -> str:
    """The table of ``bench/README.md`` from a run's JSON: rows grouped by mask in run order, the headline score
    ± its standard error, the best of each mask in bold (ties all bold). The headline: LPIPS (lower is better) on
    natural images, the paper's metric, where the run scored it; else plausibility (higher is better), the digits'
    headline where a classifier scored the run."""
    rows = report["rows"]
    lpips = report.get("data") != "mnist" and any("lpips_mean" in r for r in rows)
    plaus = any("plausibility_mean" in r for r in rows) and not lpips
    key, better = ("plausibility_mean", max) if plaus else ("lpips_mean", min)
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    cols = [(k, f"best of {report['samples']}", 2) if k == "plausibility_best" else (k, h, d) for k, h, d in cols]
    unit = "digit" if report.get("data") == "mnist" else "image"
    head = ["mask", "method", "budget", *(h.replace("image", unit) for _, h, _ in cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    masks = list(dict.fromkeys(r["mask"] for r in rows))
    for mask in masks:
        group = [r for r in rows if r["mask"] == mask]
        best = better(round(float(r[key]), 3) for r in group if key in r)
        for r in group:
            vals = []
            for k, _, d in cols:
                v = _fmt(r[k], d) if k in r else "-"
                if k == key:
                    v += f" ± {r[k + '_se']:.3f}" if k + "_se" in r else ""
                    v = f"**{v}**" if round(float(r[k]), 3) == best else v
                vals.append(v)
            lines.append(f"| {mask} | {LABELS.get(r['method'], r['method'])} | {_budget(r)} | " + " | ".join(vals) + " |")
    return "\n".join(lines)

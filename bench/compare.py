"""Side-by-side benchmark: VIPaint vs DPS, RED-diff and RePaint on the same prior, images and masks.

    python bench/compare.py --data mnist --n-images 100 --samples 4                 # the MNIST table (CPU: hours)
    python bench/compare.py --data mnist --n-images 8 --methods vipaint2,dps:50      # a quick look
    python bench/compare.py --data cifar10 --prior DIR --masks box50,half --device cuda

Methods are ``NAME[:BUDGET]``: vipaint2 / vipaint4 (K = 2 / 4 keypoints; budget = fit iterations),
vipaint2_amortized (VIPaint-2 from the amortized encoder's λ, ``amortized/``; the shipped prior's encoder),
dps, red_diff (budget = steps), repaint (budget = levels of its 250/10/10 grid); no budget = the method's
default. ``--vipaint-set fit.n_samples=4 refine.n_steps=25`` overrides ``VIPaintConfig`` fields for every
VIPaint run. Images: MNIST test digits (first N; with labels for the plausibility score), CIFAR-10 test
(first N, one per class in turn), or the scikit-image photos (``--data demo``). Masks are seeded per image
and identical for every method. Every method is scored by ``vipaint.scoring.score_inpainting`` (MNIST:
plausibility by the bench's digit classifier, ``bench/digit_classifier.py``). Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.masks import MIX4, PRESETS  # noqa: E402
from vipaint.baselines import BASELINES  # noqa: E402
from vipaint.external import PixelPrior  # noqa: E402
from vipaint.likelihood import GaussianLikelihood  # noqa: E402
from vipaint.operators import Inpainting  # noqa: E402
from vipaint.sampler import VIPaintConfig, resolve_keypoints, vipaint  # noqa: E402
from vipaint.schedule import DEFAULT_KEYPOINTS  # noqa: E402
from vipaint.scoring import score_inpainting  # noqa: E402

DEFAULT_MASKS = {"mnist": "half,box50,strokes,pixels90", "cifar10": "box50,random_boxes,half,strokes",
                 "demo": "box50,half"}
SIGMA_Y = 0.05


def load_images(data: str, n: int, size: int, path: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n test images at the prior's size, and their labels (MNIST) or None."""
    if data == "mnist":
        from datamodules.mnist import load_mnist

        x, labels = load_mnist(path, "test")
        return x[:n], labels[:n]
    if data == "cifar10":
        from datamodules.cifar10 import Cifar10DataModule

        dm = Cifar10DataModule(zip_path=path, split="test", limit=n, batch_size=n)
    else:
        from datamodules.demo import DemoDataModule

        dm = DemoDataModule(image_size=size, limit=n, batch_size=n)
    dm.setup("predict")
    return next(iter(dm.predict_dataloader()))["x"], None



def masks_for(kind: str, n: int, size: int, seed: int) -> torch.Tensor:
    """Seeded masks for n images; "mix4" gives image i the mask kind MIX4[i % 4] (one run over every kind)."""
    kinds = [MIX4[i % 4] if kind == "mix4" else kind for i in range(n)]
    return torch.stack([PRESETS[k]((size, size), torch.Generator().manual_seed(seed + i)) for i, k in enumerate(kinds)])


VIPAINT_METHODS = ("vipaint2", "vipaint4", "vipaint2_amortized")


def parse_method(spec: str) -> tuple[str, int | None]:
    name, _, budget = spec.partition(":")
    if name not in VIPAINT_METHODS and name not in BASELINES:
        raise SystemExit(f"unknown method {name!r}: one of {sorted(VIPAINT_METHODS)} or {sorted(BASELINES)}")
    return name, int(budget) if budget else None


def vipaint_config(name: str, budget: int | None, overrides: list[str]) -> VIPaintConfig:
    """VIPaintConfig for vipaint2/vipaint4, the fit budget and ``section.field=value`` overrides."""
    cfg = VIPaintConfig(keypoints=DEFAULT_KEYPOINTS[int(name[len("vipaint")])])
    for item in overrides:
        key, _, value = item.partition("=")
        *path, field = key.split(".")
        target = cfg
        for p in path:
            target = getattr(target, p)
        if not hasattr(target, field):
            raise SystemExit(f"--vipaint-set {item}: VIPaintConfig has no field {key}")
        setattr(target, field, yaml.safe_load(value))
    if budget is not None:
        cfg.fit.n_iter = budget
    return cfg


@functools.lru_cache(maxsize=None)
def _encoder(prior, keypoints: tuple[int, ...]):
    """The prior's encoder, read from disk once per run rather than once per batch."""
    from amortized.encoder import encoder_for

    return encoder_for(prior, list(keypoints))


def run_method(name: str, budget: int | None, prior, op, y, samples: int, gen, overrides: list[str]):
    """(samples (B, N, C, H, W), network evaluations per image, the settings used)."""
    if name.startswith("vipaint"):
        cfg = vipaint_config(name, budget, overrides)
        lik = GaussianLikelihood(op, prior, cfg.likelihood.marginalize_denoiser, cfg.likelihood.cg_steps)
        posterior = None
        if name.endswith("_amortized"):   # the encoder's λ instead of the hand-made one; its cost is in the seconds
            from amortized.module import initial_posterior

            keypoints = resolve_keypoints(prior, cfg.keypoints)
            encoder = _encoder(prior, tuple(keypoints)).to(y.device)
            posterior = initial_posterior(encoder, prior, keypoints, op, y, op.keep_mask, cfg.eta, cfg.init_gamma,
                                          cfg.init_var_scale)
        out = vipaint(prior, op, lik, y, samples, cfg, gen, posterior=posterior)
        return out.samples, out.nfe, {"fit": dataclasses.asdict(cfg.fit), "refine": dataclasses.asdict(cfg.refine),
                                      "n_eval_samples": cfg.n_eval_samples, "keypoints": list(cfg.keypoints)}
    fn, cfg_cls = BASELINES[name]
    cfg = cfg_cls()
    if budget is not None:
        setattr(cfg, "n_levels" if name == "repaint" else "n_steps", budget)
    s, nfe_per_sample = fn(prior, op, y, samples, cfg, gen)
    return s, nfe_per_sample * samples, dataclasses.asdict(cfg)


def add_common_args(ap: argparse.ArgumentParser, out: str) -> None:
    """Options every image benchmark shares: prior, data, LPIPS weights, device, output path."""
    ap.add_argument("--prior", default="vipaint-mnist", help="shipped name, diffusers folder or hub id")
    ap.add_argument("--data", choices=["mnist", "cifar10", "demo"], default="mnist")
    ap.add_argument("--data-path", default=None, help="MNIST folder / CIFAR-10 zip (else $VIPAINT_MNIST_DIR / "
                                                       "$VIPAINT_CIFAR10_ZIP)")
    ap.add_argument("--n-images", type=int, default=100)
    ap.add_argument("--lpips-backbone", default=None, help="LPIPS backbone folder (else $VIPAINT_LPIPS_BACKBONE_DIR)")
    ap.add_argument("--lpips-net", default="alex", help="LPIPS network; 'none' skips LPIPS")
    ap.add_argument("--precision", choices=["32", "bf16"], default="32", help="network precision (autocast)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=out)


def setup(args):
    """(device, prior, images, labels or None, classify function or None)."""
    device = torch.device(args.device)
    prior = PixelPrior(args.prior, precision=args.precision).to(device)
    x, labels = load_images(args.data, args.n_images, prior.image_shape[-1], args.data_path)
    classify = None
    if labels is not None:
        from bench.digit_classifier import load_or_train

        clf, info = load_or_train(args.data_path)
        print(f"digit classifier: clean test accuracy {info['test_accuracy']:.4f}", flush=True)
        classify = lambda im: clf.classify(im.cpu())  # noqa: E731
    return device, prior, x, labels, classify


def evaluate(args, device, prior, x_all, labels, classify, name: str, budget: int | None, mask: str) -> dict:
    """One method on one mask over all images: mean scores, seconds and NFE per image."""
    size = prior.image_shape[-1]
    keep_all = masks_for(mask, len(x_all), size, args.seed)
    scores, seconds, nfe, settings = [], 0.0, 0.0, None
    for i in range(0, len(x_all), args.batch):
        x, keep = x_all[i:i + args.batch].to(device), keep_all[i:i + args.batch].to(device)
        op = Inpainting(keep, SIGMA_Y)
        gen = torch.Generator().manual_seed(args.seed + i)
        y = op.observe(x, gen)
        t0 = time.perf_counter()
        s, nfe_i, settings = run_method(name, budget, prior, op, y, args.samples, gen, args.vipaint_set)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        nfe += nfe_i * len(x)
        lab = None if labels is None else labels[i:i + args.batch]
        scores.append(score_inpainting(s.cpu(), x.cpu(), y.cpu(), keep.cpu(), classify, lab,
                                       None if args.lpips_net == "none" else args.lpips_net, args.lpips_backbone))
    merged = {k: torch.cat([sc[k] for sc in scores]) for k in scores[0]}
    row = {"method": name, "budget": budget, "mask": mask, **{k: float(v.mean()) for k, v in merged.items()},
           "seconds_per_image": seconds / len(x_all), "nfe_per_image": nfe / len(x_all), "settings": settings}
    if "plausibility_mean" in merged:   # standard error over images, for "within noise" judgements
        row["plausibility_mean_se"] = float(merged["plausibility_mean"].std() / len(x_all) ** 0.5)
    return row


COLUMNS = [("plausibility_mean", "plaus.", 3), ("plausibility_best", "plaus. best", 3), ("psnr_hole", "PSNR hole", 2),
           ("ssim_hole", "SSIM hole", 3), ("lpips_mean", "LPIPS", 3), ("lpips_best", "LPIPS best", 3),
           ("diversity_hole", "diversity", 3), ("consistency_rms", "obs. RMS", 4),
           ("seconds_per_image", "s / image", 2), ("nfe_per_image", "NFE / image", 0)]


def table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| method | budget | mask | " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * (3 + len(cols))]
    for r in rows:
        vals = [f"{r[k]:.{d}f}" if k in r else "-" for k, _, d in cols]
        lines.append(f"| {r['method']} | {'default' if r['budget'] is None else r['budget']} | {r['mask']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


LABELS = {"vipaint2": "VIPaint-2, hand-made init (paper)", "vipaint2_amortized": "VIPaint-2, amortized init (default)",
          "vipaint4": "VIPaint-4, hand-made init", "dps": "DPS", "red_diff": "RED-diff", "repaint": "RePaint"}
UNITS = {"dps": "steps", "red_diff": "steps", "repaint": "levels"}


def _budget(r: dict) -> str:
    if r["method"].startswith("vipaint"):
        return f"fit {r['settings']['fit']['n_iter']}"
    steps = r["settings"].get("n_levels", r["settings"].get("n_steps"))
    return f"{steps} {UNITS.get(r['method'], 'steps')}"


def readme_table(report: dict) -> str:
    """The table of ``bench/README.md`` from a run's JSON: rows grouped by mask in run order, plausibility ± its
    standard error, the best plausibility of each mask in bold (ties all bold)."""
    rows = report["rows"]
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    cols = [(k, f"best of {report['samples']}", 2) if k == "plausibility_best" else (k, h, d) for k, h, d in cols]
    head = ["mask", "method", "budget", *(h.replace("image", "digit") for _, h, _ in cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    masks = list(dict.fromkeys(r["mask"] for r in rows))
    for mask in masks:
        group = [r for r in rows if r["mask"] == mask]
        best = max(round(r["plausibility_mean"], 3) for r in group)
        for r in group:
            vals = []
            for k, _, d in cols:
                v = f"{r[k]:.{d}f}" if k in r else "-"
                if k == "plausibility_mean":
                    v += f" ± {r['plausibility_mean_se']:.3f}" if "plausibility_mean_se" in r else ""
                    v = f"**{v}**" if round(r[k], 3) == best else v
                vals.append(v)
            lines.append(f"| {mask} | {LABELS.get(r['method'], r['method'])} | {_budget(r)} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def run_header(args, device, n_images: int, script: str, argv) -> dict:
    """What a result file records about its run (settings, device, date, command); ``rows`` is filled in."""
    return {"prior": args.prior, "precision": args.precision, "data": args.data, "n_images": n_images,
            "samples": args.samples, "seed": args.seed, "vipaint_set": args.vipaint_set, "sigma_y": SIGMA_Y,
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
            "command": " ".join([f"python bench/{script}", *(argv if argv is not None else sys.argv[1:])]),
            "rows": []}


SAME_RUN = ("prior", "precision", "data", "n_images", "samples", "seed", "vipaint_set", "sigma_y")


def finished_rows(path: Path, report: dict) -> dict:
    """Rows of an earlier run at ``path`` keyed by (method, budget, mask), if it used the same settings."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    differ = [k for k in SAME_RUN if old.get(k) != report[k]]
    if differ:
        raise SystemExit(f"--resume: {path} was measured with other settings ({', '.join(differ)}); "
                         f"choose another --out")
    return {(r["method"], r["budget"], r["mask"]): r for r in old["rows"]}


def write_json(path: Path, report: dict) -> None:
    """Atomically: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="vipaint2,vipaint4,dps,red_diff,repaint")
    ap.add_argument("--masks", default=None, help=f"comma-separated of {', '.join(PRESETS)}, mix4 (default per data set)")
    ap.add_argument("--batch", type=int, default=8, help="images fitted / sampled together")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--vipaint-set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="keep the rows of --out measured with the same settings")
    add_common_args(ap, "bench/compare.json")
    ap.add_argument("--render", metavar="JSON", help="print the README table of an earlier run's JSON and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(readme_table(json.loads(Path(args.render).read_text())))
        return
    device, prior, x_all, labels, classify = setup(args)
    report = run_header(args, device, len(x_all), "compare.py", argv)
    done = finished_rows(Path(args.out), report) if args.resume else {}
    for mask in (args.masks or DEFAULT_MASKS[args.data]).split(","):
        for spec in args.methods.split(","):
            name, budget = parse_method(spec)
            row = done.get((name, budget, mask))
            if row is None:
                row = evaluate(args, device, prior, x_all, labels, classify, name, budget, mask)
            report["rows"].append(row)
            print(table([row]).splitlines()[-1], flush=True)
            write_json(Path(args.out), report)   # after every row: a long run that stops keeps what it measured
    rows = report["rows"]
    print("\n" + table(rows) + f"\n\nwrote {args.out}")


if __name__ == "__main__":
    main()

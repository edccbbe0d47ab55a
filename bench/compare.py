"""Side-by-side benchmark: VIPaint vs DPS, RED-diff and RePaint on the same prior, images and masks.

    python -m bench.compare --data mnist --n-images 100 --samples 4                 # the MNIST table (CPU: hours)
    python -m bench.compare --data mnist --n-images 8 --methods vipaint2,dps:50      # a quick look
    python -m bench.compare --data cifar10 --prior DIR --masks box50,half --device cuda
    python -m bench.compare --render bench/results/compare_mnist.json               # the README table of a run

Methods are ``NAME[:BUDGET]``: vipaint2 / vipaint4 (K = 2 / 4 keypoints, the paper's hand-made λ; budget = fit
iterations), vipaint2_amortized (VIPaint-2 from the amortized encoder's λ, ``amortized/``; the shipped prior's
encoder), dps, psld, red_diff, conditional (the model trained for the task, ``--methods conditional:STEPS``;
budget = steps), repaint (budget = levels of its 250/10/10 grid); no budget = the
method's default. Every method runs through the one entry point, ``vipaint.Inpainter`` (one per method and
budget, built once per run and reused for every batch and mask): it fills in the prior's tuned settings (the
shipped MNIST prior's guidance weight ζ = 2; ``--vipaint-set refine.scale=1`` for the isotropic weight),
builds the likelihood from ``likelihood.*`` and counts the network evaluations (``Restoration.nfe``).
``--vipaint-set fit.n_samples=4 refine.n_steps=25`` overrides ``VIPaintConfig`` fields for every VIPaint run,
``--baseline-set dps.decoder_error=true`` ``BaselinesConfig`` fields for every baseline run.
Images: MNIST test digits (first N; with labels for the plausibility score), CIFAR-10 test (first N, one per
class in turn), or the scikit-image photos (``--data demo``). Masks are seeded per image and identical for every
method, and so is the observation noise (σ_y = 0.05, drawn from the batch's seed). Every method is scored by
``vipaint.evaluation.scoring.score_inpainting`` (MNIST: plausibility by the bench's digit classifier,
``bench/classifier.py``; CIFAR-10: its own classifier). Prints a table, writes JSON (default under ``bench/results/``), one row at a
time; ``--resume`` keeps the rows of an earlier run with the same settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import yaml

from bench.report import RESULTS, header, write_json
from bench.tables import readme_table, table
from datamodules.masks import MIX4, PRESETS
from vipaint.atomic import to_jsonable
from vipaint.baselines import BASELINES, BaselinesConfig
from vipaint.evaluation.kid import kid, vgg_features
from vipaint.evaluation.metrics import composite
from vipaint.evaluation.scoring import score_inpainting
from vipaint.jobs.api import Inpainter
from vipaint.operators import OperatorConfig, UnsupportedOperator, make_operator
from vipaint.pipeline import VIPaintConfig
from vipaint.priors.external import load_prior
from vipaint.schedule import DEFAULT_KEYPOINTS

DEFAULT_MASKS = {"mnist": "half,box50,strokes,pixels90", "cifar10": "box50,random_boxes,half,strokes",
                 "demo": "box50,half"}
SIGMA_Y = 0.05
#: Tasks beyond inpainting, named in ``--masks`` like a mask: their operator, observed with the masks' σ_y. The
#: whole image is unknown (scored as one hole; consistency through the operator). The blur's std is the authors'
#: 3 px at 256² scaled to these 28-32 px images and kept visible (a std of 0.4 px would barely blur them).
BLUR_STD = 1.5
TASKS = {"blur": OperatorConfig(name="blur", blur_std=BLUR_STD, sigma_y=SIGMA_Y, add_noise=True),
         "sr2": OperatorConfig(name="super_resolution", sr_factor=2, sigma_y=SIGMA_Y, add_noise=True)}
INPAINTING = OperatorConfig(sigma_y=SIGMA_Y, add_noise=True)


def load_images(data: str, n: int, size: int, path: str | None, split: str = "eval",
                plausibility: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n test images at the prior's size, and their labels (MNIST; CIFAR-10 with ``plausibility``) or None: the first n MNIST test digits, the
    CIFAR-10 benchmark split ``split`` (``datamodules.cifar10.bench_images``: held out from the demo set and from
    training's validation images), or the scikit-image photos."""
    if data == "mnist":
        from datamodules.mnist import load_mnist

        x, labels = load_mnist(path, "test")
        return x[:n], labels[:n]
    if data == "cifar10":
        from datamodules.cifar10 import bench_images

        x, labels, _ = bench_images(n, split, zip_path=path)
        return x, labels if plausibility else None
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


def _override(obj, path: list[str], value, item: str, flag: str = "--vipaint-set"):
    """``obj`` (a dataclass) with the field at ``path`` set to ``value``, every level rebuilt so that its own
    checks (``__post_init__``) run on the new value."""
    head, *rest = path
    if not dataclasses.is_dataclass(obj) or head not in {f.name for f in dataclasses.fields(obj)}:
        raise SystemExit(f"{flag} {item}: there is no such field {item.partition('=')[0]}")
    new = _override(getattr(obj, head), rest, value, item, flag) if rest else value
    return dataclasses.replace(obj, **{head: new})


def apply_overrides(cfg, overrides: list[str], flag: str = "--vipaint-set"):
    """``cfg`` (``VIPaintConfig``, or ``BaselinesConfig`` for ``--baseline-set``) with ``section.field=value`` items
    (values parsed as YAML) applied."""
    for item in overrides:
        key, _, value = item.partition("=")
        cfg = _override(cfg, key.split("."), yaml.safe_load(value), item, flag)
    return cfg


def vipaint_config(name: str, budget: int | None, overrides: list[str]) -> VIPaintConfig:
    """VIPaintConfig for vipaint2/vipaint4, the fit budget and ``section.field=value`` overrides."""
    cfg = apply_overrides(VIPaintConfig(keypoints=DEFAULT_KEYPOINTS[int(name[len("vipaint")])]), overrides)
    if budget is not None:
        cfg = _override(cfg, ["fit", "n_iter"], budget, f"fit.n_iter={budget}")
    return cfg


def make_inpainter(prior, name: str, budget: int | None, samples: int, overrides: list[str],
                   operator: OperatorConfig = INPAINTING, encoder: str | None = None,
                   baseline_overrides: list[str] = ()) -> Inpainter:
    """The one entry point configured for method ``name`` at ``budget``: clean test images observed through
    ``operator`` (inpainting by default) with noise σ_y, VIPaint-K from the hand-made λ or
    (``vipaint2_amortized``) from ``encoder`` (a folder or checkpoint; None: the prior's shipped encoder), or a
    baseline."""
    if name in VIPAINT_METHODS:
        cfg = vipaint_config(name, budget, overrides)
        if name.endswith("_amortized"):   # the encoder's λ instead of the hand-made one; its cost is in the seconds
            from amortized.encoder import shipped_encoder_for

            return Inpainter(prior, "vipaint", vipaint=cfg, operator=operator, n_samples=samples, init="amortized",
                             encoder=encoder or shipped_encoder_for(prior))
        return Inpainter(prior, "vipaint", vipaint=cfg, operator=operator, n_samples=samples, init="hand")
    baselines = apply_overrides(BaselinesConfig(), list(baseline_overrides), "--baseline-set")
    if budget is not None:
        if name == "mean_fill":
            raise SystemExit("mean_fill has no budget: write it without ':N'")
        setattr(getattr(baselines, name), "n_levels" if name == "repaint" else "n_steps", budget)
    return Inpainter(prior, name, baselines=baselines, operator=operator, n_samples=samples)


def _repo_relative(path) -> str:
    """``path`` relative to the checkout where it lies inside it (so a row resumes on another clone), else as given."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def settings_of(solver: Inpainter) -> dict:
    """The settings a row was measured with, as plain JSON values (VIPaint: resolved, the prior's tuned values in)."""
    if solver.baseline is not None:
        out = dataclasses.asdict(solver.baseline[1])
    else:
        cfg = solver.config
        out = {"fit": dataclasses.asdict(cfg.fit), "refine": dataclasses.asdict(cfg.refine),
               "likelihood": dataclasses.asdict(cfg.likelihood), "init": dataclasses.asdict(cfg.init),
               "n_eval_samples": cfg.n_eval_samples, "keypoints": list(cfg.keypoints), "initialiser": solver.init}
        if solver.init == "amortized":
            out["encoder"] = _repo_relative(solver.encoder_path)
    return json.loads(json.dumps(to_jsonable(out)))


def add_common_args(ap: argparse.ArgumentParser, out: str | Path) -> None:
    """Options every image benchmark shares: prior, data, LPIPS weights, device, output path."""
    ap.add_argument("--prior", default="vipaint-mnist", help="shipped name, diffusers folder or hub id")
    ap.add_argument("--data", choices=["mnist", "cifar10", "demo"], default="mnist")
    ap.add_argument("--baseline-set", nargs="*", default=[], metavar="METHOD.FIELD=VALUE",
                    help="BaselinesConfig overrides for every baseline run, e.g. dps.decoder_error=true")
    ap.add_argument("--data-path", default=None, help="MNIST folder / CIFAR-10 zip (else $VIPAINT_MNIST_DIR / "
                                                       "$VIPAINT_CIFAR10_ZIP)")
    ap.add_argument("--n-images", type=int, default=100)
    ap.add_argument("--split", choices=["eval", "dev"], default="eval",
                    help="CIFAR-10: the benchmark split (datamodules.cifar10.BENCH_SPLITS; tune on dev, measure on eval)")
    ap.add_argument("--lpips-backbone", default=None, help="LPIPS backbone folder (else $VIPAINT_LPIPS_BACKBONE_DIR)")
    ap.add_argument("--lpips-net", default="alex", help="LPIPS network; 'none' skips LPIPS")
    ap.add_argument("--precision", choices=["32", "bf16"], default="32", help="network precision (autocast)")
    ap.add_argument("--kid", action="store_true", help="CIFAR-10: KID (VGG features) of the composited samples "
                                                      "against the dev split's 900 images")
    ap.add_argument("--plausibility", action="store_true", help="CIFAR-10: score plausibility with the bench's own "
                                                               "classifier (bench/classifier.py; always on for MNIST)")
    ap.add_argument("--encoder", default=None, help="the amortized methods' encoder: a folder or AmortizedModule "
                                                    "checkpoint (default: the shipped encoder of the shipped prior)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(out), help="result path (default: %(default)s)")


def setup(args):
    """(device, prior, images, labels or None, classify function or None)."""
    device = torch.device(args.device)
    prior = load_prior(args.prior, precision=args.precision).to(device)
    x, labels = load_images(args.data, args.n_images, prior.image_shape[-1], args.data_path, args.split,
                            args.plausibility)
    classify = None
    if labels is not None:
        from bench.classifier import load_or_train

        clf, info = load_or_train(args.data, args.data_path)
        print(f"{args.data} classifier: clean test accuracy {info['test_accuracy']:.4f}", flush=True)
        classify = lambda im: clf.classify(im.cpu())  # noqa: E731
    args.kid_features = kid_reference(args) if args.kid else None
    return device, prior, x, labels, classify


def kid_reference(args) -> torch.Tensor:
    """VGG features (``evaluation.kid``) of the KID reference set: the CIFAR-10 "dev" split's 900 test images,
    disjoint from the "eval" images scored (a reference holding the scored images' own truths would favour
    methods that copy the observation)."""
    if args.data != "cifar10" or args.split == "dev":
        raise SystemExit("--kid: the reference is CIFAR-10's dev split; use it with --data cifar10 --split eval")
    from datamodules.cifar10 import BENCH_SPLITS, bench_images
    from vipaint.evaluation.kid import vgg_features

    ref, _, _ = bench_images(10 * len(BENCH_SPLITS["dev"]), "dev", zip_path=args.data_path)
    return vgg_features(ref, args.lpips_backbone)


def evaluate(args, device, solver: Inpainter, x_all, labels, classify, name: str, budget: int | None,
             mask: str) -> dict:
    """One method (its ``Inpainter``) on one mask over all images: mean scores, seconds and NFE per image."""
    size = solver.prior.image_shape[-1]
    task = mask in TASKS
    keep_all = torch.zeros(len(x_all), 1, size, size) if task else masks_for(mask, len(x_all), size, args.seed)
    observe = None
    if task:
        op = make_operator(solver.operator)
        observe = lambda im: op.to_image(op.forward(im))  # noqa: E731
    scores, seconds, nfe, failed, features = [], 0.0, 0.0, 0, []
    for i in range(0, len(x_all), args.batch):
        x, keep = x_all[i:i + args.batch].to(device), keep_all[i:i + args.batch].to(device)
        gen = torch.Generator().manual_seed(args.seed + i)   # the observation noise first, then the method's draws
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = solver(x, None if task else keep, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        nfe += res.nfe * len(x)
        failed += len(res.failed)
        lab = None if labels is None else labels[i:i + args.batch]
        if args.kid_features is not None:
            comp = composite(res.samples.cpu(), x.cpu(), keep.cpu())
            features.append(vgg_features(comp.flatten(0, 1), args.lpips_backbone))
        scores.append(score_inpainting(res.samples.cpu(), x.cpu(), res.y_image.cpu(), keep.cpu(), classify, lab,
                                       None if args.lpips_net == "none" else args.lpips_net, args.lpips_backbone,
                                       observe))
    merged = {k: torch.cat([sc[k] for sc in scores]) for k in scores[0]}
    # The PIT coverage is NaN for an image whose hole holds nothing informative (evaluation.proper.coverage).
    mean = {k: float(v.nanmean() if k.startswith("pit_coverage") else v.mean()) for k, v in merged.items()}
    row = {"method": name, "budget": budget, "mask": mask, **mean,
           "seconds_per_image": seconds / len(x_all), "nfe_per_image": nfe / len(x_all), "failed_images": failed,
           "settings": settings_of(solver)}
    if features:   # KID of all composited samples (images x samples) against the reference set
        row["kid"] = kid(torch.cat(features), args.kid_features)
    for key in ("plausibility_mean", "lpips_mean", "lpips_best", "energy_score"):   # standard errors over images
        if key in merged:
            row[key + "_se"] = float(merged[key].std() / len(x_all) ** 0.5)
    # Per-image values of the headline scores, so that two methods on the same images compare paired (paired_se).
    row["per_image"] = {k: [round(float(v), 5) for v in merged[k]] for k in PAIRED if k in merged}
    return row


#: Scores kept per image in each row (``paired_se``).
PAIRED = ("plausibility_mean", "lpips_mean", "lpips_best", "energy_score", "psnr_hole", "pit_coverage_50",
          "pit_coverage_90")


def run_header(args, device, n_images: int, script: str, argv) -> dict:
    """What a result file records about its run (``bench.report.header``: command, commit, device, date; and the
    settings every row shares); ``rows`` is filled in."""
    return {**header(script, argv, device), "prior": args.prior, "precision": args.precision, "data": args.data,
            "split": args.split if args.data == "cifar10" else None, "n_images": n_images, "samples": args.samples, "seed": args.seed, "vipaint_set": args.vipaint_set,
            "sigma_y": SIGMA_Y, "rows": [],
            # recorded only where given, so that the files of earlier runs still resume
            **({"baseline_set": args.baseline_set} if args.baseline_set else {})}


SAME_RUN = ("prior", "precision", "data", "split", "n_images", "samples", "seed", "vipaint_set", "sigma_y",
            "baseline_set")


def finished_rows(path: Path, report: dict) -> dict:
    """Rows of an earlier run at ``path`` keyed by (method, budget, mask), if it used the same settings."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    differ = [k for k in SAME_RUN if old.get(k) != report.get(k)]
    if differ:
        raise SystemExit(f"--resume: {path} was measured with other settings ({', '.join(differ)}); "
                         f"choose another --out")
    return {(r["method"], r["budget"], r["mask"]): r for r in old["rows"]}


def _within(old, new) -> bool:
    """Every setting recorded in ``old`` has the same value in ``new`` (settings added since are not compared)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and _within(v, new[k]) for k, v in old.items())
    return old == new


def measure(args, device, prior, x_all, labels, classify, specs, report: dict, out: Path) -> list[dict]:
    """Each (method, budget, mask) of ``specs`` in turn: kept from ``out`` with ``--resume`` when measured there with
    the same settings, else evaluated; ``report`` is written after every row, so a long run that stops keeps what
    it measured. One ``Inpainter`` per (method, budget, operator), built on first use and reused for every later
    mask. A method that refuses a task's operator (``UnsupportedOperator``) is skipped on that task."""
    done = finished_rows(out, report) if args.resume else {}
    solvers: dict[tuple[str, int | None, str], Inpainter] = {}
    for name, budget, mask in specs:
        operator = TASKS.get(mask, INPAINTING)
        key = (name, budget, operator.name)
        if key not in solvers:
            try:
                solvers[key] = make_inpainter(prior, name, budget, args.samples, args.vipaint_set, operator,
                                              args.encoder, args.baseline_set).to(device)
            except UnsupportedOperator as err:   # a method for inpainting only, on a task: the one pair skipped
                print(f"{name} skipped on {mask}: {err}", flush=True)
                continue
        solver = solvers[key]
        row = done.get((name, budget, mask))
        if row is not None and not _within(row.get("settings"), settings_of(solver)):
            raise SystemExit(f"--resume: the row {name}:{budget} on {mask} in {out} was measured with other settings "
                             f"(the prior's tuned values or the defaults have changed since); choose another --out")
        if row is None:
            row = evaluate(args, device, solver, x_all, labels, classify, name, budget, mask)
        report["rows"].append(row)
        print(table([row]).splitlines()[-1], flush=True)
        write_json(out, report)
    return report["rows"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="vipaint2,vipaint4,dps,red_diff,repaint")
    ap.add_argument("--masks", default=None, help=f"comma-separated of {', '.join(PRESETS)}, mix4, or the tasks "
                                                  f"{', '.join(TASKS)} (default per data set)")
    ap.add_argument("--batch", type=int, default=8, help="images fitted / sampled together")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--vipaint-set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="keep the rows of --out measured with the same settings")
    add_common_args(ap, RESULTS / "compare.json")
    ap.add_argument("--render", metavar="JSON", help="print the README table of an earlier run's JSON and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(readme_table(json.loads(Path(args.render).read_text())))
        return
    device, prior, x_all, labels, classify = setup(args)
    report = run_header(args, device, len(x_all), "compare", argv)
    specs = [(*parse_method(spec), mask) for mask in (args.masks or DEFAULT_MASKS[args.data]).split(",")
             for spec in args.methods.split(",")]
    rows = measure(args, device, prior, x_all, labels, classify, specs, report, Path(args.out))
    print("\n" + table(rows) + f"\n\nwrote {args.out}")


if __name__ == "__main__":
    main()

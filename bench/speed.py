"""Where VIPaint's time goes, per stage, against DPS on the same network.

    python -m bench.speed --config mnist --images 1 8 32 --methods vipaint2             # CPU, the shipped prior
    python -m bench.speed --config pixel256 latent256 --images 1 4 --precision 32 bf16   # on a GPU
    python -m bench.speed --config tiny --images 1 2 --fit-steps 2 --refine-steps 2       # CPU smoke run

Configs: ``mnist`` = the shipped MNIST prior (real weights) on the shipped demo digits with their masks
(repeated to fill a batch); ``pixel256`` = UNet2DModel with google/ddpm-ema-church-256's configuration (113.7 M params);
``latent256`` = CompVis/ldm-celebahq-256's UNet (274 M) on 3×64×64 latents of a VQ-f4 autoencoder;
``tiny`` = a 16×16 toy for checking the script. Per row: fit seconds per image, refine seconds per
sample, seconds per image of each stage (init, fit, bound estimate, chain, refine) and the share of the
time spent inside the network (forward + backward), network evaluations (single-sample) per image, peak memory, images per hour; and two floors
beside the measured time: FLOPs (counted by torch's FlopCounterMode, ×3 for forward + backward) /
measured matmul throughput, and weight bytes read per batched network call / measured memory
bandwidth (a lower bound on traffic: activations come on top). Each method runs through the one entry point,
``vipaint.Inpainter`` (built once per config, precision and method; VIPaint from the hand-made λ), which reports
the stage seconds (``Restoration.timings``) and the network evaluations (``Restoration.nfe``). Prints a table;
writes JSON (--out, default under ``bench/results/``).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.report import RESULTS, header, write_json
from vipaint.baselines import BaselinesConfig, DPSConfig
from vipaint.fit import FitConfig
from vipaint.jobs.api import Inpainter
from vipaint.priors.external import tiny_random_unet
from vipaint.likelihood import LikelihoodConfig
from vipaint.operators import OperatorConfig
from vipaint.pipeline import VIPaintConfig
from vipaint.priors.external import load_prior
from vipaint.refine import RefineConfig
from vipaint.schedule import DEFAULT_KEYPOINTS

CHURCH = dict(sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
              down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4, attention_head_dim=None,
              downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6)
LDM_UNET = dict(sample_size=64, attention_head_dim=32)   # diffusers' UNet2DModel defaults = ldm-celebahq-256
VQ_F4 = dict(latent_channels=3, block_out_channels=(128, 256, 512), layers_per_block=2, num_vq_embeddings=8192,
             vq_embed_dim=3, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)

def build(config: str, root: Path) -> str:
    from diffusers import DDPMScheduler, UNet2DModel, VQModel

    if config == "mnist":
        return "vipaint-mnist"
    if config == "tiny":        # the test suite's tiny random UNet, at 16 x 16
        return str(tiny_random_unet(root / "tiny", image_size=16))
    torch.manual_seed(0)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    if config == "pixel256":
        UNet2DModel(in_channels=3, out_channels=3, **CHURCH).save_pretrained(root)
        sched.save_pretrained(root)
    else:
        UNet2DModel(in_channels=3, out_channels=3, **LDM_UNET).save_pretrained(root / "unet")
        VQModel(in_channels=3, out_channels=3, **VQ_F4).save_pretrained(root / "vqvae")
        sched.save_pretrained(root / "scheduler")
    return str(root)


def ceilings(device) -> dict[str, float]:
    """Measured matmul throughput (FLOP/s, bf16 and fp32) and memory bandwidth (bytes/s)."""
    def timed(fn, reps=10):
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    n = 8192 if device.type == "cuda" else 1024
    out = {}
    for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
        out[f"matmul_{name}_flops"] = 2 * n**3 / timed(lambda: a @ b)
    x = torch.randn(2**28 if device.type == "cuda" else 2**24, device=device)
    out["bandwidth_bytes"] = 2 * x.numel() * 4 / timed(lambda: x.clone())
    return out


def flops_per_pass(prior, batch: int, device) -> float:
    """FLOPs of one network forward for ``batch`` samples, times 3 for forward + backward to the input."""
    from torch.utils.flop_counter import FlopCounterMode

    z = torch.randn(batch, *prior.latent_shape, device=device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        prior.network_output(z, torch.full((batch,), 500, device=device))
    return 3.0 * fc.get_total_flops()


class NetworkTimer:
    """Adds up the wall time of network forwards (wrapping ``prior.network_output``) and of backward passes
    (wrapping ``torch.autograd.backward`` / ``grad``: their time is the network's backward, the rest of the
    graph being element-wise arithmetic on a few tensors), synchronised on a GPU."""

    def __init__(self, prior, device):
        self.prior, self.device, self.forward, self.backward = prior, device, 0.0, 0.0
        self.inner = prior.network_output
        prior.network_output = self._timed(self.inner, "forward")
        self.saved = torch.autograd.backward, torch.autograd.grad
        torch.autograd.backward = self._timed(self.saved[0], "backward")
        torch.autograd.grad = self._timed(self.saved[1], "backward")

    def _timed(self, fn, kind: str):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            setattr(self, kind, getattr(self, kind) + time.perf_counter() - t0)
            return out
        return wrapper

    def remove(self):
        del self.prior.network_output
        torch.autograd.backward, torch.autograd.grad = self.saved


def demo_batch(images: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped demo digits and masks, repeated to ``images``."""
    from datamodules.demo import MnistDemoDataModule

    dm = MnistDemoDataModule(batch_size=24)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    idx = torch.arange(images) % batch["x"].shape[0]
    return batch["x"][idx].to(device), batch["keep_mask"][idx].to(device)


def make_solver(prior, method: str, args) -> Inpainter:
    """The one entry point for ``method`` at the command line's budgets (σ_y = 0.05, y = A x without noise)."""
    operator = OperatorConfig(sigma_y=0.05)
    if method == "dps":
        return Inpainter(prior, "dps", baselines=BaselinesConfig(dps=DPSConfig(n_steps=args.dps_steps)),
                         operator=operator, n_samples=args.samples)
    cfg = VIPaintConfig(keypoints=DEFAULT_KEYPOINTS[KEYPOINTS[method]], n_eval_samples=args.eval_samples,
                        likelihood=LikelihoodConfig(cg_steps=args.cg_steps),
                        fit=FitConfig(n_iter=args.fit_steps, n_samples=args.fit_samples),
                        refine=RefineConfig(n_steps=args.refine_steps))
    return Inpainter(prior, "vipaint", vipaint=cfg, operator=operator, n_samples=args.samples, init="hand")


def run(solver: Inpainter, images: int, args, device, real_digits: bool = False) -> dict:
    prior = solver.prior
    C, H, W = prior.image_shape
    if real_digits:
        x, keep = demo_batch(images, device)
    else:
        x = torch.rand(images, C, H, W, device=device) * 2 - 1
        keep = torch.ones(images, 1, H, W, device=device)
        keep[..., H // 4: 3 * H // 4, W // 4: 3 * W // 4] = 0
    gen = torch.Generator().manual_seed(0)
    timer = NetworkTimer(prior, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = solver(x, keep, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    timer.remove()
    stages = res.timings   # VIPaint's stages (init, fit, bound, chain, refine); empty for a baseline
    fit_s = stages.get("fit", 0.0) / images
    refine_per_sample = stages.get("refine", total - fit_s * images) / (images * args.samples)
    return {"seconds_per_image": total / images, "fit_seconds_per_image": fit_s, "refine_seconds_per_sample": refine_per_sample,
            "stage_seconds_per_image": {k: v / images for k, v in stages.items()},
            "network_share": (timer.forward + timer.backward) / total,
            "forward_share": timer.forward / total, "backward_share": timer.backward / total,
            "nfe_per_image": res.nfe, "images_per_hour": 3600 * images / total,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


KEYPOINTS = {"vipaint2": 2, "vipaint4": 4}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["pixel256", "latent256"], choices=["mnist", "pixel256", "latent256", "tiny"])
    ap.add_argument("--methods", nargs="+", default=["vipaint2", "vipaint4", "dps"], choices=[*KEYPOINTS, "dps"])
    ap.add_argument("--images", nargs="+", type=int, default=[1], help="images fitted together (batched fitting)")
    ap.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--samples", type=int, default=10)
    # Defaults are the algorithm's own (declared once, in the dataclasses).
    ap.add_argument("--fit-steps", type=int, default=FitConfig.n_iter)
    ap.add_argument("--fit-samples", type=int, default=FitConfig.n_samples)
    ap.add_argument("--refine-steps", type=int, default=RefineConfig.n_steps)
    ap.add_argument("--eval-samples", type=int, default=VIPaintConfig.n_eval_samples,
                    help="Monte Carlo samples of the reported bound")
    ap.add_argument("--cg-steps", type=int, default=0)
    ap.add_argument("--dps-steps", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(RESULTS / "speed.json"), help="result path (default: %(default)s)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    ceil = ceilings(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.config:
            path = build(config, Path(tmp) / config)
            for precision in args.precision:
                kw = dict(local_files_only=True, precision=precision, channels_last=args.channels_last, compile=args.compile)
                if config == "mnist":
                    kw["local_files_only"] = False
                prior = load_prior(path, **kw).to(device)   # a latent prior for latent256's unet/ + vqvae/
                fl = flops_per_pass(prior, 1, device)
                weight_bytes = sum(p.numel() * p.element_size() for p in prior.parameters())
                rate = ceil["matmul_bf16_flops" if precision == "bf16" else "matmul_fp32_flops"]
                for method in args.methods:
                    solver = make_solver(prior, method, args)
                    for images in args.images:
                        r = run(solver, images, args, device, real_digits=config == "mnist")
                        passes = r["nfe_per_image"]
                        K = KEYPOINTS.get(method)
                        # batched network calls (each reads the weights), not evaluations: those are Restoration.nfe
                        calls = args.dps_steps if K is None else \
                            args.fit_steps * (K + 1) + (K + 1) * (args.eval_samples > 0) + (K - 1) + args.refine_steps
                        r.update(config=config, method=method, images=images, precision=precision,
                                 flop_floor_s=fl * passes / rate,
                                 # each batched call reads the weights at least once forward and twice backward
                                 byte_floor_s=weight_bytes * 3 * calls / images / ceil["bandwidth_bytes"],
                                 achieved_tflops=fl * passes / r["seconds_per_image"] / 1e12)
                        rows.append(r)
                        print(r, flush=True)
    write_json(args.out, {**header("speed", argv, device), "ceilings": ceil, "args": vars(args), "rows": rows})
    print("| config | method | images | prec | s/img | init | fit | bound | chain | refine | in network | NFE/img | img/h "
          "| peak GB | FLOP floor s | TFLOP/s |")
    print("|" + "---|" * 16)
    for r in rows:
        st = r["stage_seconds_per_image"]
        parts = " | ".join(f"{st[k]:.3f}" if k in st else "-" for k in ("init", "fit", "bound", "chain", "refine"))
        print(f"| {r['config']} | {r['method']} | {r['images']} | {r['precision']} | {r['seconds_per_image']:.3f} | "
              f"{parts} | {100 * r['network_share']:.0f}% | {r['nfe_per_image']} | "
              f"{r['images_per_hour']:.0f} | {r['peak_mem_gb'] or '-'} | {r['flop_floor_s']:.3f} | {r['achieved_tflops']:.3f} |")


if __name__ == "__main__":
    main()

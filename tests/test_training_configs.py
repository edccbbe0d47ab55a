"""Every shipped training config trains, exports into its own run folder and leaves ``weights/`` untouched; the
autoencoder and the latent prior train, export, resume and load as a ``LatentPrior``; publishing is explicit.

Runs on fake data (a CIFAR-10-shaped zip of random JPEGs, fake MNIST IDX files) with tiny model overrides, from a
temporary working directory (the configs' runs/ paths are relative).
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train  # noqa: E402

CONFIGS = ROOT / "configs"
TRAIN_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("infer_"))  # the rest: infer.py
FAST = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "1",
        "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "4", "--data.init_args.val_limit", "4"]
TINY_UNET = ["--model.init_args.block_out_channels", "[8, 16]", "--model.init_args.layers_per_block", "1",
             "--model.init_args.attention_levels", "[]", "--model.init_args.sample_every_val", "0"]
TINY_AE = ["--model.init_args.block_out_channels", "[8, 16, 16]", "--model.init_args.lpips_weight", "0"]


def _weights_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "weights").rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch) -> Path:
    """A zip in the layout of cifar10_jpeg.zip: 2 classes x (8 train + 4 test) random 32x32 JPEGs."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar.zip"
    with zipfile.ZipFile(path, "w") as z:
        for split, n in (("train", 8), ("test", 4)):
            for cls in ("airplane", "cat"):
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
                    z.writestr(f"{split}/{cls}/{i:04d}.jpg", buf.getvalue())
    monkeypatch.setenv("VIPAINT_CIFAR10_ZIP", str(path))
    return path


def _overrides(name: str, tiny_unet_dir: Path) -> list[str]:
    if name.startswith("autoencoder_"):
        return TINY_AE
    if name.startswith("conditional_"):
        return [*TINY_UNET[:6], "--model.init_args.n_val_fills", "2"]
    if name.startswith("prior_"):
        extra = ["--data.init_args.num_workers", "0"] if "cifar10" in name else []
        if "latent" in name:   # the tiny autoencoder trained just before (configs are run in sorted order)
            extra += ["--model.init_args.channels", "4", "--model.init_args.image_size", "8"]
        return [*TINY_UNET, *extra]
    # amortized_*: a tiny encoder; the CIFAR one on the tiny random prior (no hub access here)
    extra = ["--model.init_args.width", "8", "--model.init_args.depth", "1", "--model.init_args.grid_fit_iters", "1"]
    if "cifar10" in name:
        extra += ["--model.init_args.prior.class_path", "vipaint.priors.external.PixelPrior",
                  "--model.init_args.prior.init_args.pretrained", "tiny-random",
                  "--data.init_args.num_workers", "0"]
    return extra


def test_every_training_config_leaves_weights_untouched(tmp_path, monkeypatch, fake_cifar, fake_mnist, tiny_unet_dir):
    folder = fake_mnist(tmp_path / "mnist", n_train=1040, n_test=40)
    monkeypatch.setenv("VIPAINT_MNIST_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    before = _weights_digest()
    ordered = sorted(TRAIN_CONFIGS, key=lambda n: (not n.startswith("autoencoder_"), n))   # the autoencoder first
    for name in ordered:
        train.main(["fit", "--config", str(CONFIGS / name), *FAST, *_overrides(name, tiny_unet_dir)])
        exports = list((tmp_path / "runs").rglob("export"))
        assert any(name.removesuffix(".yaml") in str(e) for e in exports), f"{name} exported nowhere under runs/"
    assert _weights_digest() == before, "a training run wrote into weights/"


def test_autoencoder_and_latent_prior_train_export_resume_and_load(tmp_path, monkeypatch, fake_cifar):
    from vipaint.priors.external import LatentPrior
    from vipaint.priors.external import load_prior

    monkeypatch.chdir(tmp_path)
    ae_args = ["fit", "--config", str(CONFIGS / "autoencoder_cifar10.yaml"), *FAST, *TINY_AE]
    train.main([*ae_args, "--trainer.max_steps", "1"])
    train.main([*ae_args, "--trainer.max_steps", "2", "--ckpt_path", "last"])     # resumes at step 1
    ckpt = torch.load(tmp_path / "runs/autoencoder_cifar10/checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)
    assert ckpt["global_step"] == 2
    vae_cfg = json.loads((tmp_path / "runs/autoencoder_cifar10/export/config.json").read_text())
    assert vae_cfg["latent_channels"] == 4 and vae_cfg["scaling_factor"] > 0
    # The scaling factor is 1 / std of the latent means the module tracked: set from data, not a placeholder.
    assert vae_cfg["scaling_factor"] == pytest.approx(float(ckpt["state_dict"]["latent_var"]) ** -0.5, rel=1e-5)

    train.main(["fit", "--config", str(CONFIGS / "prior_cifar10_latent.yaml"), *FAST, *TINY_UNET,
                "--data.init_args.num_workers", "0"])
    export = tmp_path / "runs/prior_cifar10_latent/export"
    assert {p.name for p in export.iterdir()} >= {"unet", "vae", "scheduler"}
    prior = load_prior(str(export))
    assert isinstance(prior, LatentPrior) and prior.latent_shape == (4, 8, 8) and prior.image_shape == (3, 32, 32)
    assert prior.scaling_factor == pytest.approx(vae_cfg["scaling_factor"])
    assert prior.data_std == 1.0                                          # unit-variance latents, not pixels
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert prior.decode(prior.encode(x)).shape == x.shape


def test_publish_refuses_to_replace_another_model_without_force(tmp_path):
    from vipaint.priors.publish import publish

    def model(folder: Path, value: float) -> Path:
        from safetensors.torch import save_file

        folder.mkdir(parents=True)
        save_file({"w": torch.full((2,), value)}, str(folder / "diffusion_pytorch_model.safetensors"))
        (folder / "config.json").write_text("{}")
        return folder

    dest = model(tmp_path / "weights" / "m", 1.0)
    (dest / "README.md").write_text("card")
    with pytest.raises(ValueError, match="different model; pass --force"):
        publish(model(tmp_path / "run" / "export", 2.0), dest)
    assert (dest / "README.md").read_text() == "card"
    publish(tmp_path / "run" / "export", dest, force=True)
    from safetensors.torch import load_file

    assert float(load_file(str(dest / "diffusion_pytorch_model.safetensors"))["w"][0]) == 2.0
    assert (dest / "README.md").read_text() == "card"            # the card stays
    publish(tmp_path / "run" / "export", dest)                   # the same model again: no --force needed
    with pytest.raises(ValueError, match="holds no exported weights"):
        publish(tmp_path / "nothing", tmp_path / "weights" / "n")


@pytest.mark.parametrize("native", [False, True])
def test_bf16_configs_run_float32_on_a_cpu_without_native_bf16(tmp_path, monkeypatch, fake_cifar, native):
    """The shipped configs say bf16-mixed; emulated bf16 made a CIFAR-10 training step ~15x slower on an AVX2-only
    host, so there the run is float32 — and the saved config says so, not what was asked."""
    import yaml

    import vipaint.prior as prior_module
    from vipaint.training.common import host_precision

    monkeypatch.setattr(prior_module, "_NATIVE_BF16", {"cpu": native})
    assert host_precision("32-true", "cpu") == "32-true" and host_precision("bf16-mixed", "gpu") == "bf16-mixed"
    monkeypatch.chdir(tmp_path)
    train.main(["fit", "--config", str(CONFIGS / "prior_cifar10.yaml"), *FAST, *TINY_UNET, "--trainer.max_steps", "1",
                "--data.init_args.num_workers", "0"])
    saved = yaml.safe_load(next((tmp_path / "runs/prior_cifar10").rglob("config.yaml")).read_text())
    assert saved["trainer"]["precision"] == ("bf16-mixed" if native else "32-true")
    # run.name (RunConfig) gave the logger and the checkpoints, and the saved config shows them
    assert saved["trainer"]["logger"]["init_args"]["name"] == saved["run"]["name"] == "prior_cifar10"
    ckpt = [c for c in saved["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert [c["init_args"]["dirpath"] for c in ckpt] == ["runs/prior_cifar10/checkpoints"]

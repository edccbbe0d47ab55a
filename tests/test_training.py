"""Training the prior with ``python train.py``: the t sampler, the EMA, export, and resuming a run.

Runs a tiny UNet on a fake MNIST folder (IDX files written by the test) for a few steps on the CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vipaint.schedule import q_sample
from vipaint.training.prior import PriorTrainingModule, sample_timesteps

ROOT_CONFIG = "configs/prior_mnist.yaml"
TINY = ["--model.init_args.block_out_channels", "[8, 16, 16]", "--model.init_args.sample_every_val", "4",
        "--data.init_args.batch_size", "8", "--data.init_args.val_holdout", "16", "--data.init_args.val_limit", "8",
        "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.precision", "32"]


def test_high_t_fraction_moves_the_share_of_t():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(100_000, 1000, 0.3, 400, generator=g)
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    # 30% uniform on [400, 1000) + 70% uniform on [0, 1000): P(t >= 400) = 0.3 + 0.7 * 0.6 = 0.72
    assert abs(float((t >= 400).float().mean()) - 0.72) < 0.01
    t = sample_timesteps(100_000, 1000, 0.0, 400, generator=g)
    assert abs(float((t >= 400).float().mean()) - 0.6) < 0.01


def test_ema_follows_weights_with_warmup():
    m = PriorTrainingModule(image_size=8, channels=1, block_out_channels=[8, 8], layers_per_block=1,
                            attention_levels=[], ema_decay=0.999)
    with torch.no_grad():
        for p in m.unet.parameters():
            p.add_(1.0)
    before = [e.clone() for e in m.ema.parameters()]
    m.update_ema()
    # First update: decay = min(0.999, 1/10) = 0.1, so the EMA moves 90% of the way to the weights.
    for e, b, p in zip(m.ema.parameters(), before, m.unet.parameters()):
        torch.testing.assert_close(e, 0.1 * b + 0.9 * p)
    assert int(m.ema_updates) == 1


def test_train_export_and_resume(tmp_path, monkeypatch, fake_mnist):
    import train

    folder = fake_mnist(tmp_path / "mnist", n_train=64, n_test=8)
    monkeypatch.setenv("VIPAINT_MNIST_DIR", str(folder))
    monkeypatch.chdir(tmp_path)                       # runs/ and the export are written here
    # The shipped config, with a checkpoint every step instead of every 500.
    config = Path(__file__).resolve().parents[1] / ROOT_CONFIG
    export = tmp_path / "export"
    args = ["fit", "--config", str(config), *TINY, "--model.init_args.export_dir", str(export),
            "--run.checkpoint_every", "1"]
    train.main([*args, "--trainer.max_steps", "3"])
    ckpt = tmp_path / "runs" / "prior_mnist" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (export / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((export / "config.json").read_text())["sample_size"] == 28
    first = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert first["global_step"] == 3
    # Resuming continues from step 3 (not from scratch) with the optimiser state and the EMA.
    train.main([*args, "--trainer.max_steps", "5", "--ckpt_path", "last"])
    second = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert second["global_step"] == 5
    assert int(first["state_dict"]["ema_updates"]) == 3        # the EMA of the checkpoint is up to date
    assert int(second["state_dict"]["ema_updates"]) == 5

    from vipaint.priors.external import PixelPrior

    prior = PixelPrior(str(export), local_files_only=True)
    assert prior.image_shape == (1, 28, 28)


def test_v_loss_is_the_eps_loss_weighted_by_one_over_alpha_squared():
    """Whatever the network outputs, read as v̂ its x̂_0 and ε̂ follow (Salimans & Ho 2022), and
    ‖v̂ - v‖² = ‖ε̂ - ε‖² / α_t² at each t: the v objective is the ε objective weighted towards high t."""
    kw = dict(image_size=8, channels=1, block_out_channels=[8, 8], layers_per_block=1, attention_levels=[])
    torch.manual_seed(0)
    m = PriorTrainingModule(**kw, prediction_type="v_prediction")
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1

    def loss_and_eps_mse(module, t_val):
        """The module's loss at t and the ε-MSE of its ε̂ on the same noise draw."""
        t = torch.full((4,), t_val)
        torch.manual_seed(1)
        loss = module.loss(x0, t=t)
        torch.manual_seed(1)
        eps = torch.randn_like(x0)
        z_t = q_sample(x0, eps, module.alphas_cumprod[t_val])
        return loss, torch.nn.functional.mse_loss(module.denoise(module.unet, z_t, t)[1], eps)

    for t_val in (10, 500, 990):
        v_loss, eps_mse = loss_and_eps_mse(m, t_val)
        torch.testing.assert_close(v_loss, eps_mse / float(m.alphas_cumprod[t_val]), rtol=1e-4, atol=1e-6)
    # An ε-model's loss is its ε-MSE exactly.
    torch.testing.assert_close(*loss_and_eps_mse(PriorTrainingModule(**kw), 500))


def test_v_model_exports_its_prediction_type_and_loads_as_one(tmp_path):
    """The exported scheduler says v_prediction, PixelPrior reads it, and the prior's x̂_0 is the training module's
    α_t z_t - σ_t v̂ (one conversion, in ``prior.convert_prediction``); an ε-model warm-starts a v-model."""
    from vipaint.priors.external import PixelPrior

    kw = dict(image_size=8, channels=1, block_out_channels=[8, 8], layers_per_block=1, attention_levels=[])
    torch.manual_seed(0)
    PriorTrainingModule(**kw).export(tmp_path / "eps")
    m = PriorTrainingModule(**kw, prediction_type="v_prediction", init_from=str(tmp_path / "eps"))
    m.export(tmp_path / "v")
    assert json.loads((tmp_path / "v" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    prior = PixelPrior(str(tmp_path / "v"), local_files_only=True)
    assert prior.prediction_type == "v_prediction"
    z = torch.randn(2, 1, 8, 8)
    t = torch.tensor([100, 900])
    ab = m.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    with torch.no_grad():
        v = m.predict(m.ema, z, t)
        x0_hat, eps_hat = prior.denoise(z, t)
    torch.testing.assert_close(x0_hat, ab.sqrt() * z - (1 - ab).sqrt() * v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eps_hat, m.denoise(m.ema, z, t)[1], rtol=1e-4, atol=1e-5)
    assert m.sample(2, steps=3).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("bad", [{"high_t_fraction": 1.5}, {"export_dtype": "int8"}, {"prediction_type": "sample"}])
def test_bad_settings_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        PriorTrainingModule(image_size=8, channels=1, block_out_channels=[8, 8], attention_levels=[], **bad)


def test_warm_start_from_a_weights_folder(tmp_path):
    """init_from copies a shipped folder's UNet into the network and its EMA (float16 weights loaded as float32);
    another architecture is refused by name."""
    kw = dict(image_size=8, channels=1, block_out_channels=[8, 8], layers_per_block=1, attention_levels=[])
    torch.manual_seed(0)
    src = PriorTrainingModule(**kw, export_dtype="float16")
    src.export(tmp_path / "flat")
    warm = PriorTrainingModule(**kw, init_from=str(tmp_path / "flat"))
    for a, b, e in zip(src.ema.parameters(), warm.unet.parameters(), warm.ema.parameters()):
        torch.testing.assert_close(b, a.half().float())
        assert b.dtype == torch.float32 and torch.equal(b, e)
    cold = PriorTrainingModule(**kw)
    assert not all(torch.equal(a, b) for a, b in zip(cold.unet.parameters(), warm.unet.parameters()))
    with pytest.raises(ValueError, match="architecture"):
        PriorTrainingModule(**{**kw, "block_out_channels": [8, 16]}, init_from=str(tmp_path / "flat"))
    with pytest.raises(FileNotFoundError, match="init_from"):
        PriorTrainingModule(**kw, init_from=str(tmp_path))


def test_warm_start_from_the_shipped_latent_prior():
    """A latent prior's folder (unet/ beside vae/, float16): the continuation of the shipped CIFAR-10 prior."""
    from vipaint.priors.external import load_prior
    from vipaint.priors.shipped import SHIPPED_PRIORS

    warm = PriorTrainingModule(image_size=8, channels=4, block_out_channels=[64, 128, 128], layers_per_block=1,
                               attention_levels=[1, 2], init_from=str(SHIPPED_PRIORS["vipaint-cifar10-latent"]))
    shipped = load_prior("vipaint-cifar10-latent").unet
    for a, b in zip(shipped.parameters(), warm.ema.parameters()):
        assert torch.equal(a, b)

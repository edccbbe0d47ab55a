"""diffusers adapters: pixel and latent priors load from local folders saved with save_pretrained, in the
layouts of google/ddpm-ema-church-256 and CompVis/ldm-celebahq-256; missing models fail clearly."""
from __future__ import annotations

import pytest
import torch

from vipaint.priors.external import LatentPrior, PixelPrior, PriorLoadError
from vipaint.fit import FitConfig
from vipaint.likelihood import GaussianLikelihood
from vipaint.operators import Inpainting
from vipaint.refine import RefineConfig
from vipaint.pipeline import VIPaintConfig, vipaint


def _unet(channels: int, size: int, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)


@pytest.fixture(scope="module")
def ldm_dir(tmp_path_factory):
    """A tiny latent diffusion model in the CompVis/ldm-celebahq-256 layout: unet/, vqvae/, scheduler/."""
    from diffusers import DDPMScheduler, VQModel

    root = tmp_path_factory.mktemp("ldm")
    _unet(3, 8).save_pretrained(root / "unet")
    torch.manual_seed(1)
    VQModel(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=4, num_vq_embeddings=32, vq_embed_dim=3, scaling_factor=0.5).save_pretrained(root / "vqvae")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0015,
                  beta_end=0.0195).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def kl_dir(tmp_path_factory):
    from diffusers import AutoencoderKL, DDPMScheduler

    root = tmp_path_factory.mktemp("ldm-kl")
    _unet(4, 8).save_pretrained(root / "unet")
    torch.manual_seed(2)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=4).save_pretrained(root / "vae")
    DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction").save_pretrained(root / "scheduler")
    return root


def test_pixel_prior_layouts(tiny_unet_dir, tmp_path):
    from diffusers import DDPMScheduler

    top = PixelPrior(str(tiny_unet_dir), local_files_only=True)       # church-256 layout: config at the top
    nested = tmp_path / "pipeline"
    top.unet.save_pretrained(nested / "unet")
    DDPMScheduler(num_train_timesteps=1000, prediction_type="sample").save_pretrained(nested / "scheduler")
    sub = PixelPrior(str(nested), local_files_only=True)               # pipeline layout: unet/, scheduler/
    assert sub.prediction_type == "sample" and top.prediction_type == "epsilon"
    assert top.latent_shape == sub.latent_shape == (3, 16, 16)
    z = torch.randn(2, 3, 16, 16)
    assert torch.equal(top.unet(z, torch.tensor([5, 5])).sample, sub.unet(z, torch.tensor([5, 5])).sample)
    assert all(not p.requires_grad for p in top.parameters())


def test_latent_prior_vq(ldm_dir):
    prior = LatentPrior(str(ldm_dir), local_files_only=True)
    assert prior.is_latent and prior.latent_shape == (3, 8, 8) and prior.image_shape == (3, 16, 16)
    assert prior.scaling_factor == 0.5
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = prior.encode(x)
    assert z.shape == (2, 3, 8, 8)
    # The scale factor lives inside encode/decode: decode(encode(x)) equals the raw autoencoder round trip.
    raw = prior.autoencoder.decode(prior.autoencoder.encode(x).latents).sample
    torch.testing.assert_close(prior.decode(z), raw)
    # decode is differentiable (the likelihood is computed on pixels).
    zz = z.clone().requires_grad_(True)
    prior.decode(zz).sum().backward()
    assert zz.grad is not None and zz.grad.abs().sum() > 0


def test_latent_prior_kl_runs_vipaint(kl_dir):
    prior = LatentPrior(str(kl_dir), autoencoder_subfolder="vae", local_files_only=True)
    assert prior.prediction_type == "v_prediction" and prior.latent_shape == (4, 8, 8)
    keep = torch.ones(1, 1, 16, 16)
    keep[..., 8:] = 0
    op = Inpainting(keep, 0.05)
    y = op.forward(torch.rand(1, 3, 16, 16) * 2 - 1)
    cfg = VIPaintConfig(fit=FitConfig(n_iter=2, n_samples=2, n_grid=5), refine=RefineConfig(n_steps=2), n_eval_samples=2)
    out = vipaint(prior, op, GaussianLikelihood(op, prior), y, n_samples=2, config=cfg, generator=torch.Generator().manual_seed(0))
    assert out.samples.shape == (1, 2, 3, 16, 16) and torch.isfinite(out.samples).all()
    assert torch.isfinite(out.bound["elbo"]).all()


def test_decoder_cg_runs_through_a_diffusers_autoencoder(kl_dir):
    """The decoder solve through a real AutoencoderKL (its attention has no double backward on the CPU, hence J v by
    central differences): one CG step is the residual reach's gradient; three move it and stay finite."""
    prior = LatentPrior(str(kl_dir), autoencoder_subfolder="vae", local_files_only=True)
    g = torch.Generator().manual_seed(3)
    op = Inpainting((torch.rand(1, 1, 16, 16, generator=g) < 0.5).float(), 0.05)
    y = op.forward(torch.rand(1, 3, 16, 16, generator=g) * 2 - 1)
    z0 = torch.randn(1, 4, 8, 8, generator=g)

    def gradient(cg_steps: int) -> torch.Tensor:
        z = z0.clone().requires_grad_(True)
        ll = GaussianLikelihood(op, prior, cg_steps=cg_steps)(y, prior.decode(z), 300, z, z)
        return torch.autograd.grad(ll.sum(), z)[0]

    reach, one, three = gradient(0), gradient(1), gradient(3)
    torch.testing.assert_close(one, reach, rtol=1e-3, atol=1e-4 * reach.abs().max().item())
    assert torch.isfinite(three).all() and (three - reach).norm() > 0.01 * reach.norm()


def test_unreachable_hub_id_says_how_to_use_a_folder():
    with pytest.raises(PriorLoadError, match="pretrained DIR"):
        PixelPrior("google/ddpm-cifar10-32", local_files_only=True)


def test_missing_local_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PriorLoadError, match="local folder"):
        PixelPrior(str(tmp_path / "empty"), local_files_only=True)


def test_bf16_and_channels_last_keep_the_bound(tiny_unet_dir):
    """bf16 autocast of the network (float32 bound arithmetic) and NHWC memory change the bound's terms
    by little: measured relative differences <= 9e-5 (bf16) and 0 (channels_last) on this seed, CPU."""
    from vipaint.bound import evaluate_bound
    from vipaint.posterior import HierarchicalPosterior

    keep = torch.ones(2, 1, 16, 16)
    keep[:, :, 4:12, 4:12] = 0
    op = Inpainting(keep, 0.05)
    y = op.forward(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)

    def terms(**kw):
        prior = PixelPrior(str(tiny_unet_dir), local_files_only=True, **kw)
        post = HierarchicalPosterior(prior.schedule.keypoints((550, 400)), prior.latent_shape, batch=2)
        post.initialize(prior, y)
        with torch.no_grad():
            t = evaluate_bound(prior, post, GaussianLikelihood(op, prior), y, 8, 10, torch.Generator().manual_seed(3))
        return {k: float(v.mean()) for k, v in t.per_image(8).items()}

    ref, bf16, nhwc = terms(), terms(precision="bf16"), terms(channels_last=True)
    for k in ref:
        scale = max(1.0, abs(ref[k]))
        assert abs(bf16[k] - ref[k]) / scale < 2e-3, (k, ref[k], bf16[k])
        assert abs(nhwc[k] - ref[k]) / scale < 1e-5, (k, ref[k], nhwc[k])
    with pytest.raises(ValueError, match="precision"):
        PixelPrior(str(tiny_unet_dir), local_files_only=True, precision="fp8")


def test_bf16_falls_back_to_float32_without_native_support(tiny_unet_dir, monkeypatch):
    """Emulated bf16 is 10-30x slower than float32 on an AVX2-only CPU: "bf16" then runs float32, and says so."""
    import vipaint.prior as prior_module

    monkeypatch.setattr(prior_module, "_NATIVE_BF16", {})
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = PixelPrior(str(tiny_unet_dir), local_files_only=True)
    bf16 = PixelPrior(str(tiny_unet_dir), local_files_only=True, precision="bf16")
    with torch.no_grad(), pytest.warns(UserWarning, match="no native bf16"):
        fallback = bf16.denoise(z, 400)[0]
    with torch.no_grad():
        assert torch.equal(fallback, ref.denoise(z, 400)[0])
        monkeypatch.setitem(prior_module._NATIVE_BF16, "cpu", True)      # where it is native, bf16 is used
        assert not torch.equal(bf16.denoise(z, 400)[0], ref.denoise(z, 400)[0])


def test_latent_prior_loads_its_decoder_error(kl_dir, tmp_path):
    """decoder_error "auto" loads vae/decoder_error.safetensors where it is there (else None, as with null); a field
    measured on images of another size is refused in one sentence naming the file."""
    import shutil

    from safetensors.torch import save_file

    from vipaint.decoder_error import DecoderError
    from vipaint.priors.external import DECODER_ERROR_NAME

    folder = tmp_path / "ldm"
    shutil.copytree(kl_dir, folder)
    assert LatentPrior(str(folder), local_files_only=True).decoder_error is None
    errors = 0.1 * torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    save_file({"kernel": DecoderError.estimate(errors).kernel}, str(folder / "vae" / DECODER_ERROR_NAME))
    assert LatentPrior(str(folder), local_files_only=True).decoder_error.rms == pytest.approx(0.1, rel=0.05)
    assert LatentPrior(str(folder), local_files_only=True, decoder_error=None).decoder_error is None
    save_file({"kernel": torch.zeros(3, 3, 8, 8)}, str(folder / "vae" / DECODER_ERROR_NAME))
    with pytest.raises(PriorLoadError, match=f"{DECODER_ERROR_NAME} was measured on"):
        LatentPrior(str(folder), local_files_only=True)


def test_refiner_returns_the_decoder_error_mean(kl_dir):
    """With a field, the refiner's output is D(z_0) + E[e | z_0, y] (the same draws with and without it)."""
    from vipaint.decoder_error import DecoderError
    from vipaint.refine import refine

    prior = LatentPrior(str(kl_dir), local_files_only=True)
    prior.decoder_error = DecoderError.estimate(0.1 * torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    prior.output_range = None   # compare before any clamp
    g = torch.Generator().manual_seed(1)
    op = Inpainting((torch.rand(1, 1, 16, 16, generator=g) < 0.5).float(), 0.05)
    y = op.forward(torch.rand(1, 3, 16, 16, generator=g) * 2 - 1)
    z = torch.randn(2, 4, 8, 8, generator=g)
    lik = GaussianLikelihood(op, prior, cg_steps=0)

    def run(on: bool) -> torch.Tensor:
        cfg = RefineConfig(n_steps=2, decoder_error=on)
        return refine(prior, lik, y, z, 100, cfg, torch.Generator().manual_seed(2))[0]

    plain, completed = run(False), run(True)
    mean = lik.decoder_error_mean(prior.decoder_error, y, plain)
    assert mean.abs().max() > 1e-3
    torch.testing.assert_close(completed, plain + mean, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["dps", "psld"])
def test_latent_baselines_take_the_decoder_error_mean_when_asked(kl_dir, method):
    """``decoder_error`` on DPS and PSLD (off by default, the published methods) adds E[e | z_0, y] to the same draws."""
    from dataclasses import replace

    from vipaint.baselines import BASELINES
    from vipaint.decoder_error import DecoderError
    from vipaint.operators import repeat_observation

    prior = LatentPrior(str(kl_dir), local_files_only=True)
    prior.decoder_error = DecoderError.estimate(0.1 * torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    prior.output_range = None
    g = torch.Generator().manual_seed(1)
    op = Inpainting((torch.rand(1, 1, 16, 16, generator=g) < 0.5).float(), 0.05)
    y = op.forward(torch.rand(1, 3, 16, 16, generator=g) * 2 - 1)
    run, config_cls = BASELINES[method]
    config = config_cls(n_steps=3)
    assert config.decoder_error is False
    plain = run(prior, op, y, 2, config, torch.Generator().manual_seed(2))[0]
    completed = run(prior, op, y, 2, replace(config, decoder_error=True), torch.Generator().manual_seed(2))[0]
    yy, ops = repeat_observation(y, op, 2)
    mean = prior.decoder_error.conditional_mean(yy, plain.flatten(0, 1), ops)
    assert mean.abs().max() > 1e-3
    torch.testing.assert_close(completed.flatten(0, 1), plain.flatten(0, 1) + mean, atol=1e-5, rtol=0)

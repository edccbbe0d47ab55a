"""The model trained for the task (``baselines.conditional``, ``training.conditional``, ``priors.conditional``):
its sampler draws the exact posterior when given the exact conditional denoiser (a Gaussian prior's), it wires
(y, m) to the network as trained, the training loss reaches the UNet through all 2C + 1 input channels, and a
trained export loads and runs in the harness; wrong models and operators fail in one sentence."""
from __future__ import annotations

import pytest
import torch

from vipaint.baselines import ConditionalConfig, conditional
from vipaint.operators import GaussianBlur, Inpainting, UnsupportedOperator
from vipaint.priors.gaussian import GaussianPrior, smooth_covariance
from vipaint.schedule import NoiseSchedule, linear_alphas_cumprod


class _FromPrior(torch.nn.Module):
    """A ``ConditionalDenoiser`` stand-in whose ε̂ is a prior's exact one (the condition already folded in)."""

    output_range = None

    def __init__(self, prior):
        super().__init__()
        self.prior, self.schedule, self.seen = prior, prior.schedule, []

    def forward(self, z, t, cond):
        self.seen.append(cond)
        return self.prior.denoise(z, t)[1]


@pytest.mark.parametrize("eta, steps", [(0.0, 100), (1.0, 1000)])
def test_sampler_draws_the_exact_posterior_from_the_exact_conditional_denoiser(eta, steps):
    # x_0 ~ N(0, S) on 1x3x3; y observes 4 pixels. The exact E[x_0 | z_t, y] is the denoiser of the Gaussian
    # N(μ_y, S_y) = p(x_0 | y): DDIM(η) through it must return samples with the posterior's moments. (Ancestral
    # steps, η = 1, need the fine grid: on 100 steps they lose 12% of the variance, the Var[x_0 | z_t] their
    # Gaussian step leaves out; DDIM's η = 0 is exact there already, hence the method's default.)
    sched = NoiseSchedule(linear_alphas_cumprod(1000))
    prior = GaussianPrior(torch.zeros(1, 3, 3), smooth_covariance(3, 3, std=0.5, length_scale=1.5), sched)
    g = torch.Generator().manual_seed(0)
    x = prior.mean + (torch.linalg.cholesky(prior.cov) @ torch.randn(9, generator=g, dtype=torch.float64)).reshape(1, 3, 3)
    m = torch.zeros(1, 1, 3, 3)
    m[..., 0, :] = 1
    m[..., 1, 0] = 1
    y = (m * x.float()).float()
    mu, cov = prior.posterior(y[0], m[0], 0.05)
    model = _FromPrior(GaussianPrior(mu.float(), cov, sched))
    samples, nfe = conditional(None, Inpainting(m, 0.05), y, 4000, ConditionalConfig(n_steps=steps, eta=eta),
                               g, model=model)
    assert samples.shape == (1, 4000, 1, 3, 3) and nfe == steps
    s = samples[0].flatten(1).double()
    assert torch.allclose(s.mean(0), mu.flatten(), atol=0.03)
    assert torch.allclose(s.T.cov(), cov, atol=0.02)
    # The network saw cat(y, m) per sample: the observation zero in the hole, the mask as trained.
    cond = model.seen[0]
    assert cond.shape == (4000, 2, 3, 3)
    assert torch.equal(cond[:, 1:], m.expand(4000, -1, -1, -1)) and torch.equal(cond[:, :1], y.expand(4000, -1, -1, -1))


def test_conditional_refuses_other_operators_and_a_missing_network():
    y = torch.zeros(1, 1, 8, 8)
    with pytest.raises(UnsupportedOperator, match="trained for inpainting only"):
        conditional(None, GaussianBlur(1.0), y, 2, ConditionalConfig(), model=object())
    with pytest.raises(ValueError, match="needs its network"):
        conditional(None, Inpainting(torch.ones(1, 1, 8, 8)), y, 2, ConditionalConfig())


def test_training_loss_reaches_every_input_channel_and_the_observation_is_masked():
    from vipaint.training.conditional import ConditionalPriorModule

    torch.manual_seed(0)
    module = ConditionalPriorModule(image_size=8, channels=1, block_out_channels=[8, 16], attention_levels=[],
                                    sigma_y=0.1)
    assert module.unet.config.in_channels == 3 and module.unet.config.out_channels == 1
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    m = (torch.rand(4, 1, 8, 8) > 0.5).float()
    cond = module.condition({"x": x, "keep_mask": m}, x)
    assert cond.shape == (4, 2, 8, 8) and torch.equal(cond[:, 1:], m)
    assert torch.all(cond[:, :1][m == 0] == 0)                        # nothing of the hole leaks into y
    assert 0.05 < float((cond[:, :1] - x)[m == 1].std()) < 0.2        # y is observed with σ_y = 0.1
    loss = module.loss(x, cond=cond)
    loss.backward()
    w = module.unet.conv_in.weight.grad                               # (out, 2C + 1, k, k)
    assert all(float(w[:, c].abs().sum()) > 0 for c in range(3))
    assert all(p.grad is None for p in module.ema.parameters())
    with pytest.raises(ValueError, match="train_masks: true"):
        module.condition({"x": x}, x)


def test_export_loads_and_runs_in_the_harness_and_wrong_models_fail(tmp_path, tiny_unet_dir, monkeypatch):
    from vipaint.jobs.api import Inpainter
    from vipaint.baselines import BaselinesConfig
    from vipaint.priors.conditional import load_conditional
    from vipaint.priors.external import PixelPrior, PriorLoadError
    from vipaint.training.conditional import ConditionalPriorModule
    from vipaint.training.prior import export_checkpoint

    torch.manual_seed(0)
    module = ConditionalPriorModule(image_size=16, channels=3, block_out_channels=[8, 16], attention_levels=[])
    ckpt = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {**module.hparams, "_class_path": "vipaint.training.conditional."
                                     "ConditionalPriorModule"}, "state_dict": module.state_dict()}, ckpt)
    folder = export_checkpoint(str(ckpt), str(tmp_path / "export"))
    model = load_conditional(str(folder))
    assert model.image_shape == (3, 16, 16)
    z, cond = torch.randn(2, 3, 16, 16), torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        want = module.ema(torch.cat([z, cond], 1), torch.full((2,), 500)).sample
    assert torch.allclose(model(z, 500, cond), want, atol=1e-5)       # the EMA weights are what was exported

    baselines = BaselinesConfig()
    baselines.conditional = ConditionalConfig(weights=str(folder), n_steps=3)
    solver = Inpainter(PixelPrior(str(tiny_unet_dir)), "conditional", baselines=baselines, n_samples=2)
    keep = torch.ones(2, 1, 16, 16)
    keep[..., 4:12, 4:12] = 0
    out = solver(torch.rand(2, 3, 16, 16) * 2 - 1, keep, torch.Generator().manual_seed(0))
    assert out.samples.shape == (2, 2, 3, 16, 16) and out.nfe == 6 and not out.failed
    assert out.samples.abs().max() <= 1.0

    with pytest.raises(ValueError, match="not a conditional inpainting model"):
        load_conditional(str(tiny_unet_dir))                          # an unconditional UNet
    from vipaint.priors import shipped

    monkeypatch.setitem(shipped.SHIPPED_CONDITIONAL, "vipaint-mnist-inpaint", tmp_path / "absent")
    with pytest.raises(PriorLoadError, match="model 'vipaint-mnist-inpaint' is not in this checkout.*conditional_mnist"):
        load_conditional("vipaint-mnist-inpaint")


def test_warm_start_from_the_prior_is_the_prior_until_the_condition_is_learned(tmp_path):
    # init_from a prior's folder: the extra input channels start at zero, so the conditional network's ε̂ equals
    # the prior's whatever the condition, and the rest of its weights are the prior's.
    from vipaint.training.conditional import ConditionalPriorModule
    from vipaint.training.prior import build_unet

    torch.manual_seed(0)
    prior = build_unet(8, 1, [8, 16], 1, [])
    prior.save_pretrained(tmp_path / "prior")
    module = ConditionalPriorModule(image_size=8, channels=1, block_out_channels=[8, 16], init_from=str(tmp_path / "prior"))
    z, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 700])
    with torch.no_grad():
        want = prior(z, t).sample
        got = module.unet(torch.cat([z, torch.randn(2, 2, 8, 8)], 1), t).sample
    torch.testing.assert_close(got, want)
    assert float(module.unet.conv_in.weight[:, 1:].abs().sum()) == 0.0

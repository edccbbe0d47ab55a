"""The amortized encoder: starts exactly at the hand-made initialisation, trains through the same bound
with the prior frozen, and plugs into inference (init='amortized', fit.n_iter 0 or N)."""
from __future__ import annotations

import pytest
import torch

from amortized.encoder import AmortizedEncoder, predict_posterior
from amortized.module import AmortizedModule
from vipaint.bound import evaluate_bound
from vipaint.fit import FitConfig
from vipaint.likelihood import GaussianLikelihood
from vipaint.operators import Inpainting
from vipaint.pipeline import VIPaintConfig
from vipaint.posterior import HierarchicalPosterior


def _batch(prior, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    C, H, W = prior.image_shape
    x = prior.sample_x0(B, g)
    keep = torch.ones(B, 1, H, W)
    keep[0, ..., W // 2:] = 0
    keep[1, ..., : H // 2, :] = 0
    keep[2, ..., 2:6, 2:6] = 0
    keep[3, ..., ::2] = 0
    return {"x": x.reshape(B, C, H, W).float(), "keep_mask": keep}


def test_untrained_encoder_reproduces_hand_made_init(gaussian_prior):
    batch = _batch(gaussian_prior)
    op = Inpainting(batch["keep_mask"], 0.05)
    y = op.forward(batch["x"])
    kp = gaussian_prior.schedule.keypoints((550, 400))
    enc = AmortizedEncoder(latent_channels=1, n_keypoints=2, width=16, depth=1)
    pred = predict_posterior(enc, gaussian_prior, kp, op, y, batch["keep_mask"], VIPaintConfig())
    hand = HierarchicalPosterior(kp, gaussian_prior.latent_shape, batch=4)
    hand.initialize(gaussian_prior, y)
    for a, b in ((pred.mu, hand.mu), (pred.logvar, hand.logvar), (pred.gamma, hand.gamma)):
        assert torch.equal(a.detach(), b.detach())


def test_training_improves_the_bound_and_leaves_the_prior_alone(gaussian_prior):
    torch.manual_seed(0)
    module = AmortizedModule(prior=gaussian_prior, vipaint=VIPaintConfig(fit=FitConfig(n_grid=20)), n_samples=4,
                             width=16, depth=1, lr=3e-3)
    batch = _batch(gaussian_prior)

    def bound() -> float:
        op = Inpainting(batch["keep_mask"], 0.05)
        y = op.forward(batch["x"])
        with torch.no_grad():
            post = predict_posterior(module.encoder, gaussian_prior, module.keypoints, op, y, batch["keep_mask"],
                                     module.config)
            terms = evaluate_bound(gaussian_prior, post, GaussianLikelihood(op, gaussian_prior), y, 64, 20,
                                   torch.Generator().manual_seed(1))
        return float(terms.elbo.mean())

    before = bound()
    opt = module.configure_optimizers()
    for step in range(40):
        opt.zero_grad()
        loss = _loss(module, batch)
        loss.backward()
        module.on_after_backward()       # raises if any gradient reached the prior
        assert all(p.grad is not None for p in module.encoder.out.parameters())
        opt.step()
    after = bound()
    print(f"amortized bound on a fixed batch: {before:.2f} -> {after:.2f} nats")
    assert after > before + 1.0
    assert all(not p.requires_grad for p in gaussian_prior.parameters())


def _loss(module, batch):
    terms, _, _ = module._terms(batch)
    return terms.loss().reshape(-1, module.hparams.n_samples).mean()


def test_checkpoint_drops_the_prior_and_infer_uses_it(tiny_prior, tiny_unet_dir, tmp_path):
    import lightning.pytorch as pl

    from vipaint.jobs.module import VIPaintModule
    from vipaint.refine import RefineConfig

    module = AmortizedModule(prior=tiny_prior, vipaint=VIPaintConfig(fit=FitConfig(n_grid=5)), n_samples=1, width=8,
                             depth=1)
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "enc.ckpt")
    ckpt = torch.load(tmp_path / "enc.ckpt", weights_only=False)
    assert ckpt["state_dict"] and not any(k.startswith("prior.") for k in ckpt["state_dict"])
    from amortized.encoder import load_encoder

    # A checkpoint and the exported folder say the same about what the encoder was trained for.
    _, from_ckpt = load_encoder(tmp_path / "enc.ckpt")
    _, from_folder = load_encoder(module.export(str(tmp_path / "enc_folder")))
    assert from_ckpt["keypoints"] == from_folder["keypoints"] == [550, 400]     # the default K=2 set
    assert from_ckpt["operator"] == from_folder["operator"] == {"name": "inpainting", "sigma_y": 0.05}
    keep = torch.ones(2, 1, 16, 16)
    keep[:, :, 4:12, 4:12] = 0
    batch = {"x": torch.rand(2, 3, 16, 16) * 2 - 1, "keep_mask": keep, "name": ["a", "b"], "index": torch.tensor([0, 1])}
    for steps in (0, 2):
        settings = VIPaintConfig(fit=FitConfig(n_iter=steps, n_samples=2, n_grid=5), refine=RefineConfig(n_steps=2))
        vip = VIPaintModule(prior=tiny_prior, init="amortized", encoder_ckpt=str(tmp_path / "enc.ckpt"),
                            vipaint=settings, n_samples=2, progress=False)
        out = vip._run(batch, 0)
        assert [r.status for r in out] == ["ok", "ok"] and all(torch.isfinite(r.samples).all() for r in out)


def test_encoder_folder_round_trip_and_bad_folders(tmp_path):
    from amortized.encoder import load_encoder, save_encoder

    torch.manual_seed(0)
    enc = AmortizedEncoder(latent_channels=1, n_keypoints=2, width=8, depth=1)
    torch.nn.init.normal_(enc.out.weight, std=0.1)          # non-zero residuals, so the comparison means something
    save_encoder(enc, tmp_path / "enc", {"keypoints": [550, 400]})
    loaded, cfg = load_encoder(tmp_path / "enc")
    assert cfg["keypoints"] == [550, 400] and cfg["encoder"]["width"] == 8
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json", "encoder.safetensors"]
    z, keep = torch.randn(3, 1, 8, 8), (torch.rand(3, 1, 8, 8) > 0.5).float()
    for a, b in zip(enc(z, keep), loaded(z, keep)):
        assert torch.equal(a, b) and a.abs().max() > 0
    with pytest.raises(ValueError, match="not an encoder folder"):
        load_encoder(tmp_path)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        load_encoder(tmp_path / "junk.ckpt")


def test_amortized_init_needs_a_path_except_for_the_shipped_prior(tiny_prior):
    from vipaint.jobs.module import VIPaintModule

    with pytest.raises(ValueError, match="encoder_ckpt"):
        VIPaintModule(prior=tiny_prior, init="amortized")


def test_auto_init_is_hand_made_without_an_encoder(tiny_prior):
    from vipaint.jobs.module import VIPaintModule

    assert VIPaintModule(prior=tiny_prior).init == "hand"      # no shipped encoder for this prior: no error
    with pytest.raises(ValueError, match="init must be"):
        VIPaintModule(prior=tiny_prior, init="amortised")

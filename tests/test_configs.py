"""No config leaks into another: each shipped inference config resolves to the settings it means.

``configs/infer_default.yaml`` is the MNIST job's own config, applied only when no ``--config`` is given; settings
tuned for one prior ship beside its weights (``vipaint.json``) and apply only to that prior. Each config is
resolved with infer.py's own parser (``--print_config``, nothing instantiated); the prior-tuned settings are then
filled in as ``Inpainter`` does (``pipeline.tuned_for`` with the named prior's shipped settings).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import infer  # noqa: E402
from vipaint.fit import FitConfig  # noqa: E402
from vipaint.likelihood import LikelihoodConfig  # noqa: E402
from vipaint.pipeline import InitConfig, VIPaintConfig, tuned_for  # noqa: E402
from vipaint.priors.shipped import SHIPPED_PRIORS, tuned_settings  # noqa: E402
from vipaint.refine import RefineConfig  # noqa: E402

INFER_CONFIGS = sorted(p for p in (ROOT / "configs").glob("infer_*.yaml") if p.name != "infer_k4_authors.yaml")


def resolved(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as stop:
        infer.main([*args, "--print_config"])
    assert stop.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def effective(cfg: dict) -> VIPaintConfig:
    """The VIPaint settings a run of ``cfg`` uses: its config with the named prior's tuned values filled in."""
    vip = dict(cfg["model"]["vipaint"])
    config = VIPaintConfig(**{**vip, "keypoints": tuple(vip["keypoints"]), "init": InitConfig(**vip["init"]),
                              "likelihood": LikelihoodConfig(**vip["likelihood"]), "fit": FitConfig(
                                  **{**vip["fit"], "adam_betas": tuple(vip["fit"]["adam_betas"])}),
                              "refine": RefineConfig(**vip["refine"])})
    name = cfg["model"]["prior"]["init_args"]["pretrained"]
    return tuned_for(config, tuned_settings(SHIPPED_PRIORS.get(name)))


def test_default_job_gets_the_mnist_prior_tuning(capsys):
    cfg = resolved(capsys)                                             # no --config: the default job
    assert cfg["model"]["prior"]["init_args"]["pretrained"] == "vipaint-mnist"
    assert cfg["model"]["vipaint"]["refine"]["scale"] is None          # the config itself sets nothing ...
    assert effective(cfg).refine.zeta == 2.0                           # ... the prior's vipaint.json does
    assert cfg["model"]["prior"]["init_args"]["precision"] == "bf16"


@pytest.mark.parametrize("config", INFER_CONFIGS, ids=lambda p: p.name)
def test_each_config_resolves_to_what_it_means(config, capsys):
    cfg = resolved(capsys, "--config", str(config))
    prior = cfg["model"]["prior"]["init_args"]["pretrained"]
    zeta = effective(cfg).refine.zeta
    if prior == "vipaint-mnist":
        assert zeta == 2.0, "the MNIST prior's tuned guidance weight"
    else:   # natural-image and test priors ship no tuning: guidance weight 1, exact for Gaussian priors
        assert zeta == 1.0, f"{config.name} inherits another prior's tuning"
    if config.name != "infer_default.yaml":   # the MNIST job's bf16 does not leak into other configs
        assert cfg["model"]["prior"]["init_args"].get("precision", "32") == "32" or "mnist" in config.name
    assert cfg["output_dir"], "every inference config names its output folder"


def test_a_second_config_overrides_the_first(capsys):
    cfg = resolved(capsys, "--config", str(ROOT / "configs" / "infer_default.yaml"),
                   "--config", str(ROOT / "configs" / "infer_k4_authors.yaml"))
    assert cfg["model"]["vipaint"]["keypoints"] == [550, 500, 450, 400]
    assert effective(cfg).refine.zeta == 2.0 and cfg["model"]["vipaint"]["init"]["var_scale"] == 1.565

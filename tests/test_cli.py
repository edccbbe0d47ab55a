"""The command line: every shipped config parses, --help, predict/test runs, resume, and DDP on CPU.

Runs use ``configs/infer_tiny.yaml`` (two demo photos, tiny random prior, 2 fit and 2 refinement steps)
from a temporary working directory, since the config's output_dir and log save_dir are relative paths.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import infer  # noqa: E402
from datamodules.demo import DEFAULT_DEMO_IMAGES  # noqa: E402
from vipaint.baselines import BaselinesConfig  # noqa: E402
from vipaint.fit import FitConfig  # noqa: E402
from vipaint.operators import OperatorConfig  # noqa: E402
from vipaint.pipeline import VIPaintConfig  # noqa: E402
from vipaint.jobs.writer import RESULT_FILE, VIPaintWriter  # noqa: E402

CONFIGS = ROOT / "configs"
TINY = CONFIGS / "infer_tiny.yaml"
INFER_PREFIX = "infer_"   # configs/: infer_*.yaml for infer.py, every other one for train.py


def _tiny16(unet_dir: Path) -> list[str]:
    """Overrides for the 16x16 tiny random UNet of conftest (4x cheaper than the config's 32x32 prior)."""
    return ["--model.prior.init_args.pretrained", str(unet_dir), "--model.prior.init_args.local_files_only", "true",
            "--data.init_args.image_size", "16"]


def _is_train_config(path: Path) -> bool:
    return not path.name.startswith(INFER_PREFIX)


DEFAULT = CONFIGS / "infer_default.yaml"


def _infer_config_args(path: Path) -> list[str]:
    """``--config`` arguments that run an inference config as documented: a full job config alone, an overlay
    (no ``data:``, e.g. infer_k4_authors.yaml: "a second config after the job's own") after infer_default.yaml,
    since infer.py loads infer_default.yaml only when no ``--config`` is given."""
    overlay = "data" not in (yaml.safe_load(path.read_text()) or {})
    return (["--config", str(DEFAULT)] if overlay else []) + ["--config", str(path)]


ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def test_tiny_config_exists():
    assert TINY.is_file()
    assert any(not _is_train_config(p) for p in ALL_CONFIGS)


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_config_parses(config, capsys):
    """--print_config parses (and type-checks) the whole config with its CLI (train.py's for training configs,
    infer.py's for the others), without instantiating the prior, data or trainer; the model's settings are then
    built as the dataclasses they declare (running their own checks)."""
    if _is_train_config(config):
        import train

        with pytest.raises(SystemExit) as exc:
            train.main(["fit", "--config", str(config), "--print_config"])
    else:
        with pytest.raises(SystemExit) as exc:
            infer.main([*_infer_config_args(config), "--print_config"])
    assert exc.value.code in (0, None), capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    for key in ("model:", "data:", "trainer:", "class_path:"):
        assert key in out, f"{key!r} missing from the printed config of {config.name}"
    if not _is_train_config(config):
        assert "mode:" in out
        model = yaml.safe_load(out)["model"]
        settings = _settings_parser().parse_object({k: model[k] for k in ("vipaint", "operator", "baselines")})
        built = _settings_parser().instantiate(settings)
        assert isinstance(built.vipaint, VIPaintConfig) and isinstance(built.vipaint.fit, FitConfig)
        assert isinstance(built.operator, OperatorConfig) and isinstance(built.baselines, BaselinesConfig)


def _settings_parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    for name, cls in (("vipaint", VIPaintConfig), ("operator", OperatorConfig), ("baselines", BaselinesConfig)):
        parser.add_argument(f"--{name}", type=cls)
    return parser


def test_settings_nest_as_declared(capsys):
    """A nested option reaches its dataclass field; the k4 config overrides the default config key by key."""
    with pytest.raises(SystemExit):
        infer.main(["--config", str(DEFAULT), "--config", str(CONFIGS / "infer_k4_authors.yaml"),
                    "--model.vipaint.fit.n_iter", "7",
                    "--model.operator.sigma_y", "0.1", "--model.baselines.dps.n_steps", "25", "--print_config"])
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    vip = model["vipaint"]
    assert vip["fit"]["n_iter"] == 7 and vip["fit"]["n_samples"] == 10 and vip["fit"]["lr_mu"] == FitConfig.lr_mu
    assert vip["keypoints"] == [550, 500, 450, 400] and vip["likelihood"]["kind"] == "l1_lpips"
    assert vip["refine"]["n_steps"] == 400 and vip["refine"]["guidance"] == "gradient"
    assert model["operator"]["sigma_y"] == 0.1 and model["baselines"]["dps"]["n_steps"] == 25


def test_hparams_are_plain_yaml(tiny_prior, tmp_path):
    """A module built in Python saves its dataclass settings as plain values: hparams.yaml reads back safely."""
    from lightning.pytorch.core.saving import save_hparams_to_yaml

    from vipaint.jobs.module import VIPaintModule

    module = VIPaintModule(prior=tiny_prior, vipaint=VIPaintConfig(keypoints=(550, 400), fit=FitConfig(n_iter=3)),
                           operator=OperatorConfig(name="blur"), progress=False)
    assert module.solver.config.fit.n_iter == 3 and module.solver.operator.name == "blur"
    save_hparams_to_yaml(tmp_path / "hparams.yaml", module.hparams_initial)
    saved = yaml.safe_load((tmp_path / "hparams.yaml").read_text())
    assert saved["vipaint"]["fit"]["n_iter"] == 3 and saved["vipaint"]["keypoints"] == [550, 400]
    assert saved["operator"]["name"] == "blur" and "prior" not in saved


def test_help_lists_the_main_options(capsys):
    with pytest.raises(SystemExit) as exc:
        infer.main(["--help"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    for opt in ("--model.vipaint.fit.n_iter", "--model.vipaint.refine.n_steps", "--model.vipaint.likelihood.kind",
                "--model.operator.name", "--model.baselines.dps.n_steps", "--data", "--trainer.devices", "--mode"):
        assert opt in out, f"{opt} missing from --help"


def _results(out_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out_dir.glob(f"*/{RESULT_FILE}"))}


def test_predict_writes_outputs_and_resume_skips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = infer.main(["--config", str(TINY)])
    out_dir = tmp_path / "outputs" / "demo"
    expected = set(DEFAULT_DEMO_IMAGES[:2])
    results = _results(out_dir)
    assert set(results) == expected
    for name, res in results.items():
        assert res["status"] == "ok", res
        assert res["num_samples"] == 2
        for j in range(2):
            assert (out_dir / name / f"sample_{j:02d}.png").is_file()
        assert VIPaintWriter.is_complete(out_dir, name)
    log_dir = Path(trainer.log_dir)
    if not log_dir.is_absolute():
        log_dir = tmp_path / log_dir
    assert log_dir.parent == tmp_path / "lightning_logs" / "demo"     # named after the output folder
    saved = (log_dir / "config.yaml").read_text()
    assert yaml.safe_load(saved)["model"]["vipaint"]["fit"]["n_iter"] == 2 and "DemoDataModule" in saved
    if (log_dir / "hparams.yaml").is_file():   # the logger's copy of the module's hparams reads back safely too
        assert yaml.safe_load((log_dir / "hparams.yaml").read_text())["vipaint"]["fit"]["n_iter"] == 2

    mtimes = {n: (out_dir / n / RESULT_FILE).stat().st_mtime_ns for n in expected}
    sample_mtimes = {n: (out_dir / n / "sample_00.png").stat().st_mtime_ns for n in expected}
    infer.main(["--config", str(TINY)])
    for n in expected:
        assert (out_dir / n / RESULT_FILE).stat().st_mtime_ns == mtimes[n], f"{n} was redone"
        assert (out_dir / n / "sample_00.png").stat().st_mtime_ns == sample_mtimes[n]
        assert _results(out_dir)[n]["status"] == "ok"


def test_test_mode_logs_psnr(tmp_path, monkeypatch, tiny_unet_dir):
    monkeypatch.chdir(tmp_path)
    trainer = infer.main(["--config", str(TINY), "--mode", "test", *_tiny16(tiny_unet_dir)])
    metrics = trainer.callback_metrics
    assert "test/psnr" in metrics and "test/elbo" in metrics, dict(metrics)
    psnr = float(metrics["test/psnr"])
    assert psnr == psnr and 0.0 < psnr < 100.0
    results = _results(tmp_path / "outputs" / "demo")
    assert set(results) == set(DEFAULT_DEMO_IMAGES[:2])
    assert all(r["status"] == "ok" for r in results.values())
    assert "size: 16" in (tmp_path / trainer.log_dir / "config.yaml").read_text()  # the overrides took effect


def test_ddp_two_cpu_processes_split_images_without_duplicates(tmp_path, tiny_unet_dir):
    # The script's folder (the repository root) is on the child's sys.path, so vipaint and datamodules import.
    cmd = [sys.executable, str(ROOT / "infer.py"), "--config", str(TINY), "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
           "--data.init_args.limit", "5", "--data.init_args.batch_size", "1", *_tiny16(tiny_unet_dir)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out_dir = tmp_path / "outputs" / "demo"
    expected = set(DEFAULT_DEMO_IMAGES[:5])
    dirs = [p.name for p in out_dir.iterdir() if p.is_dir()]
    assert sorted(dirs) == sorted(expected), dirs  # one folder per image: no drop, no extra
    results = _results(out_dir)
    assert set(results) == expected
    for name, res in results.items():
        assert res["name"] == name and res["status"] == "ok", res
        assert VIPaintWriter.is_complete(out_dir, name)
    # Every image was fitted exactly once: the seed is base seed + the image's dataset index.
    assert sorted(r["seed"] for r in results.values()) == list(range(5))

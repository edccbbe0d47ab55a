"""VIPaint inference: ``python infer.py`` runs the default job; ``python infer.py --help`` lists every option.

    python infer.py                                   # MNIST demo digits, shipped prior (configs/infer_default.yaml)
    python infer.py --config configs/infer_folder.yaml --data.init_args.image_dir my_images --output_dir out
    python infer.py --mode test ...                   # also scores the samples against the ground truth
    python infer.py --trainer.devices 2 --trainer.strategy ddp   # images split across processes

A thin LightningCLI: the model (``vipaint.jobs.module.VIPaintModule``), any LightningDataModule (``class_path``)
and the Trainer are configured from typed signatures; YAML files only override them. ``configs/infer_default.yaml``
applies only when no ``--config`` is given (it is the MNIST job's config, not a base every run inherits). The
resolved config of every run is saved next to its TensorBoard logs (``config.yaml``), or in the output folder when
the run has no logger. Bad input prints one sentence (``--debug`` adds the traceback) and the exit status is 1 when
any image failed (each is listed in ``<output_dir>/failed.json``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from jsonargparse import ArgumentError
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from vipaint.jobs.distributed import release_process_group
from vipaint.jobs.module import VIPaintModule
from vipaint.jobs.writer import VIPaintWriter
from vipaint.training.common import tensorboard_logger

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "infer_default.yaml"
DEFAULT_OUTPUT = "outputs/run"


class SaveRunConfig(SaveConfigCallback):
    """The resolved config beside the TensorBoard logs, or in the output folder without a logger (never the
    current directory)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.loggers:
            return super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero:
            out = Path(self.config.get("output_dir") or DEFAULT_OUTPUT)
            out.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, out / self.config_filename, overwrite=True,
                             multifile=False)


class InferCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--mode", choices=["predict", "test"], default="predict",
                            help="predict: write samples; test: also score them against the ground truth")
        parser.add_argument("--output_dir", default=DEFAULT_OUTPUT,
                            help="folder of the per-image outputs, overview.png and failed.json")
        parser.add_argument("--debug", action="store_true", help="show the traceback of an error")

    def before_instantiate_classes(self) -> None:
        """Unless the config names a logger (or ``--trainer.logger false``): TensorBoard under
        ``lightning_logs/<name of the output folder>/`` (the one rule the configs shared, written once)."""
        from jsonargparse import dict_to_namespace

        cfg = self.config
        if cfg.trainer.logger in (None, True):
            name = Path(cfg.get("output_dir") or DEFAULT_OUTPUT).name
            cfg.trainer.logger = dict_to_namespace(tensorboard_logger("lightning_logs", name))


def main(argv: list[str] | None = None):
    args = sys.argv[1:] if argv is None else argv
    has_config = any(a == "--config" or a.startswith("--config=") for a in args)
    defaults = [str(DEFAULT_CONFIG)] if DEFAULT_CONFIG.exists() and not has_config else []
    debug = "--debug" in args or bool(os.environ.get("VIPAINT_DEBUG"))
    try:
        # args=None when run from the shell: LightningCLI then reads sys.argv itself (no warning about both).
        cli = InferCLI(VIPaintModule, LightningDataModule, subclass_mode_data=True, run=False, args=argv,
                       save_config_callback=SaveRunConfig, save_config_kwargs={"overwrite": True},
                       trainer_defaults={"inference_mode": False},   # the fit needs autograd in predict/test
                       parser_kwargs={"default_config_files": defaults, "exit_on_error": False})
        trainer, model, data = cli.trainer, cli.model, cli.datamodule
        with release_process_group():
            failed = _run(cli, trainer, model, data)
    except (ValueError, OSError, RuntimeError, ArgumentError) as err:
        if debug:
            raise
        raise SystemExit(f"vipaint: error: {_reason(str(err))}") from None
    if failed:
        raise SystemExit(1)
    return trainer


def _reason(message: str) -> str:
    """One sentence: a jsonargparse error that lists the reasons of each failed type ('- ...') keeps the first that
    is not just a type mismatch; other errors keep their first line."""
    reasons = [line.strip()[2:] for line in message.splitlines() if line.strip().startswith("- ")
               and "Expected a <class" not in line and "Not a valid" not in line]
    return reasons[0] if reasons else (message.strip().splitlines() or [message])[0]


def _writer(cli, trainer) -> VIPaintWriter:
    """The run's writer: one from the config's callbacks, else one at ``--output_dir``."""
    writers = [cb for cb in trainer.callbacks if isinstance(cb, VIPaintWriter)]
    if writers:
        return writers[0]
    writer = VIPaintWriter(cli.config.get("output_dir") or DEFAULT_OUTPUT)
    trainer.callbacks.append(writer)
    return writer


def _run(cli, trainer, model, data) -> int:
    """Run predict or test; the number of images that failed."""
    # The fit needs autograd inside predict/test; inference mode would forbid it.
    if getattr(trainer, "_inference_mode", False) or trainer.predict_loop.inference_mode:
        raise ValueError("set trainer.inference_mode: false (VIPaint optimises inside predict/test steps)")
    if data is None:
        raise ValueError("no data to run on: give a config with a data section first (e.g. --config "
                         "configs/infer_default.yaml --config configs/infer_k4_authors.yaml) or --data CLASS")
    writer = _writer(cli, trainer)
    writer.check_writable()                 # before the saved config (no logger: it goes into the folder) and any step
    if hasattr(data, "expect"):             # images of another shape become bad items, skipped with their fix
        data.expect(model.prior.image_shape)
    if cli.config.get("mode") == "test":
        trainer.test(model, datamodule=data)
    else:
        trainer.predict(model, datamodule=data, return_predictions=False)
    log_dir = trainer.log_dir  # a broadcast under DDP: every rank must call it, not only rank 0
    if trainer.is_global_zero:
        print(f"vipaint: outputs in {os.path.abspath(writer.output_dir)}" + (f"; logs in {log_dir}" if trainer.loggers
                                                                               else ""))
    return writer.counts["failed"]


if __name__ == "__main__":
    main()

"""VIPaint inference: ``python infer.py`` runs the default config; ``python infer.py --help`` lists every option.

    python infer.py                                   # MNIST demo digits, shipped prior (configs/infer_default.yaml)
    python infer.py --config configs/infer_folder.yaml --data.init_args.root my_images
    python infer.py --mode test ...                   # also scores the samples against the ground truth
    python infer.py --trainer.devices 2 --trainer.strategy ddp   # images split across processes

A thin LightningCLI: the model (``vipaint.module.VIPaintModule``), any LightningDataModule (``class_path``)
and the Trainer are configured from typed signatures; YAML files only override them. The resolved
config of every run is saved next to its TensorBoard logs (``config.yaml``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from vipaint.distributed import release_process_group
from vipaint.module import VIPaintModule

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "infer_default.yaml"


class InferCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--mode", choices=["predict", "test"], default="predict",
                            help="predict: write samples; test: also score them against the ground truth")


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    defaults = [str(DEFAULT_CONFIG)] if DEFAULT_CONFIG.exists() else []
    cli = InferCLI(VIPaintModule, LightningDataModule, subclass_mode_data=True, run=False, args=argv,
                   save_config_kwargs={"overwrite": True},
                   parser_kwargs={"default_config_files": defaults})
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    with release_process_group():
        _run(cli, trainer, model, data)
    return trainer


def _run(cli, trainer, model, data) -> None:
    # The fit needs autograd inside predict/test; inference mode would forbid it.
    if getattr(trainer, "_inference_mode", False) or trainer.predict_loop.inference_mode:
        raise SystemExit("set trainer.inference_mode: false (VIPaint optimises inside predict/test steps)")
    if cli.config.get("mode") == "test":
        trainer.test(model, datamodule=data)
    else:
        trainer.predict(model, datamodule=data, return_predictions=False)
    writer = [cb for cb in trainer.callbacks if hasattr(cb, "output_dir")]
    log_dir = trainer.log_dir  # a broadcast under DDP: every rank must call it, not only rank 0
    if trainer.is_global_zero and writer:
        print(f"vipaint: outputs in {os.path.abspath(writer[0].output_dir)}; logs in {log_dir}")


if __name__ == "__main__":
    main()

"""Training the project's trainable modules with LightningCLI (``fit`` / ``validate`` subcommands).

    python train.py fit --config configs/prior_cifar10.yaml          # the CIFAR-10 pixel diffusion prior
    python train.py fit --config configs/prior_cifar10.yaml --ckpt_path last   # resume after an interruption
    python train.py fit --config configs/amortized_mnist.yaml        # the amortized λ-encoder

Each run saves its resolved config beside its logs; configs/ holds one per shipped model (README.md lists them).
``run.name`` puts logs and checkpoints under ``runs/<name>/`` (``vipaint.training.common.RunConfig``, the one
declaration of what every config shares). A bf16 precision on a CPU without native bf16 runs float32
(``vipaint.training.common.host_precision``); the saved config says which ran.
"""
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from vipaint.jobs.distributed import release_process_group
from vipaint.training.common import RunConfig, host_precision


class TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(RunConfig, "run")

    def before_instantiate_classes(self) -> None:
        """The host's precision, and the run's logger and callbacks (``RunConfig``) where the YAML names none: what is
        set here is what the saved config shows."""
        from jsonargparse import dict_to_namespace

        cfg = self.config[self.subcommand] if self.subcommand else self.config
        cfg.trainer.precision = host_precision(cfg.trainer.precision, cfg.trainer.accelerator)
        run = RunConfig(**vars(cfg.run))
        if run.name is None:
            return
        if cfg.trainer.logger in (None, True):
            cfg.trainer.logger = dict_to_namespace(run.logger())
        callbacks = list(cfg.trainer.callbacks or [])
        have = {c.class_path for c in callbacks}
        cfg.trainer.callbacks = callbacks + [dict_to_namespace(c) for c in run.callbacks() if c["class_path"] not in have]


def main(args=None) -> None:
    with release_process_group():  # DDP runs would otherwise abort at exit (vipaint/jobs/distributed.py)
        TrainCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                 args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()

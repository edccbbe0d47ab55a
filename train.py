"""Training the project's trainable modules with LightningCLI (``fit`` / ``validate`` subcommands).

    python train.py fit --config configs/prior_cifar10.yaml          # the pixel diffusion prior
    python train.py fit --config configs/prior_cifar10.yaml --ckpt_path last   # resume after an interruption

Each run saves its resolved config beside its logs. The amortized encoder will be another config here.
"""
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from vipaint.jobs.distributed import release_process_group


def main(args=None) -> None:
    with release_process_group():  # DDP runs would otherwise abort at exit (vipaint/distributed.py)
        LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()

"""Training the project's trainable modules with LightningCLI (``fit`` / ``validate`` subcommands).

    python train.py fit --config configs/prior_cifar10.yaml          # the CIFAR-10 pixel diffusion prior
    python train.py fit --config configs/prior_cifar10.yaml --ckpt_path last   # resume after an interruption
    python train.py fit --config configs/amortized_mnist.yaml        # the amortized λ-encoder

Each run saves its resolved config beside its logs; configs/ holds one per shipped model (README.md lists them).
"""
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from vipaint.jobs.distributed import release_process_group


def main(args=None) -> None:
    with release_process_group():  # DDP runs would otherwise abort at exit (vipaint/jobs/distributed.py)
        LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()

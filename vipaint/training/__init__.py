"""Training the project's own models with Lightning (``python train.py fit --config configs/...``): the one home of
the training plumbing, below everything that uses it (``amortized/``, ``vipaint.jobs``).

* ``common``: hyperparameters saved as plain YAML, the warm-up + cosine schedule, the export at the end of fit;
* ``prior``: pixel and latent diffusion priors (``PriorTrainingModule``), ``python -m vipaint.training.prior CKPT DIR``;
* ``autoencoder``: the latent priors' autoencoders (``AutoencoderTrainingModule``).

The amortized λ-encoder's module stays beside its network in ``amortized/``. Nothing here writes ``weights/``
(``python -m vipaint.priors.publish`` does).
"""

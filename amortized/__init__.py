"""Amortized initialisation of VIPaint's variational parameters (the paper's open question, answered here).

``encoder.AmortizedEncoder`` maps (encoded observation, keep_mask) to residuals on the hand-made λ = (μ, logvar,
γ) per keypoint of ``vipaint.posterior.HierarchicalPosterior``; ``module.AmortizedModule`` trains it with the
same bound as the per-image fit (``vipaint.bound``), the prior frozen (``python train.py fit --config
configs/amortized_mnist.yaml``). Inference starts from its prediction (``--model.init amortized``) and fine-tunes
it for ``--model.vipaint.fit.n_iter`` iterations (0: pure amortized). The shipped MNIST prior has a shipped
encoder (``weights/mnist-amortized``, found without a path); ``bench/amortized.py`` measures what it saves.
"""

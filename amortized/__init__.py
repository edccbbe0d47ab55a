"""Amortized initialisation of VIPaint's variational parameters (planned; see the amortization issue).

An encoder will map (y, keep_mask[, Aᵀy]) to the per-keypoint (μ, logvar, γ) of
``vipaint.posterior.HierarchicalPosterior`` and be trained with the same bound (``vipaint.bound``);
inference then starts from its prediction through ``vipaint.sampler.vipaint(..., posterior=...)`` and
``HierarchicalPosterior.load_parameters``, with ``--model.vipaint.fit.n_iter`` 0 (pure amortized) or a few
(semi-amortized).
"""

"""VIPaint: variational inference with a pre-trained diffusion prior for inpainting and other inverse problems.

``vipaint.inpaint(images, keep_masks, prior="vipaint-mnist", samples=4)`` is the one-call API and
``vipaint.Inpainter`` the reusable solver behind it (``vipaint.jobs.api``). The modules directly in this package
are the torch-only math (docs/method.md); ``priors/``, ``evaluation/`` and ``jobs/`` build on them.
"""
__all__ = ["inpaint", "Inpainter", "Restoration"]


def __getattr__(name: str):
    # Lazily, so that importing the math (``vipaint.bound`` ...) never pulls in diffusers or the amortized encoder.
    if name in __all__:
        from .jobs import api

        return getattr(api, name)
    raise AttributeError(f"module 'vipaint' has no attribute {name!r}")

"""Model loading: one entry point, ``load_model``, for any open_clip architecture and checkpoint.

``load_model`` and ``LoadedModel`` are imported from factory.py on first use, so that the package's
torch-free modules (weights.py) can serve config checks without importing torch.
"""

__all__ = ["LoadedModel", "load_model"]


def __getattr__(name: str):
    if name in __all__:
        from clipbench.models import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

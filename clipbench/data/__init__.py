"""Datasets: loaders for each dataset's real on-disk release (``clipbench.toy.writers`` writes the same formats)."""

from clipbench.data.base import DATASETS, DatasetSpec

__all__ = ["DATASETS", "DatasetSpec"]

from clipbench.discovery import import_submodules  # noqa: E402

# loading and projection hold torch helpers and register no dataset: config checks stay free of torch
import_submodules(__name__, __path__, skip=("loading", "projection"))

"""Where clipbench finds its shipped files: Hydra configs, experiments and reported numbers.

A checkout holds them at the top (``conf/``, ``experiments/``); the package build maps both into the wheel as
``clipbench.conf`` and ``clipbench.experiments`` (setup.py), so an installed clipbench runs from any folder.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _package_folder(name: str, checkout_folder: str) -> Path:
    """The installed package ``name``, else the checkout's top folder when clipbench runs from a checkout that
    is only on PYTHONPATH (benchmarks/gpu_check.sh on a machine without registry access)."""
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    if (CHECKOUT / checkout_folder / "__init__.py").is_file():
        return CHECKOUT / checkout_folder
    raise FileNotFoundError(f"the package {name} is not installed; reinstall clipbench")


CONF_DIR = _package_folder("clipbench.conf", "conf")


def experiments_dir() -> Path:
    return _package_folder("clipbench.experiments", "experiments")


def reported_dir() -> Path:
    return experiments_dir() / "reported"


# Where the data lives: conf/paths/default.yaml (``paths.data`` and the per-dataset roots derived from it).
# The environment variables below were the earlier way to say the same; each still works, with a one-line
# deprecation warning, through the ``clipbench.path`` resolver that paths/default.yaml uses.
DEPRECATED_ENV = {
    "CLIPBENCH_TOY_ROOT": "toy",
    "CLIPBENCH_REFER_ROOT": "refer",
    "CLIPBENCH_REFER_IMAGES": "refer_images",
    "CLIPBENCH_CUB_ROOT": "cub",
    "CLIPBENCH_DOGS_ROOT": "stanford_dogs",
    "CLIPBENCH_COCO_REGIONS_JSON": "coco_regions_json",
    "CLIPBENCH_COCO_REGIONS_IMAGES": "coco_regions_images",
    "CLIPBENCH_MODELNET40_ROOT": "modelnet40",
    "CLIPBENCH_MODELNET40_TXT_ROOT": "modelnet40_txt",
    "CLIPBENCH_SCANOBJECTNN_ROOT": "scanobjectnn",
    "CLIPBENCH_FLICKR8K_ROOT": "flickr8k",
    "CLIPBENCH_FLICKR8K_IMAGES": "flickr8k_images",
    "CLIPBENCH_COMPOSITE_ROOT": "composite",
    "CLIPBENCH_COMPOSITE_IMAGES": "composite_images",
    "CLIPBENCH_PASCAL50S_ROOT": "pascal50s",
    "CLIPBENCH_PASCAL50S_IMAGES": "pascal50s_images",
}
_ENV_OF_KEY = {key: var for var, key in DEPRECATED_ENV.items()}
_WARNED: set[str] = set()


def deprecated_env_path(key: str, default: str) -> str:
    """``${clipbench.path:KEY,DEFAULT}``: the deprecated environment variable of KEY when set, else DEFAULT."""
    var = _ENV_OF_KEY[key]
    value = os.environ.get(var)
    if value is None:
        return default
    if var not in _WARNED:
        _WARNED.add(var)
        print(f"warning: {var} is deprecated; pass paths.{key}={value} instead", file=sys.stderr)
    return value

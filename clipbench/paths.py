"""Where clipbench finds its shipped files: Hydra configs, experiments and reported numbers.

A checkout holds them at the top (``conf/``, ``experiments/``); the package build maps both into the wheel as
``clipbench.conf`` and ``clipbench.experiments`` (setup.py), so an installed clipbench runs from any folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {name} is not installed; reinstall clipbench")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


CONF_DIR = _package_folder("clipbench.conf")


def experiments_dir() -> Path:
    return _package_folder("clipbench.experiments")


def reported_dir() -> Path:
    return experiments_dir() / "reported"

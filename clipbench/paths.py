"""Where clipbench finds its shipped files: Hydra configs, experiments and reported numbers.

``clipbench/conf/`` is the primary Hydra config dir. The experiment configs live at the top of a
checkout (``experiments/``); a built wheel ships the same folder as ``clipbench/experiments/``
(pyproject's package-dir mapping), so an installed clipbench runs from any folder.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"


def experiments_dir() -> Path:
    """The installed package's experiments, else the checkout's top-level ``experiments/``."""
    for candidate in (PACKAGE_DIR / "experiments", PACKAGE_DIR.parent / "experiments"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no experiments folder next to {PACKAGE_DIR}; reinstall clipbench")


def reported_dir() -> Path:
    return experiments_dir() / "reported"

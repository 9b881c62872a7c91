"""Each config group's schemas: the dataclasses whose defaults are the only place a default is stated.

``conf/<group>/<option>.yaml`` names its schema first in its defaults list (``- /schema/method/falip@_here_``)
and holds only what differs from it, plus the comments users read. The ``schema`` group is served by
``hydra_plugins/clipbench_experiments/schema_source.py`` from the tables below (torch-free: config errors still stop
before torch is imported).
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from clipbench.config import LoggerConfig, ModelConfig, RunConfig, as_plain

GROUPS = ("task", "dataset", "model", "method", "logger", "run")  # run: the top-level keys of conf/config.yaml


def _registry(group: str) -> dict[str, type]:
    """Option name -> its dataclass, without importing torch (the registries' configs, by the same names)."""
    if group == "task":
        from clipbench.config.tasks import TASK_CONFIGS

        return TASK_CONFIGS
    if group == "method":
        from clipbench.config.methods import METHOD_CONFIGS

        return METHOD_CONFIGS
    if group == "dataset":
        from clipbench.data import DATASETS

        return {name: DATASETS.get(name).config for name in DATASETS}
    return {"default": {"model": ModelConfig, "logger": LoggerConfig, "run": RunConfig}[group]}


def schema_names(group: str) -> list[str]:
    return sorted(_registry(group)) if group in GROUPS else []


def schema(group: str, name: str) -> type:
    return _registry(group)[name]


def schema_defaults(schema_class: type) -> dict[str, Any]:
    """The dataclass defaults as plain data (``???`` for a field without one, as OmegaConf's MISSING)."""
    out = {}
    for f in fields(schema_class):
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            value = "???"
        out[f.name] = as_plain(value)
    return out

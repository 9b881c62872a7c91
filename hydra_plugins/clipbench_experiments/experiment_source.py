"""The ``experiment`` config group, served from the top-level ``experiments/`` folder.

clipbench's configs live in ``conf/`` and its whole-run experiments in ``experiments/`` beside it (shipped in the
wheel as ``clipbench.conf`` and ``clipbench.experiments``). This search-path plugin adds a config source whose
only group is ``experiment``, so ``experiment=<name>`` reads ``experiments/<name>.yaml`` like any other group
option (its ``# @package _global_`` header read by Hydra itself).
"""

from __future__ import annotations

import os

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "experiment"
SCHEME = "clipbench-experiments"


class ExperimentsConfigSource(FileConfigSource):
    """A folder of experiment YAMLs seen as the ``experiment`` group (and nothing else)."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    @staticmethod
    def _inside(config_path: str) -> str | None:
        """The path inside the experiments folder, or None when ``config_path`` is not in the group."""
        config_path = config_path.strip("/")
        if config_path == GROUP:
            return ""
        if config_path.startswith(GROUP + "/"):
            return config_path[len(GROUP) + 1:]
        return None

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP)  # experiments have no sub-groups (reported/ holds CSVs)

    def is_config(self, config_path: str) -> bool:
        inside = self._inside(config_path)
        return bool(inside) and "/" not in inside and super().is_config(inside)

    def load_config(self, config_path: str) -> ConfigResult:
        return super().load_config(self._inside(config_path) or config_path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        path = config_path.strip("/")
        if path == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if path != GROUP or results_filter not in (None, ObjectType.CONFIG):
            return []
        return sorted(name[: -len(".yaml")] for name in os.listdir(self.path)
                      if name.endswith(".yaml") and os.path.isfile(os.path.join(self.path, name)))


class ExperimentsSearchPath(SearchPathPlugin):
    """Adds the experiments folder and the group schemas (schema_source.py) to clipbench's own config search
    path (other Hydra apps are left alone)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from clipbench.paths import CONF_DIR, experiments_dir
        from hydra_plugins.clipbench_experiments.schema_source import SCHEME as SCHEMAS

        if any(str(CONF_DIR) in (element.path or "") for element in search_path.get_path()):
            search_path.append(provider="clipbench", path=f"{SCHEME}://{experiments_dir()}")
            search_path.append(provider="clipbench", path=f"{SCHEMAS}://clipbench")

"""The ``schema`` config group: each group option's dataclass defaults, the base its YAML extends.

``conf/method/falip.yaml`` starts with ``defaults: [/schema/method/falip@_here_, _self_]``: the keys and defaults
come from ``FalipConfig`` (clipbench/config/schemas.py lists which dataclass serves which option), the YAML adds what
differs, and every key exists before overrides apply (``method.alpha=0.3`` needs no ``+``). The group is left out
of listings (``clipbench --help``), as it is no choice to make.
"""

from __future__ import annotations

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigResult, ConfigSource
from omegaconf import OmegaConf

GROUP = "schema"
SCHEME = "clipbench-schemas"


def _parts(config_path: str) -> list[str]:
    parts = config_path.strip("/").split("/")
    return parts if parts[0] == GROUP else []


class SchemaConfigSource(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return SCHEME

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        from clipbench.config.schemas import GROUPS

        parts = _parts(config_path)
        return len(parts) == 1 or (len(parts) == 2 and parts[1] in GROUPS)

    def is_config(self, config_path: str) -> bool:
        from clipbench.config.schemas import schema_names

        parts = _parts(self._normalize_file_name(config_path)[: -len(".yaml")])
        return len(parts) == 3 and parts[2] in schema_names(parts[1])

    def load_config(self, config_path: str) -> ConfigResult:
        from clipbench.config.schemas import schema, schema_defaults

        _, group, name = _parts(self._normalize_file_name(config_path)[: -len(".yaml")])
        return ConfigResult(
            config=OmegaConf.create(schema_defaults(schema(group, name))),
            path=f"{SCHEME}://{self.path}",
            provider=self.provider,
            header={"package": None},
        )

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        from clipbench.config.schemas import GROUPS, schema_names

        parts = _parts(config_path)
        if len(parts) == 1 and results_filter in (None, ObjectType.GROUP):
            return list(GROUPS)
        if len(parts) == 2 and results_filter in (None, ObjectType.CONFIG):
            return schema_names(parts[1])
        return []

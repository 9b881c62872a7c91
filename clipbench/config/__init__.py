"""Structured configs: dataclass schemas that every Hydra group is validated against before any work.

This module only describes configs and imports no registry; ``clipbench.runner.validate`` walks the
task, dataset and method registries to pick each group's schema.

Each registered task, dataset and method names its own schema; ``validate`` merges the user's config
into it, so an unknown key or a wrongly typed value fails with one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clipbench.errors import ConfigError
from clipbench.models.weights import DEFAULT_SEED
from clipbench.paths import deprecated_env_path


@dataclass
class ModelConfig:
    arch: str = "toyclip"
    pretrained: str | None = None
    precision: str = "fp32"
    cache_dir: str | None = None
    source: str = "open_clip"  # open_clip | hf (transformers CLIP: arch = hub id or save_pretrained folder)

    def validate(self) -> None:
        from clipbench.models.archs import SOURCES, arch_config, check_model_configs
        from clipbench.models.weights import no_weights

        if self.source not in SOURCES:
            raise ConfigError("model.source", f"{self.source!r} is not allowed; use one of {list(SOURCES)}")
        if self.source == "hf":
            if not no_weights(self.pretrained):
                raise ConfigError("model.pretrained", "has no meaning with model.source=hf (the weights come with model.arch); set it to null")
        else:
            check_model_configs()
            if arch_config(self.arch) is None and not _open_clip_lists(self.arch):
                raise ConfigError(
                    "model.arch",
                    f"{self.arch!r} is not an open_clip architecture; see open_clip.list_models() "
                    "(e.g. ViT-B-32, ViT-B-16, toyclip)",
                )
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError("model.precision", f"{self.precision!r} is not allowed; use fp32, bf16 or fp16")


def _open_clip_lists(arch: str) -> bool:
    """An architecture registered with open_clip in this process without a JSON in clipbench's folders; open_clip
    is asked only when something already imported it (importing it takes seconds)."""
    import sys

    if "open_clip" not in sys.modules:
        return False
    from clipbench.models.factory import available_archs

    return arch in available_archs()


@dataclass
class WandbConfig:
    project: str = "clipbench"
    entity: str | None = None
    mode: str | None = None  # online/offline/disabled; offline when no API key is set
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    dir: str | None = None  # where W&B keeps its files; null = the run directory
    init_timeout: float = 15.0  # seconds to wait for an online endpoint before logging offline
    examples: int = 50  # REC: the first N judged sentences in the predictions table, with their image and boxes


@dataclass
class LoggerConfig:
    backends: list[str] = field(default_factory=lambda: ["csv"])
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def validate(self) -> None:
        bad = [b for b in self.backends if b not in ("csv", "wandb")]
        if bad or not self.backends:
            raise ConfigError("logger.backends", f"{bad or 'empty'} not allowed; use csv and/or wandb")
        if self.wandb.examples < 0:
            raise ConfigError("logger.wandb.examples", f"{self.wandb.examples} is not allowed; use 0 (none) or more")


@dataclass
class CIConfig:
    """Bootstrap intervals on every metric: ``resamples`` (0 = none) at confidence ``level``."""

    resamples: int = 1000
    level: float = 0.95

    def validate(self) -> None:
        if self.resamples < 0:
            raise ConfigError("ci.resamples", f"must be >= 0 (0 = no intervals), got {self.resamples}")
        if not 0 < self.level < 1:
            raise ConfigError("ci.level", f"must be in (0, 1), got {self.level}")


@dataclass
class RunConfig:
    """Run control keys at the top level of the config."""

    device: str = "auto"
    batch_size: int = 64
    num_workers: int = 2
    seed: int = DEFAULT_SEED
    limit: int | None = None
    save_predictions: bool = False
    results_csv: str = "results/results.csv"
    cache_dir: str = ".cache/clipbench"
    resume: bool = False
    progress: bool = True
    experiment: str | None = None
    experiment_name: str | None = None  # names an ad-hoc run's group (CSV `experiment` column, report, W&B)
    baseline: str | None = None  # the row clipbench-report tests the others against (docs/model_comparisons.md)
    optimized_metric: str | None = None  # returned to a hyper-parameter sweeper (hparams_search=...)
    ci: CIConfig = field(default_factory=CIConfig)

    def validate(self) -> None:
        self.ci.validate()
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got {self.num_workers}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be >= 1 or null, got {self.limit}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError("device", f"{self.device!r} is not allowed; use auto, cpu or cuda")


GROUP_KEYS = ("task", "dataset", "model", "method", "logger")
PATH_KEYS = ("paths",)  # read only through the interpolations of the groups above
RUN_KEYS = tuple(f.name for f in fields(RunConfig))


def to_schema(schema: type, node: Any, key: str):
    """Merge ``node`` into dataclass ``schema``; errors name the offending key."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node if node is not None else {})
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        sub = getattr(exc, "full_key", None) or getattr(exc, "key", None) or ""
        msg = str(getattr(exc, "msg", exc)).splitlines()[0]
        allowed = ""
        if "not in struct" in msg or "Key '" in msg:
            allowed = f"; allowed keys: {[f.name for f in fields(schema)]}"
        raise ConfigError(".".join(filter(None, (key, str(sub)))) or schema.__name__, f"{msg}{allowed}") from None
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def as_plain(obj: Any) -> Any:
    """A dataclass config as plain JSON-able data."""
    if is_dataclass(obj):
        return {f.name: as_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [as_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: as_plain(v) for k, v in obj.items()}
    return obj


ASSETS_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "assets"


def register_resolvers() -> None:
    """``${asset:<file>}``: a file shipped in clipbench/assets; ``${clipbench.path:...}``: conf/paths/default.yaml."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", lambda name: str(ASSETS_DIR / name))
    if not OmegaConf.has_resolver("clipbench.path"):
        OmegaConf.register_new_resolver("clipbench.path", deprecated_env_path)


register_resolvers()

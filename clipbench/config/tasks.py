"""Every task's config: its keys and their defaults, stated once (conf/task/<name>.yaml extends them).

Torch-free, like clipbench/config/methods.py; ``TASK_CONFIGS`` pairs each task name with its config
(clipbench/tasks/__init__.py declares each task under these names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from clipbench.data.templates import has_one_field, resolve_templates
from clipbench.errors import ConfigError
from clipbench.metrics.clipscore import CLIP_S_WEIGHT, PREFIX


@dataclass
class ZeroShotConfig:
    name: str = "zeroshot"
    templates: Any = None  # a named set, a list of strings with one {}, or null: the dataset's own, else cifar
    topk: list[int] = field(default_factory=lambda: [1, 5])

    def validate(self) -> None:
        if self.templates is not None:
            resolve_templates(self.templates)


@dataclass
class RecConfig:
    name: str = "rec"
    template: str = "a photo of {}"
    lowercase: bool = True
    iou_threshold: float = 0.5
    bank_size: int = 500  # caption bank for method.subtract

    def validate(self) -> None:
        if not has_one_field(self.template):
            raise ConfigError("task.template", f"needs exactly one '{{}}', got {self.template!r}")
        if not 0 <= self.iou_threshold < 1:
            raise ConfigError("task.iou_threshold", f"must be in [0, 1), got {self.iou_threshold}")
        if self.bank_size < 1:
            raise ConfigError("task.bank_size", f"must be >= 1, got {self.bank_size}")


@dataclass
class RegionClsConfig:
    name: str = "region_cls"
    templates: Any = "simple"  # a named set (simple, cifar, ...) or a list of strings with one {}
    topk: list[int] = field(default_factory=lambda: [1, 5])

    def validate(self) -> None:
        resolve_templates(self.templates)


@dataclass
class RetrievalConfig:
    name: str = "retrieval"
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])

    def validate(self) -> None:
        if not self.recall_k or any(k < 1 for k in self.recall_k):
            raise ConfigError("task.recall_k", f"must be a non-empty list of k >= 1, got {self.recall_k}")


@dataclass
class CompositionalityConfig:
    """SugarCrepe and Winoground, scored as clip_benchmark's image_caption_selection (no keys to set)."""

    name: str = "compositionality"


SCORERS = ("clip_s", "refclip_s", "length")


@dataclass
class ClipScoreConfig:
    name: str = "clipscore"
    scorer: str = "clip_s"  # the scorer behind the plain kendall_tau_* / accuracy_* rows
    weight: float = CLIP_S_WEIGHT
    prefix: str = PREFIX
    ref_clamp: bool = False  # true: the paper's max(ref cosine, 0); false: the official code
    scorers: list[str] = field(default_factory=lambda: list(SCORERS))  # scorers reported by name

    def validate(self) -> None:
        if self.scorer not in SCORERS:
            raise ConfigError("task.scorer", f"{self.scorer!r} is not allowed; use one of {list(SCORERS)}")
        bad = [s for s in self.scorers if s not in SCORERS]
        if bad:
            raise ConfigError("task.scorers", f"{bad} not allowed; use a subset of {list(SCORERS)}")
        if not self.weight > 0:
            raise ConfigError("task.weight", f"must be > 0, got {self.weight}")


WEIGHT_MODES = ("uniform", "search")


@dataclass
class PointCloudTaskConfig:
    name: str = "pointcloud"
    projection: str = "pointclip_v1"  # pointclip_v1 | pointclip_v2
    views: Any = None  # null = the projection's own views; else a list of [a, b, c] Euler angles (radians)
    tilts: Any = None  # pointclip_v2 only: one [a, b, c] tilt per view; null = V2's tilts with its own views
    resolution: int | None = None  # projection grid; null = 128 (v1) / 112 (v2)
    normalize: bool = False  # true: apply the model's mean/std to the depth images (PointCLIP feeds them raw)
    templates: Any = "pointcloud"
    view_weights: Any = "uniform"  # uniform | search | [w_1, ..., w_V]
    search_grid: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    search_split: str = "train"
    search_samples: int = 512  # held-out clouds of search_split used for the search
    search_max_combinations: int = 65536  # above this, coordinate ascent over the same grid
    topk: list[int] = field(default_factory=lambda: [1, 5])

    def validate(self) -> None:
        from clipbench.data.projection_specs import PROJECTIONS

        if self.projection not in PROJECTIONS:
            raise ConfigError("task.projection", f"{self.projection!r} is not allowed; use one of {sorted(PROJECTIONS)}")
        views = self.view_angles()
        if self.tilts is not None:
            if self.projection != "pointclip_v2":
                raise ConfigError("task.tilts", "only pointclip_v2 has view tilts; leave it null")
            if len(_angle_list(self.tilts, "task.tilts")) != len(views):
                raise ConfigError("task.tilts", f"needs one [a, b, c] per view ({len(views)})")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError("task.resolution", f"must be >= 8 or null, got {self.resolution}")
        resolve_templates(self.templates)
        if isinstance(self.view_weights, str):
            if self.view_weights not in WEIGHT_MODES:
                raise ConfigError("task.view_weights", f"{self.view_weights!r} is not allowed; use uniform, search or a list of {len(views)} numbers")
        else:
            weights = list(self.view_weights)
            if len(weights) != len(views) or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights):
                raise ConfigError("task.view_weights", f"must hold {len(views)} finite numbers >= 0 (one per view), got {weights}")
        if not self.search_grid or any(not math.isfinite(w) or w < 0 for w in self.search_grid):
            raise ConfigError("task.search_grid", f"must be a non-empty list of numbers >= 0, got {self.search_grid}")
        if self.search_samples < 1:
            raise ConfigError("task.search_samples", f"must be >= 1, got {self.search_samples}")
        if self.search_split != "train":
            raise ConfigError("task.search_split", "view weights are searched on the train split only; use train")
        if not self.topk or any(k < 1 for k in self.topk):
            raise ConfigError("task.topk", f"must be a list of integers >= 1, got {self.topk}")

    def view_angles(self) -> list[tuple[float, float, float]]:
        from clipbench.data.projection_specs import PROJECTIONS

        if self.views is None:
            return [tuple(v) for v in PROJECTIONS[self.projection].views]
        views = _angle_list(self.views, "task.views")
        if not views:
            raise ConfigError("task.views", "needs at least one view")
        return views

    def view_tilts(self) -> list[tuple[float, float, float]] | None:
        if self.projection != "pointclip_v2":
            return None
        if self.tilts is not None:
            return _angle_list(self.tilts, "task.tilts")
        from clipbench.data.projection_specs import POINTCLIP_V2_TILTS

        return list(POINTCLIP_V2_TILTS) if self.views is None else None


def _angle_list(value: Any, key: str) -> list[tuple[float, float, float]]:
    try:
        out = [tuple(float(a) for a in v) for v in value]
    except (TypeError, ValueError):
        out = []
    if not out or any(len(v) != 3 or not all(math.isfinite(a) for a in v) for v in out):
        raise ConfigError(key, f"must be a list of [a, b, c] Euler angles in radians, got {value!r}")
    return out


LP_PROTOCOLS = ("clip_benchmark", "openai")


@dataclass
class LinearProbeConfig:
    """A linear classifier on frozen image features: clip_benchmark's protocol by default (its CLI defaults:
    ``--fewshot_lr 0.1 --fewshot_epochs 10 --batch_size 64 --fewshot_k -1 --seed 0``), or ``openai``."""

    name: str = "linear_probe"
    protocol: str = "clip_benchmark"  # clip_benchmark (AdamW, weight-decay search) | openai (L-BFGS, C search)
    train_split: str = "train"
    val_split: str | None = None  # a named validation split (clip_benchmark's --val_split) ...
    val_proportion: float | None = None  # ... or this share of the train split (--val_proportion); none: no search
    fewshot_k: int = -1  # shots per class; -1: the whole train split
    seeds: list[int] = field(default_factory=lambda: [0])  # one fit (and shot subset / validation split) per seed
    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 64  # the fit's batches (extraction uses the run's batch_size)
    normalize: bool = True  # unit-length features, as clip_benchmark's Featurizer
    amp: bool = True  # the fit under autocast on CUDA (clip_benchmark's default; never on CPU)
    max_iter: int = 1000  # openai: L-BFGS iterations
    topk: list[int] = field(default_factory=lambda: [1, 5])

    def validate(self) -> None:
        if self.protocol not in LP_PROTOCOLS:
            raise ConfigError("task.protocol", f"{self.protocol!r} is not allowed; use one of {list(LP_PROTOCOLS)}")
        if self.val_split is not None and self.val_proportion is not None:
            raise ConfigError("task.val_split", "give task.val_split or task.val_proportion, not both")
        if self.val_proportion is not None and not 0 < self.val_proportion < 1:
            raise ConfigError("task.val_proportion", f"must be in (0, 1) or null, got {self.val_proportion}")
        if self.val_split is not None and self.val_split == self.train_split:
            raise ConfigError("task.val_split", f"is the train split ({self.train_split!r}); name another or use task.val_proportion")
        if self.protocol == "openai" and not self.searches():
            raise ConfigError("task.protocol", "openai searches C on a validation split: set task.val_split or "
                              "task.val_proportion (e.g. 0.2)")
        if self.fewshot_k == 0 or self.fewshot_k < -1:
            raise ConfigError("task.fewshot_k", f"must be -1 (the whole train split) or >= 1, got {self.fewshot_k}")
        if not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("task.seeds", f"must be a non-empty list of distinct integers >= 0, got {self.seeds}")
        for key in ("lr",):
            if not getattr(self, key) > 0:
                raise ConfigError(f"task.{key}", f"must be > 0, got {getattr(self, key)}")
        for key in ("epochs", "batch_size", "max_iter"):
            if getattr(self, key) < 1:
                raise ConfigError(f"task.{key}", f"must be >= 1, got {getattr(self, key)}")
        if not self.topk or any(k < 1 for k in self.topk):
            raise ConfigError("task.topk", f"must be a list of integers >= 1, got {self.topk}")

    def searches(self) -> bool:
        """Whether the regulariser is searched on a validation split."""
        return self.val_split is not None or self.val_proportion is not None


TASK_CONFIGS: dict[str, type] = {
    "zeroshot": ZeroShotConfig,
    "rec": RecConfig,
    "region_cls": RegionClsConfig,
    "retrieval": RetrievalConfig,
    "compositionality": CompositionalityConfig,
    "clipscore": ClipScoreConfig,
    "pointcloud": PointCloudTaskConfig,
    "linear_probe": LinearProbeConfig,
}

"""What every task shares: its registry entry, the run context it receives, the result it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from clipbench.metrics.uncertainty import Outcome
from clipbench.registry import Registry
from clipbench.runtime import Throughput


@dataclass
class TaskSpec:
    name: str
    config: type
    evaluate: Callable[..., TaskResult]
    methods: frozenset[str] | None = None  # the methods the task supports; None = every method


TASKS: Registry[TaskSpec] = Registry("task")


@dataclass
class RunContext:
    """Run-control values a task needs, independent of Hydra."""

    device: torch.device
    batch_size: int = 64
    num_workers: int = 0
    seed: int = 0
    limit: int | None = None
    save_predictions: bool = False
    cache_dir: str | None = None
    progress: bool = True


@dataclass
class TaskResult:
    """Metric values (with their own n where it differs), per-sample outcomes, skips, predictions and timing."""

    metrics: dict[str, float]
    n: int
    throughput: Throughput
    metric_n: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    predictions: list[dict[str, Any]] | None = None
    tables: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # per-sample data behind each metric
    extra: dict[str, Any] = field(default_factory=dict)

    def n_for(self, metric: str) -> int:
        return self.metric_n.get(metric, self.n)

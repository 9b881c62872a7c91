"""What every task shares: its registry entry, the run context it receives, the result it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clipbench.distributed import SINGLE, Ranks
from clipbench.errors import ConfigError
from clipbench.registry import Registry

if TYPE_CHECKING:  # config checks read the registry without torch
    import torch

    from clipbench.metrics.uncertainty import Outcome
    from clipbench.runtime import Throughput


@dataclass
class TaskSpec:
    name: str
    config: type
    evaluate: Callable[..., TaskResult]
    methods: frozenset[str] | None = None  # the methods the task supports; None = every method
    picks_a_region: bool = False  # the prediction is one of an image's regions (REC)
    subtract: bool = False  # method.subtract (the red-circle paper's caption-bank subtraction) applies
    shards: bool = True  # one evaluation may be sharded over torch.distributed ranks (docs/distributed.md)
    # several configs of one method in one pass over the data: (model, dataset, methods, cfg, ctx) -> a
    # TaskResult or an Exception per method (docs/grouped_sweeps.md); None: the task evaluates one at a time
    evaluate_many: Callable[..., list] | None = None

    def check_method(self, method) -> None:
        """The validated ``method`` config against what this task can measure with it."""
        if self.picks_a_region and not method.sees_regions():
            raise ConfigError("method", f"method={method.name} scores every proposal of an image alike (its features "
                              f"ignore the boxes), so task={self.name} cannot pick one; use method=falip (the default "
                              "of the reference protocol) or a visual prompt such as crop")
        if method.subtract and not self.subtract:
            raise ConfigError("method.subtract", f"the caption-bank subtraction does not apply to task={self.name} "
                              "(it would change nothing, or not what it names); set it to false, e.g. method=falip "
                              "rather than falip_subtract")


TASKS: Registry[TaskSpec] = Registry("task", package="clipbench.tasks", helpers=("base",))


def only_result(results: list) -> TaskResult:
    """The one result of an ``evaluate_many`` over a single method (its exception raised)."""
    (result,) = results
    if isinstance(result, Exception):
        raise result
    return result


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
    examples: int = 0  # samples kept with their image for the logger (REC: logger.wandb.examples); 0 = none
    dataset_config: Any = None  # the validated dataset config (tasks that read further splits of it)
    ranks: Ranks = SINGLE  # this process's share of a run sharded over ranks (clipbench/distributed.py)
    group_memory_mb: float | None = None  # a grouped pass's budget for per-config inputs (docs/grouped_sweeps.md)


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
    tables: dict[str, Any] = field(default_factory=dict)  # per-class/per-view tables (columns -> values, or DataFrames) for W&B
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # per-sample data behind each metric
    extra: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first ctx.examples samples, with their image
    seed_values: dict[str, list[float]] = field(default_factory=dict)  # a metric over seeds: its interval is across them

    def n_for(self, metric: str) -> int:
        return self.metric_n.get(metric, self.n)

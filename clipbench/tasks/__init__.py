"""Tasks: each has a config schema (clipbench/config/tasks.py) and one ``evaluate`` function in its module.

The entries are declared here and each module is imported when its task runs, so config checks and
``clipbench-list`` need no torch.
"""

from clipbench.config.tasks import TASK_CONFIGS
from clipbench.tasks.base import TASKS, RunContext, TaskResult, TaskSpec

__all__ = ["TASKS", "RunContext", "TaskResult", "TaskSpec"]


def _declare(name: str, **flags) -> None:
    TASKS.register(name, TaskSpec(name, TASK_CONFIGS[name], TASKS.lazy(f"{__name__}.{name}", "evaluate"), **flags))


_declare("zeroshot")
_declare("rec", picks_a_region=True, subtract=True, evaluate_many=TASKS.lazy(f"{__name__}.rec", "evaluate_many"))
_declare("region_cls", evaluate_many=TASKS.lazy(f"{__name__}.region_cls", "evaluate_many"))
_declare("pointcloud", methods=frozenset({"clip", "falip"}))
_declare("clipscore", methods=frozenset({"clip"}))
_declare("retrieval", methods=frozenset({"clip"}))
_declare("linear_probe", methods=frozenset({"clip"}), shards=False)
_declare("compositionality", methods=frozenset({"clip"}), shards=False)

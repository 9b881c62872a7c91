"""Hydra's Optuna sweeper (``hydra/sweeper=optuna``, used by ``hparams_search=falip_heads``) with a study that
is kept on disk, resumable and readable. ``clipbench`` registers it under optuna's name (:func:`register_as_optuna`).

* **Stored:** ``hydra.sweeper.storage`` defaults to ``sqlite:///<sweep dir>/optuna.db`` and
  ``hydra.sweeper.study_name`` to ``clipbench``.
* **Resumable:** re-running the same command loads the study and runs only the trials still missing to
  ``n_trials`` completed ones (raise ``n_trials`` to extend it); a trial left running by an interrupted sweep
  is marked failed, and new trials continue the job numbering, so no run directory is overwritten. A study
  made with other overrides (beyond where and how fast trials run) stops the sweep with one line.
* **Readable:** one line per trial (``trial 3: accuracy=0.812 | alpha=0.571, rows=cls, layers=[1,2,3],
  heads=<12 values 0.0047..0.99, mean 0.52, #3fa2c1>``, shown as clipbench/results/settings.py describes)
  in place of the launcher's full override list, and the best trial the same way at the end.
* **Startup trials together:** the sampler's startup trials (drawn without looking at results) are launched as
  one batch, so a grouped launcher evaluates them in one pass over the data (docs/grouped_sweeps.md).
* **Plots** beside the sweep, listed at the end (clipbench/report/studies.py): ``optuna_history.png`` and
  ``optuna_importance.png``.

This module stays light (Hydra imports it when it scans for plugins); optuna is imported when a sweep starts.
"""


from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf


class StudySweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.clipbench_sweeper._study_impl import StudySweeperImpl

        self.sweeper = StudySweeperImpl(**settings)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)


@dataclass
class StudySweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.clipbench_sweeper.optuna_study.StudySweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])


def register_as_optuna() -> None:
    """Make ``hydra/sweeper=optuna`` this sweeper (after plugin discovery has stored the plugin's own entry)."""
    Plugins.instance()
    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=StudySweeperConf, provider="clipbench")

"""Hydra's Optuna sweeper with the sampler's startup trials launched as one batch: ``hydra/sweeper=optuna`` in
clipbench (:func:`register_as_optuna`).

A sampler draws its first ``n_startup_trials`` (TPE, CMA-ES) independently of any result, so asking for them
all at once proposes the same trials as asking one by one; launched together, a grouped launcher evaluates
them in one pass over the data (docs/grouped_sweeps.md). The trials after them go in batches of ``n_jobs``, as
in Hydra's sweeper, and any batch the sampler proposes at once is grouped the same way.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


def startup_trials(sampler: Any) -> int:
    """How many first trials ``sampler`` draws without looking at results (0 when it has no such phase)."""
    return int(getattr(sampler, "_n_startup_trials", 0) or 0)


@contextmanager
def one_study():
    """``optuna.create_study`` returning the study it first created, so that two sweeps share one in-memory study."""
    import optuna

    create = optuna.create_study
    made: dict[str, Any] = {}

    def once(*args, **kwargs):
        if "study" not in made:
            made["study"] = create(*args, **kwargs)
        return made["study"]

    optuna.create_study = once
    try:
        yield
    finally:
        optuna.create_study = create


class StartupBatchOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        startup = min(startup_trials(impl.sampler), impl.n_trials)
        if startup <= impl.n_jobs:
            return impl.sweep(arguments)
        n_trials, n_jobs = impl.n_trials, impl.n_jobs
        with one_study():
            impl.n_trials = impl.n_jobs = startup
            impl.sweep(arguments)
            impl.n_trials, impl.n_jobs = n_trials - startup, n_jobs
            if impl.n_trials > 0:
                impl.sweep(arguments)
        return None


@dataclass
class StartupBatchOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.clipbench_sweeper.startup_batch_sweeper.StartupBatchOptunaSweeper"


def register_as_optuna() -> None:
    """Make ``hydra/sweeper=optuna`` this sweeper, after plugin discovery stored Hydra's own."""
    Plugins.instance()
    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=StartupBatchOptunaSweeperConf, provider="clipbench")

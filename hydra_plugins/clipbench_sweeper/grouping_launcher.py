"""Hydra's basic launcher (jobs one after another, in this process) that evaluates grouped sweeps: jobs that
differ only in FALIP's bias keys share one pass over the data (clipbench/grouped.py, docs/grouped_sweeps.md).

``clipbench`` registers it under the basic launcher's name (:func:`register_as_basic`), so a plain
``clipbench -m ...`` groups; ``hydra.launcher.group_configs=false`` runs every job on its own.
"""

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)


def job_config(sweep_config: DictConfig) -> DictConfig:
    """What the app receives: the job's config without its ``hydra`` node (as Hydra's ``run_job`` makes it),
    with the job's Hydra config current so that ``${hydra:...}`` resolves as in the job."""
    HydraConfig.instance().set_config(sweep_config)
    task_cfg = copy.deepcopy(sweep_config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


class GroupingLauncher(BasicLauncher):
    def __init__(self, group_configs: bool = True, group_memory_mb: float | None = None) -> None:
        super().__init__()
        self.group_configs, self.group_memory_mb = group_configs, group_memory_mb

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        configs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
        self._plan(configs, initial_job_idx)
        runs = []
        for idx, (overrides, sweep_config) in enumerate(zip(job_overrides, configs), start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            runs.append(run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                                job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs

    def _plan(self, configs: list[DictConfig], first: int) -> None:
        from clipbench.grouped import plan_sweep
        from clipbench.runner import identify

        if not self.group_configs or len(configs) < 2:
            plan_sweep([], identify)
            return
        groups = plan_sweep([lambda c=c: job_config(c) for c in configs], identify, self.group_memory_mb)
        for jobs in groups:
            log.info(f"\tjobs {', '.join(f'#{first + j}' for j in jobs)} share one pass over the data")


@dataclass
class GroupingLauncherConf:
    _target_: str = "hydra_plugins.clipbench_sweeper.grouping_launcher.GroupingLauncher"
    group_configs: bool = True  # jobs that differ only in FALIP's bias keys share one pass (docs/grouped_sweeps.md)
    # what one pass may hold of its configs' own inputs (FALIP's attention biases) at once; null: no bound
    group_memory_mb: Optional[float] = 1024


def register_as_basic() -> None:
    """Make ``hydra/launcher=basic`` (the default) this launcher, after plugin discovery stored Hydra's own."""
    Plugins.instance()
    ConfigStore.instance().store(group="hydra/launcher", name="basic", node=GroupingLauncherConf, provider="clipbench")

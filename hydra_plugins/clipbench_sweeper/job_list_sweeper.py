"""A Hydra sweeper over an explicit list of jobs, for tables whose rows are not a Cartesian product.

    hydra:
      sweeper:
        _target_: hydra_plugins.clipbench_sweeper.job_list_sweeper.JobListSweeper   # or: defaults: - override /hydra/sweeper: job_list
        jobs:
          - [+toy=rec, method=falip]
          - [+toy=pointcloud, method=clip]
          - [task=rec, "dataset=refcoco,refcocog", "method=crop,falip"]   # a job may sweep: 4 jobs, first key outermost

Command-line overrides apply to every job; sweeps on the command line (``seed=0,1``) or in
``hydra.sweeper.params`` (``dataset.name: a,b``) multiply the list, each job's runs kept together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


def _product(overrides) -> list[list[str]]:
    """The jobs of one override list, its sweeps expanded as Hydra's basic sweeper does (first key outermost)."""
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def expand_jobs(jobs: list[list[str]], arguments: list[str], parser: OverridesParser | None = None) -> list[list[str]]:
    """Every job's own sweeps expanded, then each job times the sweeps in ``arguments`` (its runs kept together)."""
    parser = parser or OverridesParser.create()
    extras = _product(parser.parse_overrides(list(arguments)))
    return [
        job + extra for listed in (jobs or [[]]) for job in _product(parser.parse_overrides(list(listed))) for extra in extras
    ]


class JobListSweeper(BasicSweeper):
    def __init__(
        self, jobs: list[list[str]] | None = None, max_batch_size: int | None = None, params: dict | None = None
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.jobs = [list(job) for job in (jobs or [])]

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        batch = expand_jobs(self.jobs, self._parse_config() + list(arguments), parser)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.validate_batch_is_legal(batch)
        results = self.launcher.launch(batch, initial_job_idx=0)
        for r in results:
            _ = r.return_value
        return [results]

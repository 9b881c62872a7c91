"""Hydra callbacks: after a multirun, one table of every job's results and a list of failures.

A multirun with failed jobs exits 1 once every job has run, so a SLURM wrapper or CI script can tell.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class MultirunSummary(Callback):
    def __init__(self) -> None:
        self.start: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from clipbench.results.failures import now

        self.start = now()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from clipbench.results.csv_store import read_results
        from clipbench.results.failures import failures_path, failures_since
        from clipbench.results.table import sweep_summary

        path = Path(config.get("results_csv", "results/results.csv"))
        if self.start and path.is_file():
            frame = read_results(path)
            frame = frame[frame["timestamp"].astype(str) >= self.start[:19]]
            if len(frame):
                print(f"\n== multirun summary ({frame['run_id'].nunique()} runs, {path}) ==")
                print(sweep_summary(frame))
        failed = failures_since(config.hydra.sweep.dir, self.start or "")
        if failed:
            print(f"{len(failed)} job(s) failed; see {failures_path(config.hydra.sweep.dir)}")
            sys.exit(1)

"""Hydra callbacks: after a multirun, one table of every job's results and a list of failures."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class MultirunSummary(Callback):
    def __init__(self) -> None:
        self.start: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from clipbench.logging.results import read_results
        from clipbench.logging.table import sweep_summary

        path = Path(config.get("results_csv", "results/results.csv"))
        if self.start and path.is_file():
            frame = read_results(path)
            frame = frame[frame["timestamp"].astype(str) >= self.start]
            if len(frame):
                print(f"\n== multirun summary ({frame['run_id'].nunique()} runs, {path}) ==")
                print(sweep_summary(frame))
        failures = Path(config.hydra.sweep.dir) / "failures.csv"
        if failures.is_file():
            n = sum(1 for _ in open(failures)) - 1
            print(f"{n} job(s) failed; see {failures}")

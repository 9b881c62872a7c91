"""W&B logging: config, metrics, throughput and tables. Failures warn and never touch the CSV."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def log_run(wcfg, name: str, config: dict, metrics: dict, tables: dict, group: str | None, run_dir=None) -> bool:
    """Log one run; returns False (after a warning) when W&B is unavailable or fails."""
    try:
        import wandb

        mode = wcfg.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        run = wandb.init(
            project=wcfg.project, entity=wcfg.entity, mode=mode, group=wcfg.group or group,
            name=name, config=config, tags=list(wcfg.tags), reinit="create_new", dir=str(wcfg.dir or run_dir or "."),
            settings=wandb.Settings(quiet=True),
        )
        run.log(metrics)
        for key, frame in tables.items():
            run.log({key: wandb.Table(dataframe=frame)})
        run.finish()
        return True
    except Exception as exc:  # W&B must never cost the run its results
        log.warning("W&B logging failed (%s: %s); results are in the CSV", type(exc).__name__, exc)
        return False

"""W&B logging: config, metrics, throughput and tables. Failures warn and never touch the CSV."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def init_run(mode: str, init_timeout: float, **kwargs):
    """``wandb.init`` that waits at most ``init_timeout`` seconds for an online endpoint, then logs offline
    (``wandb sync`` uploads it later) instead of stalling every run by W&B's own 90 s default."""
    import wandb

    settings = wandb.Settings(quiet=True, init_timeout=init_timeout)
    try:
        return wandb.init(mode=mode, settings=settings, **kwargs)
    except Exception as exc:
        if mode != "online":
            raise
        log.warning("W&B did not answer within %g s (%s); logging offline instead, upload later with `wandb sync`",
                    init_timeout, type(exc).__name__)
        return wandb.init(mode="offline", settings=settings, **kwargs)


def log_run(wcfg, name: str, config: dict, metrics: dict, tables: dict, group: str | None, run_dir=None) -> bool:
    """Log one run; returns False (after a warning) when W&B is unavailable or fails."""
    try:
        import wandb

        mode = wcfg.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        run = init_run(
            mode, wcfg.init_timeout, project=wcfg.project, entity=wcfg.entity, group=wcfg.group or group,
            name=name, config=config, tags=list(wcfg.tags), reinit="create_new", dir=str(wcfg.dir or run_dir or "."),
        )
        run.log(metrics)
        for key, frame in tables.items():
            run.log({key: wandb.Table(dataframe=frame)})
        run.finish()
        return True
    except Exception as exc:  # W&B must never cost the run its results
        log.warning("W&B logging failed (%s: %s); results are in the CSV", type(exc).__name__, exc)
        return False

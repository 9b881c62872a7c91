"""W&B logging: config, metrics with their intervals and n, throughput, tags and tables. Failures warn and
never touch the CSV.

A run is named ``<method> | <model> | <task>/<dataset> | <run_id>`` and tagged ``task:``, ``dataset:``,
``model:``, ``method:`` and ``experiment:``; its summary holds each metric with ``<metric>/ci_low``,
``<metric>/ci_high`` (the 95% bootstrap interval) and ``<metric>/n``. A table given as a list of dicts may hold
PIL images (REC's examples), logged as ``wandb.Image``.
"""

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


TAG_LENGTH = 64  # W&B's limit on a tag


def run_tags(**named) -> list[str]:
    """``key:value`` tags for the given values (empty ones left out), cut to W&B's length."""
    return [f"{key}:{value}"[:TAG_LENGTH] for key, value in named.items() if value]


def metric_summary(rows: list[dict]) -> dict:
    """Each row's metric with its interval and sample count: ``accuracy``, ``accuracy/ci_low``, ``/ci_high``, ``/n``."""
    summary = {}
    for row in rows:
        metric = row["metric"]
        summary[metric] = row["value"]
        summary |= {f"{metric}/{key}": row[key] for key in ("ci_low", "ci_high", "n") if _known(row.get(key))}
    return summary


def _known(value) -> bool:
    return value is not None and value == value  # NaN: no interval (e.g. a single cluster)


def _table(wandb, rows):
    """A DataFrame as it is, a list of dicts with PIL images in their cells as images."""
    if not isinstance(rows, list):
        return wandb.Table(dataframe=rows)
    from PIL import Image

    def cell(value):
        return wandb.Image(value) if isinstance(value, Image.Image) else value

    columns = list(rows[0])
    return wandb.Table(columns=columns, data=[[cell(row[c]) for c in columns] for row in rows])


def log_run(wcfg, name: str, config: dict, metrics: dict, tables: dict, group: str | None, run_dir=None,
            tags: list[str] = ()) -> bool:
    """Log one run; returns False (after a warning) when W&B is unavailable or fails."""
    try:
        import wandb

        mode = wcfg.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        run = init_run(
            mode, wcfg.init_timeout, project=wcfg.project, entity=wcfg.entity, group=wcfg.group or group,
            name=name, config=config, tags=list(wcfg.tags) + list(tags), reinit="create_new",
            dir=str(wcfg.dir or run_dir or "."),
        )
        run.log(metrics)
        for key, rows in tables.items():
            run.log({key: _table(wandb, rows)})
        run.finish()
        return True
    except Exception as exc:  # W&B must never cost the run its results
        log.warning("W&B logging failed (%s: %s); results are in the CSV", type(exc).__name__, exc)
        return False

"""One evaluation run: validate the config, load the model, run the task, write every output."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from clipbench.config import ValidatedConfig, as_plain, validate
from clipbench.errors import DataError
from clipbench.models.weights import no_weights
from clipbench.results.csv_store import (
    append_rows,
    check_results_csv,
    claim_config,
    read_results,
    release_claim,
)
from clipbench.results.run_files import write_config, write_metrics, write_predictions
from clipbench.results.table import SUMMARY_COLUMNS, format_table, with_intervals

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
RANDOM_INIT_BANNER = (
    "\n" + "!" * 78 + "\n!! model.pretrained=null: {arch} is RANDOMLY INITIALISED. "
    "Its numbers measure nothing.\n" + "!" * 78 + "\n"
)


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit of the code, ``<sha>-dirty`` when tracked files differ from it, else ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True,
            text=True, timeout=10,
        )
        dirty = status.returncode != 0 or bool(status.stdout.strip())
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_hash(v: ValidatedConfig) -> str:
    """Identity of what is measured: task, data, model, method, seed and limit (not where it is logged)."""
    payload = {
        "task": as_plain(v.task), "dataset": as_plain(v.dataset), "model": as_plain(v.model),
        "method": as_plain(v.method), "seed": v.run.seed, "limit": v.run.limit,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def already_done(results_csv: str, chash: str) -> bool:
    path = Path(results_csv)
    if not path.is_file():
        return False
    frame = read_results(path)
    return bool(len(frame)) and (frame["config_hash"].astype(str) == chash).any()


_DATASET_CACHE: dict[str, object] = {}


def build_dataset(dataset_cfg):
    """Datasets are read-only once built: jobs of one sweep process share them (parsed annotations, loaded arrays)."""
    from clipbench.config import dataset_kind
    from clipbench.data import DATASETS

    key = json.dumps(as_plain(dataset_cfg), sort_keys=True, default=str)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE.clear()  # keep one dataset in memory at a time
        _DATASET_CACHE[key] = DATASETS.get(dataset_kind(dataset_cfg)).build(dataset_cfg)
    return _DATASET_CACHE[key]


def run(cfg: DictConfig, run_dir: Path, experiment: str | None = None, method_config: str | None = None) -> list[dict]:
    """Evaluate one config and return its result rows (also appended to the results CSV).

    ``method_config`` is the ``method=`` config chosen (e.g. falip_subtract); rows store it as
    ``method_params["config"]`` (the method's name when it is not known).
    """
    v = validate(cfg)  # first, before torch is imported: most config mistakes stop within a second or two
    check_results_csv(v.run.results_csv)
    chash = config_hash(v)
    if not v.run.resume:
        return _evaluate(v, cfg, run_dir, chash, experiment, method_config)
    busy = claim_config(v.run.results_csv, chash)
    if busy:
        print(f"resume: config {chash} {busy}; skipping")
        return []
    try:
        return _evaluate(v, cfg, run_dir, chash, experiment, method_config)
    finally:
        release_claim(v.run.results_csv, chash)


def _evaluate(v: ValidatedConfig, cfg: DictConfig, run_dir: Path, chash: str, experiment: str | None,
              method_config: str | None) -> list[dict]:
    """Build, evaluate, write the rows and outputs of one validated config."""
    from clipbench.methods import METHODS
    from clipbench.metrics.uncertainty import OUTCOMES_FILE, bootstrap_interval, save_outcomes
    from clipbench.models import load_model
    from clipbench.runtime import peak_memory_mb, reset_peak_memory, resolve_device, seed_everything
    from clipbench.tasks import TASKS, RunContext

    experiment = v.run.experiment_name or v.run.experiment or experiment
    device = resolve_device(v.run.device)
    seed_everything(v.run.seed)
    dataset = build_dataset(v.dataset)  # a bad root or failed integrity check stops before the model loads
    write_config(run_dir, cfg)
    reset_peak_memory(device)
    if no_weights(v.model.pretrained) and v.model.source != "hf":
        print(RANDOM_INIT_BANNER.format(arch=v.model.arch))
    model = load_model(v.model.arch, v.model.pretrained, v.model.precision, device, v.model.cache_dir, source=v.model.source)
    method = METHODS.get(v.method.name).build(v.method, model)
    ctx = RunContext(
        device=device, batch_size=v.run.batch_size, num_workers=v.run.num_workers, seed=v.run.seed,
        limit=v.run.limit, save_predictions=v.run.save_predictions, cache_dir=v.run.cache_dir,
        progress=v.run.progress,
    )
    started = time.perf_counter()
    result = TASKS.get(v.task.name).evaluate(model, dataset, method, v.task, ctx)
    seconds = time.perf_counter() - started
    if result.n == 0:
        raise DataError(f"no sample was evaluated: {nothing_evaluated(v.dataset, result)}")
    items = result.throughput.items or result.n
    items_per_s = items / seconds if seconds > 0 else 0.0
    peak = peak_memory_mb(device)
    run_id = uuid.uuid4().hex[:12]
    base = {
        "run_id": run_id,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "config_hash": chash,
        "experiment": experiment or "",
        "task": v.task.name,
        "dataset": v.dataset.name,
        "split": getattr(v.dataset, "split", "") or "",
        "model_arch": v.model.arch,
        "model_pretrained": v.model.pretrained or "",
        "method": v.method.name,
        "method_params": json.dumps({**method.params(), "config": method_config or v.method.name}, sort_keys=True),
        "items_per_s": round(items_per_s, 3),
        "peak_mem_mb": round(peak, 1),
        "device": str(device),
        "seed": v.run.seed,
        "task_params": json.dumps(as_plain(v.task), sort_keys=True, default=str),
        "dataset_params": json.dumps(as_plain(v.dataset), sort_keys=True, default=str),
        "ci_low": None,
        "ci_high": None,
    }
    metrics = dict(result.metrics)
    metrics["skipped"] = float(result.skipped)
    if result.captions_skipped is not None:  # captions are counted apart from the images of ``skipped``
        metrics["skipped_captions"] = float(result.captions_skipped[0])
    warn_undefined(metrics)
    ci_started = time.perf_counter()
    intervals, by_outcome = {}, {}  # a metric reported under two names is resampled once
    for name, outcome in result.outcomes.items():
        if name not in metrics:  # e.g. top5 over fewer than 5 classes is not reported
            continue
        if id(outcome) not in by_outcome:
            by_outcome[id(outcome)] = bootstrap_interval(outcome, v.run.ci.resamples, v.run.ci.level, v.run.seed)
        intervals[name] = by_outcome[id(outcome)]
    ci_seconds = time.perf_counter() - ci_started
    rows = [
        {**base, "metric": name, "value": float(value), "n": skipped_of(result, name),
         "ci_low": intervals.get(name, (None, None))[0], "ci_high": intervals.get(name, (None, None))[1]}
        for name, value in metrics.items()
    ]
    payload = {
        "run_id": run_id, "config_hash": chash, "metrics": metrics, "n": result.n,
        "metric_n": {m: result.n_for(m) for m in result.metrics}, "skipped": result.skipped,
        "skip_reasons": result.skip_reasons, "items_per_s": items_per_s, "seconds": seconds,
        "loop_items_per_s": result.throughput.items_per_s, "forward_items_per_s": result.throughput.forward_items_per_s,
        "peak_mem_mb": peak, "device": str(device),
        "ci": {"level": v.run.ci.level, "resamples": v.run.ci.resamples, "seconds": ci_seconds, "intervals": intervals},
        **result.extra,
    }
    if result.predictions is not None:
        write_predictions(run_dir, result.predictions)
    save_outcomes(run_dir / OUTCOMES_FILE, result.outcomes, run_id)
    write_metrics(run_dir, payload)
    _log(v, rows, payload, result, run_id, experiment, run_dir)
    if result.skipped:
        reasons = ", ".join(f"{k}: {n}" for k, n in result.skip_reasons.items())
        print(f"skipped {result.skipped} sample(s) ({reasons})")
    print(format_table(with_intervals(rows), SUMMARY_COLUMNS))
    print(
        f"throughput: {items_per_s:.1f} items/s end-to-end (text encoding and data loading included), "
        f"{result.throughput.forward_items_per_s:.1f} items/s model forward; peak memory {peak:.0f} MB ({device})"
    )
    return rows


def skipped_of(result, metric: str) -> int:
    """A row's ``n``: the metric's own, or for a skip count every input of its kind read, skipped or evaluated."""
    if metric == "skipped":
        return result.skipped + result.n
    if metric == "skipped_captions":
        return result.captions_skipped[1]
    return result.n_for(metric)


def warn_undefined(metrics: dict) -> None:
    """One line naming the metrics that came out NaN; their rows are kept and read "undefined"."""
    undefined = [name for name, value in metrics.items() if value != value]
    if undefined:
        print(f"warning: {', '.join(undefined)} undefined (NaN) on this data: a correlation with a constant "
              "variable (e.g. identical human ratings) or no sample to average; the rows keep them as nan", file=sys.stderr)


def nothing_evaluated(dataset_cfg, result) -> str:
    """Which split of which files gave nothing to evaluate, and why."""
    plain = as_plain(dataset_cfg)
    where = ", ".join(f"dataset.{k}={plain[k]}" for k in DATA_FILE_KEYS if plain.get(k))
    split = f"split {plain['split']!r} of " if plain.get("split") else ""
    reasons = ", ".join(f"{k}: {n}" for k, n in result.skip_reasons.items()) or "the split is empty"
    return f"{split}{plain.get('name')} ({where}) ({reasons})"


DATA_FILE_KEYS = ("root", "path", "annotations", "candidates", "references", "images")


def _log(v: ValidatedConfig, rows, payload, result, run_id: str, experiment: str | None, run_dir: Path) -> None:
    """The results CSV first, always (a slow or unreachable W&B can then cost nothing), then W&B if asked."""
    from clipbench.results.wandb_logger import log_run

    append_rows(v.run.results_csv, rows)
    if "wandb" in v.logger.backends:
        import pandas as pd

        name = f"{v.task.name}-{v.dataset.name}-{v.method.name}-{run_id}"
        tables = {"metrics": pd.DataFrame([{k: r[k] for k in ("metric", "value", "n")} for r in rows]), **result.tables}
        if result.predictions:
            tables["predictions"] = pd.DataFrame(result.predictions)
        config = OmegaConf.to_container(v.raw, resolve=True) | {"config_hash": rows[0]["config_hash"], "git_sha": rows[0]["git_sha"]}
        log_run(
            v.logger.wandb, name, config, payload["metrics"]
            | {"items_per_s": payload["items_per_s"], "peak_mem_mb": payload["peak_mem_mb"]}, tables, experiment,
            run_dir,
        )

"""One evaluation run: validate the config, load the model, run the task, write every output."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from clipbench.config import (
    GROUP_KEYS,
    PATH_KEYS,
    RUN_KEYS,
    LoggerConfig,
    ModelConfig,
    RunConfig,
    as_plain,
    to_schema,
)
from clipbench.errors import ConfigError, DataError
from clipbench.models.weights import model_label, no_weights
from clipbench.results.csv_store import (
    append_rows,
    check_results_csv,
    claim_config,
    release_claim,
)
from clipbench.results.run_files import write_config, write_metrics, write_predictions
from clipbench.results.table import SUMMARY_COLUMNS, format_table, method_config_name, with_intervals

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
RANDOM_INIT_BANNER = (
    "\n" + "!" * 78 + "\n!! model.pretrained=null: {arch} is RANDOMLY INITIALISED. "
    "Its numbers measure nothing.\n" + "!" * 78 + "\n"
)


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The code that wrote a row: in clipbench's own checkout its commit (``<sha>-dirty`` when tracked files
    differ from it), else the package version, ``v<version>``: an install inside some other git repository
    (a wheel in a project's venv) must not record that project's commit."""
    from clipbench import __version__

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
            text=True, timeout=5,
        )
        toplevel, _, sha = out.stdout.strip().partition("\n")
        if out.returncode != 0 or not is_source_root(Path(toplevel)):
            return f"v{__version__}"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True,
            text=True, timeout=10,
        )
        dirty = status.returncode != 0 or bool(status.stdout.strip())
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"v{__version__}"


def is_source_root(toplevel: Path) -> bool:
    """Whether a git top level is clipbench's own checkout: the folder holding pyproject.toml next to clipbench/."""
    return toplevel.resolve() == PROJECT_ROOT.resolve() and (PROJECT_ROOT / "pyproject.toml").is_file()


# ---------------------------------------------------------------- step 1: validate


@dataclass
class ValidatedConfig:
    run: RunConfig
    model: ModelConfig
    logger: LoggerConfig
    task: Any
    dataset: Any
    method: Any
    raw: DictConfig


def resolve_groups(cfg: DictConfig) -> DictConfig:
    """A copy whose groups hold values, not interpolations: ``${paths.*}`` resolves only from the root."""
    out = cfg.copy()
    for group in GROUP_KEYS:
        try:
            plain = OmegaConf.to_container(cfg[group], resolve=True)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or group
            raise ConfigError(str(key), str(getattr(exc, "msg", exc)).splitlines()[0]) from None
        with open_dict(out):
            out[group] = plain
    return out


def _with_toy_hint(exc: ConfigError, cfg: DictConfig) -> ConfigError:
    """A missing toy dataset means the toy world was not written (here): say how, not where to download."""
    toy = cfg.get("paths", {}).get("toy")
    value = str(cfg.dataset.get(exc.key.split(".")[-1], ""))
    if not toy or "does not exist" not in exc.message or Path(toy).is_dir() or not value.startswith(str(toy)):
        return exc
    return ConfigError(exc.key, f"{value} does not exist: the toy world is not written at {toy}; run "
                       "clipbench-toy-world (or clipbench-toy-world --out DIR and pass paths.toy=DIR)")


def validate(cfg: DictConfig) -> ValidatedConfig:
    """Check every group against its schema; the first bad key raises ``ConfigError``.

    Cheapest first, so most mistakes stop in about a second: the top-level keys before anything heavy is
    imported, the dataset (its root) before the task and method registries, open_clip last.
    """
    for group in GROUP_KEYS:
        if group not in cfg or cfg[group] is None:
            raise ConfigError(group, f"no {group} selected; pass {group}=<name>")
    unknown = [k for k in cfg if k not in GROUP_KEYS + RUN_KEYS + PATH_KEYS]
    if unknown:
        raise ConfigError(unknown[0], f"unknown top-level key; allowed: {sorted(GROUP_KEYS + RUN_KEYS + PATH_KEYS)}")
    cfg = resolve_groups(cfg)
    run = to_schema(RunConfig, {k: cfg[k] for k in RUN_KEYS if k in cfg}, "")
    logger = to_schema(LoggerConfig, cfg.logger, "logger")

    from clipbench.data import DATASETS

    task_name = _name(cfg.task, "task")
    dataset_spec = DATASETS.get(dataset_kind(cfg.dataset))
    if task_name not in dataset_spec.tasks:
        raise ConfigError(
            "dataset", f"{dataset_spec.name!r} does not serve task={task_name}; it serves {sorted(dataset_spec.tasks)}"
        )
    try:
        dataset = to_schema(dataset_spec.config, cfg.dataset, "dataset")
    except ConfigError as exc:
        raise _with_toy_hint(exc, cfg) from None

    from clipbench.methods import METHODS
    from clipbench.models.archs import vit_tower_shape
    from clipbench.models.languages import check_text_language
    from clipbench.tasks import TASKS

    task_spec = TASKS.get(task_name)
    task = to_schema(task_spec.config, cfg.task, "task")
    method_spec = METHODS.get(_name(cfg.method, "method"))
    if task_spec.methods is not None and method_spec.name not in task_spec.methods:
        raise ConfigError("method", f"task={task.name} supports method={'|'.join(sorted(task_spec.methods))}, not {method_spec.name!r}")
    method = to_schema(method_spec.config, cfg.method, "method")
    task_spec.check_method(method)
    model = to_schema(ModelConfig, cfg.model, "model")
    check_text_language(model.arch, getattr(dataset, "language", None))
    tower = vit_tower_shape(model.arch) if model.source == "open_clip" else None
    if tower is not None:
        method.check_tower(*tower)  # layer and head ranges, from the architecture's config
    return ValidatedConfig(run, model, logger, task, dataset, method, cfg)


def dataset_kind(node: Any) -> str:
    """The registered loader of a dataset config: its ``catalogue`` (e.g. clip_benchmark), else its name."""
    catalogue = node.get("catalogue") if isinstance(node, DictConfig) else getattr(node, "catalogue", None)
    return str(catalogue) if catalogue else _name(node, "dataset") if isinstance(node, DictConfig) else str(node.name)


def dataset_label(dataset) -> str:
    """The rows' dataset: its name, with ``@<language>`` for a language other than English (dataset.language)."""
    language = getattr(dataset, "language", "en")
    return dataset.name if language == "en" else f"{dataset.name}@{language}"


def _name(node: Any, group: str) -> str:
    name = node.get("name") if isinstance(node, DictConfig) else None
    if not name:
        raise ConfigError(f"{group}.name", f"the {group} config has no name")
    return str(name)



def identify(cfg: DictConfig) -> tuple[ValidatedConfig, str]:
    """A job's validated config and its config hash (what grouped sweeps plan with, clipbench/grouped.py)."""
    v = validate(cfg)
    return v, config_hash(v)


def config_hash(v: ValidatedConfig) -> str:
    """Identity of what is measured: task, data, model (with its architecture's content), method, seed,
    limit and the bootstrap intervals' settings (not where it is logged)."""
    from clipbench.models.archs import arch_digest

    payload = {
        "task": as_plain(v.task), "dataset": as_plain(v.dataset), "model": as_plain(v.model),
        "method": as_plain(v.method), "seed": v.run.seed, "limit": v.run.limit,
        "architecture": arch_digest(v.model.arch) if v.model.source == "open_clip" else None,
        "ci": as_plain(v.run.ci) if v.run.ci.resamples else None,  # no intervals: their level changes nothing
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


_DATASET_CACHE: dict[str, object] = {}


def build_dataset(dataset_cfg):
    """Datasets are read-only once built: jobs of one sweep process share them (parsed annotations, loaded arrays)."""
    from clipbench.data import DATASETS

    key = json.dumps(as_plain(dataset_cfg), sort_keys=True, default=str)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE.clear()  # keep one dataset in memory at a time
        _DATASET_CACHE[key] = DATASETS.get(dataset_kind(dataset_cfg)).build(dataset_cfg)
    return _DATASET_CACHE[key]


def run(cfg: DictConfig, run_dir: Path, experiment: str | None = None, method_config: str | None = None) -> list[dict]:
    """Evaluate one config and return its result rows (also appended to the results CSV).

    ``method_config`` is the ``method=`` config chosen (e.g. falip_subtract); rows store it as
    ``method_params["config"]`` (the method's name when it is not known). The steps: validate, build,
    evaluate, rows, write.
    """
    v = validate(cfg)  # first, before torch is imported: most config mistakes stop within a second or two
    from clipbench.distributed import join
    from clipbench.models.factory import weights_fingerprint
    from clipbench.tasks import TASKS

    check_results_csv(v.run.results_csv)
    chash = config_hash(v)
    weights = weights_fingerprint(v.model.arch, v.model.pretrained, v.model.source, v.run.seed, v.model.cache_dir)
    experiment = v.run.experiment_name or v.run.experiment or experiment
    ranks = join(v.run.device)  # several ranks (torchrun, SLURM tasks): one evaluation sharded over them
    if ranks.distributed and not TASKS.get(v.task.name).shards:
        raise ConfigError("task", f"task={v.task.name} is not sharded over ranks; run it as one process "
                          "(without torchrun, or hydra.launcher.tasks_per_node=1)")
    with failing_together(ranks):
        # claimed under the results lock (by rank 0 alone): two resumed sweeps on one CSV split the configs
        claim = v.run.resume and ranks.is_main
        busy = ranks.from_main(claim_config(v.run.results_csv, chash, weights, experiment or "") if claim else None)
        if busy:
            if ranks.is_main:
                print(f"resume: config {chash} {busy}; skipping")
            return []
        try:
            built = build(v, cfg, run_dir, ranks)
            result, seconds = evaluate(v, built, (chash, weights))
            usage = run_usage(ranks, built.device, result, seconds)
            if not ranks.is_main:
                return []  # rank 0 writes the one set of rows and run files
            rows, payload = result_rows(v, built, result, usage, (chash, weights), experiment, method_config)
            write(v, rows, payload, result, run_dir, experiment)
        finally:
            if v.run.resume and ranks.is_main:
                release_claim(v.run.results_csv, chash, experiment or "")
    return rows


@contextmanager
def failing_together(ranks):
    """A rank that fails leaves its error for the others and leaves the group, so every rank stops now with
    one line naming it (``DistributedError``); nothing is written, and ``resume=true`` runs it again."""
    from clipbench.distributed import DistributedError, leave, report_failure

    try:
        yield
    except DistributedError:
        leave()
        raise
    except BaseException as exc:
        report_failure(ranks, exc)
        raise


@dataclass
class Usage:
    """The whole run's throughput (items/s summed over ranks), peak memory (the max over ranks) and world size."""

    items_per_s: float
    peak_mem_mb: float
    seconds: float
    world_size: int


def run_usage(ranks, device, result, seconds: float) -> Usage:
    """Each rank's items/s (its own items over its own seconds) summed, and the largest peak memory."""
    from clipbench.runtime import peak_memory_mb

    each = ranks.each((result.throughput.items, seconds, peak_memory_mb(device)))
    if not any(items for items, _, _ in each):  # nothing counted (e.g. embeddings from the cache): the evaluated n
        each = [(result.n if r == 0 else 0, s, peak) for r, (_, s, peak) in enumerate(each)]
    items_per_s = sum(items / s for items, s, _ in each if s > 0)
    return Usage(items_per_s, max(peak for _, _, peak in each), max(s for _, s, _ in each), ranks.world_size)


@dataclass
class Built:
    """What a validated config builds: the device, dataset, model, method and the task's run context."""

    device: Any
    dataset: Any
    model: Any
    method: Any
    ctx: Any


def build(v: ValidatedConfig, cfg: DictConfig, run_dir: Path, ranks=None) -> Built:
    """Step 2: device, seed, dataset (a bad root or failed integrity check stops before the model loads), model, method."""
    from clipbench.distributed import SINGLE, rank_device
    from clipbench.methods import METHODS
    from clipbench.models import load_model
    from clipbench.models.languages import with_text_language
    from clipbench.runtime import reset_peak_memory, resolve_device, seed_everything
    from clipbench.tasks import RunContext

    ranks = ranks or SINGLE
    device = resolve_device(rank_device(ranks, v.run.device))
    seed_everything(v.run.seed)
    dataset = build_dataset(v.dataset)
    if ranks.is_main:
        write_config(run_dir, cfg)
    reset_peak_memory(device)
    if no_weights(v.model.pretrained) and v.model.source != "hf" and ranks.is_main:
        print(RANDOM_INIT_BANNER.format(arch=v.model.arch))
    model = load_model(v.model.arch, v.model.pretrained, v.model.precision, device, v.model.cache_dir,
                       source=v.model.source, seed=v.run.seed)
    model = with_text_language(model, getattr(v.dataset, "language", None))
    method = METHODS.get(v.method.name).build(v.method, model)
    ctx = RunContext(
        device=device, batch_size=v.run.batch_size, num_workers=v.run.num_workers, seed=v.run.seed,
        limit=v.run.limit, save_predictions=v.run.save_predictions, cache_dir=v.run.cache_dir,
        progress=v.run.progress and ranks.is_main, examples=v.logger.wandb.examples if "wandb" in v.logger.backends else 0,
        dataset_config=v.dataset,
        ranks=ranks,
    )
    return Built(device, dataset, model, method, ctx)


def evaluate(v: ValidatedConfig, built: Built, identity: tuple[str, str] | None = None):
    """Step 3: the task's own ``evaluate``, or this config's share of its sweep group's pass (``identity``: the
    config hash and weights fingerprint, clipbench/grouped.py); returns its result and the seconds it took."""
    from clipbench.grouped import grouped_result
    from clipbench.registry import resolved
    from clipbench.tasks import TASKS

    # grouped sweeps run in one process; a run sharded over ranks evaluates its own config alone
    shared = grouped_result(v, built, *identity) if identity and not built.ctx.ranks.distributed else None
    if shared is not None:
        result, seconds = shared
    else:
        evaluate_task = resolved(TASKS.get(v.task.name).evaluate)  # the task's module imported before the clock starts
        built.ctx.ranks.each(None)  # the ranks start together: a rank that loaded its model sooner waits here, untimed
        started = time.perf_counter()
        result = evaluate_task(built.model, built.dataset, built.method, v.task, built.ctx)
        seconds = time.perf_counter() - started
    if result.n == 0:
        raise DataError(f"no sample was evaluated: {nothing_evaluated(v.dataset, result)}")
    return result, seconds


def result_rows(v: ValidatedConfig, built: Built, result, usage: Usage, identity: tuple[str, str],
                experiment: str | None, method_config: str | None) -> tuple[list[dict], dict]:
    """Step 4: one CSV row per metric (with its bootstrap interval) and the run's metrics.json payload.

    ``identity``: the config hash and the weights fingerprint, what resume matches a row on."""
    from clipbench.fingerprints import data_fingerprint
    from clipbench.metrics.uncertainty import bootstrap_interval, seed_interval
    from clipbench.results.environment import env_key, environment_record

    device = built.device
    items_per_s, peak, seconds = usage.items_per_s, usage.peak_mem_mb, usage.seconds
    run_id = uuid.uuid4().hex[:12]
    chash, weights = identity
    env, data = environment_record(), data_fingerprint(as_plain(v.dataset))
    base = {
        "run_id": run_id,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "config_hash": chash,
        "experiment": experiment or "",
        "task": v.task.name,
        "dataset": dataset_label(v.dataset),
        "split": getattr(v.dataset, "split", "") or "",
        "model_arch": v.model.arch,
        "model_pretrained": v.model.pretrained or "",
        "method": v.method.name,
        "method_params": json.dumps({**built.method.params(), "config": method_config or v.method.name}, sort_keys=True),
        "items_per_s": round(items_per_s, 3),
        "peak_mem_mb": round(peak, 1),
        "device": str(device),
        "seed": v.run.seed,
        "task_params": json.dumps(as_plain(v.task), sort_keys=True, default=str),
        "dataset_params": json.dumps(as_plain(v.dataset), sort_keys=True, default=str),
        "ci_low": None,
        "ci_high": None,
        "weights_fingerprint": weights,
        "model_precision": v.model.precision,
        "ci_level": v.run.ci.level if v.run.ci.resamples else None,
        "ci_resamples": v.run.ci.resamples,
        "model_source": v.model.source,
        "env": env_key(env),
        "data_fingerprint": data,
        "world_size": usage.world_size,
    }
    metrics = dict(result.metrics)
    metrics["skipped"] = float(result.skipped)
    warn_undefined(metrics)
    ci_started = time.perf_counter()
    intervals, by_outcome = {}, {}  # a metric reported under two names is resampled once
    for name, outcome in result.outcomes.items():
        if name not in metrics:  # e.g. top5 over fewer than 5 classes is not reported
            continue
        if len(result.seed_values.get(name, ())) > 1:  # several seeds: the interval is across them
            intervals[name] = seed_interval(result.seed_values[name], v.run.ci.level)
            continue
        if id(outcome) not in by_outcome:
            by_outcome[id(outcome)] = bootstrap_interval(outcome, v.run.ci.resamples, v.run.ci.level, v.run.seed)
        intervals[name] = by_outcome[id(outcome)]
    ci_seconds = time.perf_counter() - ci_started
    rows = [
        {**base, "metric": name, "value": float(value), "n": result.n_for(name) if name != "skipped" else result.skipped + result.n,
         "ci_low": intervals.get(name, (None, None))[0], "ci_high": intervals.get(name, (None, None))[1]}
        for name, value in metrics.items()
    ]
    payload = {
        "run_id": run_id, "config_hash": chash, "weights_fingerprint": weights, "metrics": metrics, "n": result.n,
        "metric_n": {m: result.n_for(m) for m in result.metrics}, "skipped": result.skipped,
        "skip_reasons": result.skip_reasons, "items_per_s": items_per_s, "seconds": seconds,
        "loop_items_per_s": result.throughput.items_per_s, "forward_items_per_s": result.throughput.forward_items_per_s,
        "peak_mem_mb": peak, "device": str(device), "world_size": usage.world_size,
        "ci": {"level": v.run.ci.level, "resamples": v.run.ci.resamples, "seconds": ci_seconds, "intervals": intervals},
        "model_source": v.model.source, "data_fingerprint": data, "env_key": base["env"], "env": env,
        **result.extra,
    }
    return rows, payload


def write(v: ValidatedConfig, rows: list[dict], payload: dict, result, run_dir: Path, experiment: str | None) -> None:
    """Step 5: predictions, outcomes and metrics.json in the run directory, the CSV rows (then W&B), the summary."""
    from clipbench.metrics.uncertainty import OUTCOMES_FILE, save_outcomes

    if result.predictions is not None:
        write_predictions(run_dir, result.predictions)
    save_outcomes(run_dir / OUTCOMES_FILE, result.outcomes, payload["run_id"])
    write_metrics(run_dir, payload)
    _log(v, rows, payload, result, payload["run_id"], experiment, run_dir)
    if result.skipped:
        reasons = ", ".join(f"{k}: {n}" for k, n in result.skip_reasons.items())
        print(f"skipped {result.skipped} sample(s) ({reasons})")
    print(format_table(with_intervals(rows), SUMMARY_COLUMNS))
    print(
        f"throughput: {payload['items_per_s']:.1f} items/s end-to-end (text encoding and data loading included), "
        f"{result.throughput.forward_items_per_s:.1f} items/s model forward; peak memory {payload['peak_mem_mb']:.0f} MB "
        f"({payload['device']})"
    )


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

        from clipbench.results.wandb_logger import metric_summary, run_tags

        tables = {"metrics": pd.DataFrame([{k: r[k] for k in ("metric", "value", "n")} for r in rows]),
                  **{key: pd.DataFrame(table) for key, table in result.tables.items()}}
        if result.predictions:
            tables["predictions"] = pd.DataFrame(result.predictions)
        if result.examples:  # REC: the first sentences with their expression and image (logger.wandb.examples)
            tables["predictions"] = result.examples
        record = ("config_hash", "weights_fingerprint", "data_fingerprint", "env_key", "env")
        config = OmegaConf.to_container(v.raw, resolve=True) | {"git_sha": rows[0]["git_sha"]} | {k: payload[k] for k in record}
        config["model_label"] = label = model_label(v.model.arch, v.model.pretrained, v.model.source)
        method = method_config_name(rows[0]["method_params"]) or v.method.name
        name = f"{method} | {label} | {v.task.name}/{v.dataset.name} | {run_id}"
        tags = run_tags(task=v.task.name, dataset=v.dataset.name, model=label, method=method, experiment=experiment)
        summary = metric_summary(rows) | {"items_per_s": payload["items_per_s"], "peak_mem_mb": payload["peak_mem_mb"]}
        log_run(v.logger.wandb, name, config, summary, tables, experiment, run_dir, tags)

"""Grouped sweeps: the jobs of a multirun that differ only in method keys which leave the data and the model's
unbiased blocks unchanged (FALIP's alpha, sigma, shape, rows, layers, heads, fast) are evaluated in one pass.

The launcher (hydra_plugins/clipbench_sweeper/grouping_launcher.py) calls :func:`plan_sweep` with every job's
config before the first job runs (this module does not import the runner: the runner imports it). The first job of a group to run evaluates all the group's configs that are
still to do (``task.evaluate_many``: each image read and preprocessed once, the shared prefix of blocks run once
per image batch) and keeps the others' results in memory; each later job of the group then takes its own
result and writes its own rows, run directory, metrics.json, outcomes.npz, predictions and W&B run, exactly as
if it had run alone. A config that fails in the pass fails its own job only. See docs/grouped_sweeps.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import DictConfig

from clipbench.config import as_plain

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One config of a group: its config hash and its validated config."""

    chash: str
    validated: Any


@dataclass
class SweepPlan:
    """The groups of the current sweep, and the results computed for jobs that have not run yet."""

    groups: dict[str, list[Member]] = field(default_factory=dict)  # group key -> its configs
    group_of: dict[str, str] = field(default_factory=dict)  # config hash -> group key
    ready: dict[str, tuple[Any, float]] = field(default_factory=dict)  # config hash -> (result or exception, seconds)
    memory_mb: float | None = None  # the pass's budget for per-config inputs (hydra.launcher.group_memory_mb)


PLAN = SweepPlan()


def group_key(v) -> str | None:
    """What a config shares with the others of its group: everything but its method's ``shared_pass_keys``
    (None: its task or method cannot share a pass)."""
    from clipbench.tasks import TASKS

    varying = type(v.method).shared_pass_keys
    if not varying or TASKS.get(v.task.name).evaluate_many is None:
        return None
    method = {k: val for k, val in as_plain(v.method).items() if k not in varying}
    run = {k: getattr(v.run, k) for k in RUN_CONTEXT_KEYS}
    payload = {"task": as_plain(v.task), "dataset": as_plain(v.dataset), "model": as_plain(v.model), "method": method, "run": run}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


RUN_CONTEXT_KEYS = ("device", "batch_size", "num_workers", "seed", "limit", "save_predictions", "cache_dir", "progress")


def plan_sweep(configs: Sequence[Callable[[], DictConfig]], identify: Callable[[DictConfig], tuple[Any, str]],
               memory_mb: float | None = None) -> list[list[int]]:
    """Replace the plan with the groups among ``configs`` (each a callable giving one job's config, without the
    ``hydra`` node; ``identify``: a config -> its validated form and config hash, ``clipbench.runner.identify``);
    returns the job indices of each group of two configs or more. A config that does not validate is left out:
    its own job reports the error. ``memory_mb``: what a pass may hold of its configs' own inputs at once
    (FALIP's attention biases); more configs than fit are encoded in turns."""
    from clipbench.errors import ClipbenchError

    PLAN.groups.clear()
    PLAN.group_of.clear()
    PLAN.ready.clear()
    PLAN.memory_mb = memory_mb
    found: dict[str, list[tuple[int, Member]]] = {}
    for idx, make in enumerate(configs):
        try:
            v, chash = identify(make())
            key = group_key(v)
            if key is not None:
                found.setdefault(key, []).append((idx, Member(chash, v)))
        except (ClipbenchError, Exception):  # noqa: BLE001  (the job itself reports it)
            continue
    out = []
    for key, members in found.items():
        unique = list({m.chash: m for _, m in members}.values())
        if len(unique) < 2:
            continue
        PLAN.groups[key] = unique
        PLAN.group_of.update({m.chash: key for m in unique})
        out.append([idx for idx, _ in members])
    return out


def grouped_result(v, built, chash: str, weights: str) -> tuple[Any, float] | None:
    """This job's (result, seconds) from its group's pass, running the pass if it is the group's first job;
    None when the job is not in a group (it runs alone)."""
    if chash in PLAN.ready:
        result, seconds = PLAN.ready.pop(chash)
        if isinstance(result, Exception):
            raise result
        return result, seconds
    key = PLAN.group_of.pop(chash, None)
    if key is None:
        return None
    others = [m for m in PLAN.groups.get(key, []) if m.chash != chash and PLAN.group_of.get(m.chash) == key
              and not _done(m, weights)]
    methods, members = _methods(others, built.model)
    if not members:
        return None
    from clipbench.registry import resolved
    from clipbench.tasks import TASKS

    evaluate_many = resolved(TASKS.get(v.task.name).evaluate_many)  # imported before the clock starts
    ctx = replace(built.ctx, group_memory_mb=PLAN.memory_mb)
    started = time.perf_counter()
    try:
        results = evaluate_many(built.model, built.dataset, [built.method, *methods], v.task, ctx)
    except Exception:
        for m in members:  # what they share failed: each runs alone and reports its own error
            PLAN.group_of.pop(m.chash, None)
        raise
    seconds = (time.perf_counter() - started) / len(results)  # each config's share of the pass
    for result in results:
        if not isinstance(result, Exception):
            result.extra["grouped_configs"] = len(results)
            result.extra["group_memory_mb"] = PLAN.memory_mb
    for m, result in zip(members, results[1:]):
        PLAN.group_of.pop(m.chash, None)
        PLAN.ready[m.chash] = (result, seconds)
    log.info(f"evaluated {len(results)} configs in one pass")
    if isinstance(results[0], Exception):
        raise results[0]
    return results[0], seconds


def _done(member: Member, weights: str) -> bool:
    """A config that ``resume=true`` will skip: its rows are in its results CSV."""
    from clipbench.results.csv_store import has_results

    run = member.validated.run
    experiment = run.experiment_name or run.experiment or None  # as the runner names it (resume is per experiment)
    return bool(run.resume) and has_results(run.results_csv, member.chash, weights, experiment)


def _methods(members: list[Member], model) -> tuple[list, list[Member]]:
    """The methods of ``members`` built on ``model``; one that does not build is left to its own job."""
    from clipbench.methods import METHODS

    methods, kept = [], []
    for m in members:
        try:
            methods.append(METHODS.get(m.validated.method.name).build(m.validated.method, model))
            kept.append(m)
        except Exception:  # noqa: BLE001  (its own job reports it)
            PLAN.group_of.pop(m.chash, None)
    return methods, kept

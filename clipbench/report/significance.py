"""Which differences in a report are real: paired tests of each run against its baseline.

Runs are comparable when they measured the same metric on the same task, dataset and split; the samples
both kept are paired by id. Which run is the baseline (``choose_baselines``):

* an explicit baseline (``clipbench-report --baseline``, else the experiment's own ``baseline:`` key) names a
  model label, a method or a run id: a model is the baseline of every method setting, a method (e.g. ``clip``)
  that of every model, a run that of every run of its task, dataset and split;
* without one, a model run under several method settings is compared with its plain ``clip`` run (else its
  first run listed); models run under one setting each are compared with the first model listed.

P-values are Holm-corrected across the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clipbench.metrics.uncertainty import OUTCOMES_FILE, Outcome, holm, load_outcomes, paired_pvalue

BASELINE_METHOD = "clip"
ALPHA = 0.05


def find_outcomes(folders: list[Path]) -> tuple[dict[str, dict[str, Outcome]], dict[str, Path]]:
    """run_id -> its per-sample outcomes, and run_id -> its run directory, from every ``outcomes.npz`` under ``folders``."""
    found: dict[str, dict[str, Outcome]] = {}
    dirs: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob(OUTCOMES_FILE)):
            try:
                run_id, outcomes = load_outcomes(path)
            except ValueError as exc:
                print(f"note: {exc}; ignored")
                continue
            found[run_id], dirs[run_id] = outcomes, path.parent
    return found, dirs


BLOCK = ["task", "dataset", "split", "metric"]  # rows measured on the same samples
SETUP = ["method_label", "method_params", "task_params"]  # what a run did besides its model


def _setup(frame: pd.DataFrame) -> pd.Series:
    return frame[SETUP].astype(str).agg("|".join, axis=1)


def _first(rows: pd.DataFrame, matching: pd.Series):
    hits = rows.index[matching.to_numpy()]
    return hits[0] if len(hits) else None


def _or_first(rows: pd.DataFrame, found):
    return rows.index[0] if found is None else found


def _by(rows: pd.DataFrame, keys: pd.Series, pick) -> dict:
    """Row -> the baseline row of its group (rows sharing ``keys``), ``pick(group)`` choosing it."""
    chosen = {}
    for _, group in rows.groupby(keys, sort=False):
        base = pick(group)
        chosen |= {i: base for i in group.index} if base is not None else {}
    return chosen


def _explicit(rows: pd.DataFrame, baseline: str) -> dict:
    models, setups = rows["model"].astype(str), _setup(rows)
    if (models == baseline).any():
        return _by(rows, setups, lambda g: _first(g, g["model"].astype(str) == baseline))
    if (rows["method_label"].astype(str) == baseline).any():
        return _by(rows, models, lambda g: _first(g, g["method_label"].astype(str) == baseline))
    base = _first(rows, _run_matches(rows, baseline))
    return {i: base for i in rows.index} if base is not None else {}


def _default(rows: pd.DataFrame) -> dict:
    models, setups = rows["model"].astype(str), _setup(rows)
    if setups.groupby(models).nunique().max() > 1:  # methods compared on each model
        return _by(rows, models, lambda g: _or_first(g, _first(g, g["method"] == BASELINE_METHOD)))
    if models.nunique() > 1:  # models compared under each method setting
        return _by(rows, setups, lambda g: g.index[0])
    return _by(rows, rows["model_pretrained"].astype(str), lambda g: g.index[0])


def matches_baseline(frame: pd.DataFrame, baseline: str) -> bool:
    """Whether ``baseline`` names a model label, a method or (the start of) a run id of ``frame``."""
    return bool((frame["model"].astype(str) == baseline).any() or (frame["method_label"].astype(str) == baseline).any()
                or _run_matches(frame, baseline).any())


def _run_matches(frame: pd.DataFrame, baseline: str) -> pd.Series:
    """Rows whose run id is ``baseline`` or starts with it (at least 6 characters of it)."""
    run_ids = frame["run_id"].astype(str)
    return (run_ids == baseline) | (run_ids.str.startswith(baseline) & (len(baseline) >= 6))


def choose_baselines(frame: pd.DataFrame, baseline: str | None = None) -> pd.Series:
    """Per row, the index of its baseline row (itself for a baseline; -1 where nothing is compared)."""
    chosen = pd.Series(-1, index=frame.index, dtype=int)
    for _, rows in frame.groupby(BLOCK, dropna=False, sort=False):
        picked = _explicit(rows, baseline) if baseline else _default(rows)
        for i, base in picked.items():
            if sum(b == base for b in picked.values()) > 1:  # a group of one compares nothing
                chosen.at[i] = base
    return chosen


def paired_tests(frame: pd.DataFrame, outcomes: dict[str, dict[str, Outcome]], baseline: str | None = None,
                 resamples: int = 1000) -> pd.DataFrame:
    """``frame`` with ``baseline`` (the row's baseline run_id), ``is_baseline``, ``baseline_label`` (its model and
    method), ``test``, ``p_value``, ``p_holm`` and ``significant``.

    Rows without outcomes on either side, and the baselines themselves, get NaN p-values.
    """
    out = frame.copy()
    bases = choose_baselines(out, baseline)
    out["baseline"], out["baseline_label"], out["test"], out["p_value"] = "", "", "", np.nan
    out["is_baseline"] = bases.to_numpy() == out.index.to_numpy()
    for i, base in bases[bases >= 0].items():
        out.at[i, "baseline"] = out.at[base, "run_id"]
        out.at[i, "baseline_label"] = f"{out.at[base, 'model']} {out.at[base, 'method_label']}"
        if i == base:
            continue
        metric = out.at[i, "metric"]
        base_outcome = outcomes.get(out.at[base, "run_id"], {}).get(metric)
        other = outcomes.get(out.at[i, "run_id"], {}).get(metric)
        if base_outcome is None or other is None:
            continue
        p, test, _ = paired_pvalue(other, base_outcome, resamples)
        out.at[i, "p_value"], out.at[i, "test"] = p, test
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["significant"] = out["p_holm"] < ALPHA
    return out

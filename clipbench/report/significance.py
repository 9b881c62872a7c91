"""Which differences in a report are real: paired tests of each run against its table's baseline.

Runs are comparable when they measured the same metric on the same task, dataset, split and model;
the samples both kept are paired by id. The baseline of such a group is the plain ``clip`` run
when there is one (else the group's first run). P-values are Holm-corrected across the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clipbench.metrics.uncertainty import OUTCOMES_FILE, Outcome, holm, load_outcomes, paired_pvalue

GROUP = ["task", "dataset", "split", "model_arch", "model_pretrained", "metric"]
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


def _baseline(part: pd.DataFrame) -> int:
    plain = part[(part["method"] == BASELINE_METHOD)]
    return (plain if len(plain) else part).index[0]


def paired_tests(frame: pd.DataFrame, outcomes: dict[str, dict[str, Outcome]], resamples: int = 1000) -> pd.DataFrame:
    """``frame`` with ``baseline`` (the row's own baseline run_id), ``test``, ``p_value``, ``p_holm`` and ``significant``.

    Rows without outcomes on either side, and the baselines themselves, get NaN p-values.
    """
    out = frame.copy()
    out["baseline"], out["test"], out["p_value"] = "", "", np.nan
    for _, part in out.groupby(GROUP, dropna=False, sort=False):
        if len(part) < 2:
            continue
        base = _baseline(part)
        base_run, metric = out.at[base, "run_id"], out.at[base, "metric"]
        out.loc[part.index, "baseline"] = base_run
        base_outcome = outcomes.get(base_run, {}).get(metric)
        for i in part.index.drop(base):
            other = outcomes.get(out.at[i, "run_id"], {}).get(metric)
            if base_outcome is None or other is None:
                continue
            p, test, _ = paired_pvalue(other, base_outcome, resamples)
            out.at[i, "p_value"], out.at[i, "test"] = p, test
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["significant"] = out["p_holm"] < ALPHA
    return out

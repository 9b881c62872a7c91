"""Which settings tell a sweep's runs apart: per row, the ``key=value`` pairs of its JSON params that differ
between runs (the terminal summary and ``clipbench-report`` both label rows with them)."""

from __future__ import annotations

import json

import pandas as pd


def settings_labels(params: pd.Series) -> pd.Series:
    """Per row, ``key=value`` for the JSON params that differ between the rows (the rest says nothing)."""
    parsed = [json.loads(p) if isinstance(p, str) and p else {} for p in params]
    keys = sorted({k for p in parsed for k in p})
    varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in parsed}) > 1]
    return pd.Series(
        [", ".join(f"{k}={_compact(p[k])}" for k in varying if k in p) for p in parsed], index=params.index, dtype=object
    )


def differing_settings(frame: pd.DataFrame, method_column: str = "method") -> pd.Series:
    """Per row: the method settings that differ between runs of its method, then the task and dataset
    settings that differ between runs of its task (``alpha=0.4, layers=[-1], split=testB``)."""
    parts = []
    for keys, column in ((["task", method_column], "method_params"), (["task"], "task_params"), (["task"], "dataset_params")):
        labels = pd.Series("", index=frame.index, dtype=object)
        if column in frame:
            for _, part in frame.groupby(keys, sort=False):
                labels.loc[part.index] = settings_labels(part[column].fillna("").astype(str))
        parts.append(labels)
    joined = parts[0].str.cat(parts[1:], sep=", ")
    return joined.str.replace(r"(, )+", ", ", regex=True).str.strip(", ")


def _compact(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ""))

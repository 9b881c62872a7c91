"""Which settings tell a sweep's runs apart: per row, the ``key=value`` pairs of its JSON params that differ
between runs (the terminal summary, the Optuna trial lines, ``clipbench-report``'s tables and plot legends all
label rows with them).

Values are shown short: numbers rounded to 3 significant digits (more where rounding would make two
different settings read alike), and a value longer than ``LONG_VALUE`` characters (e.g. FALIP's per-head
scales) summarised as ``<12 values 0.0047..0.99, mean 0.52, #3fa2c1>``, the digest telling such values apart;
the full values stay in the CSV's ``method_params`` and the run's ``config.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pandas as pd

LONG_VALUE = 48  # characters of one shown value before it is summarised
DIGITS = (3, 4, 6, 17)  # significant digits tried in turn until distinct settings read differently


def compact(value, digits: int = 3) -> str:
    """``value`` as a short string: floats to ``digits`` significant digits, lists and dicts without quotes
    or spaces (``{b1:{h0:0.892}}``), a long one summarised (see the module doc)."""
    text = _brief(value, digits)
    if len(text) <= LONG_VALUE:
        return text
    numbers = _numbers(value)
    digest = hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
    if not numbers:
        return f"{text[:LONG_VALUE - 12]}...#{digest}"
    low, high, mean = min(numbers), max(numbers), sum(numbers) / len(numbers)
    return f"<{len(numbers)} values {low:.2g}..{high:.2g}, mean {mean:.2g}, #{digest}>"


def _brief(value, digits: int) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_brief(v, digits) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_brief(v, digits)}" for k, v in value.items()) + "}"
    return str(value)


def _numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [number for item in items for number in _numbers(item)]


def _exact(value) -> str:
    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


def varying_labels(records: Sequence[dict], keys: Sequence[str] | None = None) -> list[str]:
    """Per record, ``key=value`` for the keys (in ``keys`` order, default first seen) whose values differ
    between the records, shown :func:`compact` with the fewest digits that keep different settings apart."""
    keys = list(dict.fromkeys(k for r in records for k in r)) if keys is None else list(keys)
    varying = [k for k in keys if len({_exact(r.get(k)) for r in records}) > 1]
    exact = {tuple(_exact(r.get(k)) for k in varying) for r in records}
    for digits in DIGITS:
        labels = [", ".join(f"{k}={compact(r[k], digits)}" for k in varying if k in r) for r in records]
        if len(set(labels)) == len(exact):
            break
    return labels


def settings_labels(params: pd.Series) -> pd.Series:
    """Per row, ``key=value`` for the JSON params that differ between the rows (the rest says nothing)."""
    parsed = [json.loads(p) if isinstance(p, str) and p else {} for p in params]
    return pd.Series(varying_labels(parsed, sorted({k for p in parsed for k in p})), index=params.index, dtype=object)


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

"""A readable results table for the terminal."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from tabulate import tabulate


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """``rows`` as a boxed grid under ``columns`` (tabulate's ``pretty`` layout): headers and text left-aligned,
    numbers right-aligned (also a number in a column of text, e.g. the ``skipped`` count under intervals),
    floats with 4 decimals (1 from 1000 on), NaN and None blank."""
    body = [[_cell(row.get(c)) for c in columns] for row in rows]
    aligns = []
    for i, header in enumerate(columns):
        cells = [line[i] for line in body]
        if all(_numeric(v) for v in cells if v):
            aligns.append("right")
            continue
        aligns.append("left")  # tabulate aligns whole columns: a number among text is right-aligned here
        width = max(map(len, [header, *cells]))
        for line in body:
            line[i] = line[i].rjust(width) if _numeric(line[i]) else line[i]
    return tabulate(body, headers=list(columns), tablefmt="pretty", colalign=aligns, headersglobalalign="left",
                    disable_numparse=True, preserve_whitespace=True)


def _cell(v) -> str:
    if isinstance(v, float) and v != v:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return "" if v is None else str(v)


UNDEFINED = "undefined"  # how a NaN metric reads: undefined on this data (e.g. a correlation with a constant variable)


def with_intervals(rows: Sequence[dict]) -> list[dict]:
    """Rows whose ``value`` reads ``value [ci_low, ci_high]`` where the interval is known."""
    out = []
    for row in rows:
        low, high = row.get("ci_low"), row.get("ci_high")
        if not _known(row.get("value")):
            row = {**row, "value": UNDEFINED}
        elif _known(low) and _known(high):
            row = {**row, "value": f"{float(row['value']):.4f} [{float(low):.4f}, {float(high):.4f}]"}
        out.append(row)
    return out


def _known(v) -> bool:
    try:
        return v is not None and v == v and float(v) == float(v)
    except (TypeError, ValueError):
        return False


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def method_config_name(method_params) -> str:
    """The ``method=`` config a row was run with (``config`` in its method_params); '' for older rows."""
    try:
        params = json.loads(method_params) if isinstance(method_params, str) and method_params else {}
    except json.JSONDecodeError:
        return ""
    return str(params.get("config") or "") if isinstance(params, dict) else ""


def method_labels(frame):
    """Per row: the method's config name (``falip_subtract``), else its registry name."""
    names = frame["method_params"].map(method_config_name) if "method_params" in frame else frame["method"].astype(str)
    return names.where(names != "", frame["method"].astype(str))


# Sample counts written as metric rows (value = the count): shown only when not 0, never as a headline score.
COUNT_METRICS = ("skipped", "tied")

_TOPK = re.compile(r"(?P<prefix>.*?)top(?P<k>\d+)")
_PER_CLASS = re.compile(r"(?P<prefix>.*?)mean_per_class_recall")
_RECALL_AT = re.compile(r"(?P<prefix>.*?)recall@(?P<k>\d+)")


def metric_sort_key(metric: str) -> tuple:
    """The natural order of metrics, used by every summary, table and plot: top1, top5, mean per-class recall
    (each prefix, e.g. ``lp_``, after the plain ones); then recall@1, @5, @10 (``image_retrieval_`` before
    ``text_retrieval_``); then the rest alphabetically; the counts (``skipped``, ``tied``) last."""
    metric = str(metric)
    if metric in COUNT_METRICS:
        return (3, COUNT_METRICS.index(metric), "", 0)
    for rank, (pattern, within) in enumerate(((_TOPK, 0), (_PER_CLASS, 1), (_RECALL_AT, 0))):
        match = pattern.fullmatch(metric)
        if match:
            return (0 if rank < 2 else 1, match["prefix"], within, int(match.groupdict().get("k") or 0))
    return (2, metric, 0, 0)


def in_natural_order(metrics) -> list[str]:
    """The distinct ``metrics`` sorted by ``metric_sort_key``."""
    return sorted(dict.fromkeys(metrics), key=metric_sort_key)


def sweep_summary(frame) -> str:
    """One compact row per run and one table per task: the metrics as columns (``value [ci_low, ci_high]``),
    the method's config name, the settings that differ between the sweep's runs, each count (``skipped``,
    ``tied``) only when not 0."""
    import pandas as pd

    from clipbench.results.settings import differing_settings

    frame = frame.copy()
    for col in ("ci_low", "ci_high"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else float("nan")
    frame["method"] = method_labels(frame)
    frame["cell"] = [
        f"{v:.4f} [{lo:.4f}, {hi:.4f}]" if lo == lo and hi == hi else f"{v:.4f}"
        for v, lo, hi in zip(frame["value"].astype(float), frame["ci_low"], frame["ci_high"])
    ]
    blocks = []
    for task, part in frame.groupby("task", sort=False):
        runs = part.drop_duplicates("run_id")
        settings = differing_settings(runs)
        metrics = [m for m in in_natural_order(part["metric"]) if m not in COUNT_METRICS]
        counts = {c: part[part["metric"] == c].set_index("run_id")["value"].astype(float) for c in COUNT_METRICS}
        rows = []
        for run in runs.itertuples():
            cells = part[part["run_id"] == run.run_id].set_index("metric")["cell"]
            row = {"dataset": run.dataset, "model": run.model_arch, "method": run.method, "settings": settings[run.Index]}
            row |= {m: cells.get(m, "") for m in metrics}
            row |= {c: f"{int(v.get(run.run_id, 0))}" for c, v in counts.items() if (v > 0).any()}
            rows.append(row)
        columns = [c for c in rows[0] if c != "settings" or any(r["settings"] for r in rows)]
        blocks.append(f"{task}:\n" + format_table(rows, columns))
    return "\n".join(blocks)


SUMMARY_COLUMNS = ["task", "dataset", "split", "model_arch", "method", "metric", "value", "n", "items_per_s", "peak_mem_mb"]

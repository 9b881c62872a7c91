"""Markdown and LaTeX renderings of a DataFrame, by pandas' own writers, and readable cells."""

from __future__ import annotations

import math
import re

import pandas as pd

from clipbench.models.weights import model_label
from clipbench.results.table import UNDEFINED

FRACTION_METRIC = re.compile(r"^(lp_)?(top\d+|accuracy|mean_per_class_recall)(_|$)|recall@\d+|(^|_)accuracy_")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def is_fraction(metric: str) -> bool:
    """Accuracies and recalls are fractions (shown as percentages); correlations, scores and counts are not."""
    return bool(FRACTION_METRIC.search(metric))


def format_value(metric: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.1f}" if is_fraction(metric) else f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def format_with_interval(metric: str, value: float, low: float, high: float) -> str:
    """``44.2 [43.5, 44.9]`` (percent for fractions); the bare value when the interval is unknown."""
    if isinstance(value, float) and math.isnan(value):
        return UNDEFINED  # a reproduced number that is NaN: the metric is undefined on this data
    text = format_value(metric, value)
    if text and not (pd.isna(low) or pd.isna(high)):
        text += f" [{format_value(metric, low)}, {format_value(metric, high)}]"
    return text


def model_labels(frame: pd.DataFrame) -> pd.Series:
    """``model_label`` of every results row (rows from before ``model_source`` are open_clip)."""
    sources = frame["model_source"].fillna("") if "model_source" in frame else [""] * len(frame)
    labels = [model_label(a, p, s or "open_clip") for a, p, s in zip(frame["model_arch"], frame["model_pretrained"], sources)]
    return pd.Series(labels, index=frame.index, dtype=object)


def distinct_settings(table: pd.DataFrame, settings: pd.Series, column: pd.Series) -> pd.Series:
    """``settings``, plus ``config <hash>`` where rows of different configurations (another seed or limit, two
    checkpoints of one file name) would otherwise share a row and cell of the layout: both are shown."""
    keys = table[["task", "model", "method_label"]].assign(settings=settings, column=column)
    shared = keys.assign(config=table["config_hash"]).groupby(list(keys.columns))["config"].transform("nunique") > 1
    tag = "config " + table["config_hash"].astype(str).str[:8]
    return settings.where(~shared, (settings + ", " + tag).str.strip(", "))


def to_markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, disable_numparse=True) + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(frame: pd.DataFrame, caption: str = "") -> str:
    """A booktabs table (``\\usepackage{booktabs}``), every cell and header escaped."""
    styler = frame.style.hide(axis="index").format(escape="latex", na_rep="").format_index(escape="latex", axis=1)
    body = styler.to_latex(hrules=True, caption=latex_escape(caption) if caption else None, position="t",
                           column_format="l" * frame.shape[1], environment="table")
    return "% needs \\usepackage{booktabs}\n" + body

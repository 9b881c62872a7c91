"""Markdown and LaTeX renderings of a DataFrame, by pandas' own writers, and readable cells."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

FRACTION_METRIC = re.compile(r"^(top\d+|accuracy|mean_per_class_recall)(_|$)|recall@\d+|(^|_)accuracy_")
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
    text = format_value(metric, value)
    if text and not (pd.isna(low) or pd.isna(high)):
        text += f" [{format_value(metric, low)}, {format_value(metric, high)}]"
    return text


def model_label(arch: str, pretrained: str) -> str:
    """``ViT-B-16 openai``; a checkpoint by its file name; ``(random init)`` without weights."""
    pretrained = "" if pd.isna(pretrained) else str(pretrained)
    if not pretrained:
        return f"{arch} (random init)"
    if re.search(r"[/\\]", pretrained) or Path(pretrained).suffix in (".pt", ".bin", ".safetensors", ".pth"):
        return f"{arch} {Path(pretrained).name}"
    return f"{arch} {pretrained}"


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
    for keys, column in (([ "task", method_column], "method_params"), (["task"], "task_params"), (["task"], "dataset_params")):
        labels = pd.Series("", index=frame.index, dtype=object)
        if column in frame:
            for _, part in frame.groupby(keys, sort=False):
                labels.loc[part.index] = settings_labels(part[column].fillna("").astype(str))
        parts.append(labels)
    joined = parts[0].str.cat(parts[1:], sep=", ")
    return joined.str.replace(r"(, )+", ", ", regex=True).str.strip(", ")


def _compact(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ""))


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

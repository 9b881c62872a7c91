"""Model-variant tables: for the clip_benchmark suite one row per (arch, pretrained tag), one column per
dataset, an average column, and reproduced beside open_clip's reported number; for any other experiment
with several models the same table of its headline metric (``write_model_comparison``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from clipbench.report.reported import UNIT_TO_FRACTION
from clipbench.report.tables import distinct_settings, is_fraction, model_labels, to_latex, to_markdown
from clipbench.results.settings import differing_settings
from clipbench.results.table import COUNT_METRICS, in_natural_order

SUITE_METRICS = {"zeroshot": "top1", "retrieval": "image_retrieval_recall@1"}
MULTILABEL_METRIC = "mean_average_precision"


def suite_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Headline rows of catalogue runs, with the dataset's clip_benchmark name (``wds/`` dropped)."""
    params = results.get("dataset_params", pd.Series("", index=results.index)).fillna("").astype(str)
    catalogue = params.map(lambda p: _catalogue(p) == "clip_benchmark")
    rows = results[catalogue].copy()
    headline = rows["metric"].eq(rows["task"].map(SUITE_METRICS)) | rows["metric"].eq(MULTILABEL_METRIC)
    rows = rows[headline].copy()
    rows["benchmark"] = rows["dataset"].str.removeprefix("wds/")
    return rows


def _catalogue(params: str) -> str | None:
    try:
        return json.loads(params).get("catalogue") if params else None
    except (ValueError, AttributeError):
        return None


def with_reported(rows: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """Each row with the reported value for the same arch, pretrained tag, dataset and metric."""
    rep = reported[reported["setting"].str.startswith("pretrained=")].copy()
    rep["model_pretrained"] = rep["setting"].str.removeprefix("pretrained=")
    rep["reported"] = rep["value"] * rep["unit"].map(UNIT_TO_FRACTION)
    rep = rep.rename(columns={"model": "model_arch", "dataset": "benchmark"})
    rep = rep.drop_duplicates(["model_arch", "model_pretrained", "benchmark", "metric"])
    keys = ["model_arch", "model_pretrained", "benchmark", "metric"]
    rows = rows.assign(model_pretrained=rows["model_pretrained"].fillna("").astype(str))
    return rows.merge(rep[keys + ["reported"]], on=keys, how="left")


def variants_table(merged: pd.DataFrame, scale: float = 100) -> pd.DataFrame:
    """Models as rows, datasets as columns (reproduced x100, reported in brackets), and the averages."""
    merged = merged.assign(model=model_labels(merged))
    if "method_label" not in merged:  # a catalogue run's method, with its region when not the full image
        merged = merged.assign(method_label=merged["method"] + merged["method_params"].fillna("").map(_method_suffix))
    merged = merged.assign(method=merged["method_label"])
    repro = merged.pivot_table(index=["model", "method"], columns="benchmark", values="value", aggfunc="last") * scale
    rep = merged.pivot_table(index=["model", "method"], columns="benchmark", values="reported", aggfunc="last") * scale
    table = pd.DataFrame(index=repro.index)
    for col in repro.columns:
        table[col] = [_cell(a, rep.at[i, col] if col in rep.columns and i in rep.index else None) for i, a in zip(repro.index, repro[col])]
    table["average"] = repro.mean(axis=1).map(_two_places)
    both = rep.reindex_like(repro).notna() & repro.notna()
    table["average (reported datasets)"] = repro.where(both).mean(axis=1).map(_two_places)
    table["reported average"] = rep.reindex_like(repro).where(both).mean(axis=1).map(_two_places)
    return table.reset_index()


def _two_places(value: float) -> str:
    return "" if value != value else f"{value:.2f}"


def _method_suffix(params: str) -> str:
    try:
        region = json.loads(params).get("region", "full") if params else "full"
    except ValueError:
        region = "full"
    return "" if region == "full" else f" ({region})"


def _cell(value: float, reported: float | None) -> str:
    if value != value:
        return ""
    return f"{value:.2f}" if reported is None or reported != reported else f"{value:.2f} ({reported:.2f})"


def reproduced_vs_reported_plot(merged: pd.DataFrame, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = merged.dropna(subset=["reported"])
    if pairs.empty:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    for model, part in pairs.groupby(model_labels(pairs)):
        ax.scatter(part["reported"] * 100, part["value"] * 100, label=model, s=18)
    ax.plot([0, 100], [0, 100], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("reported by open_clip (x100)")
    ax.set_ylabel("reproduced (x100)")
    ax.set_title("reproduced vs reported, per dataset")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_suite_report(results: pd.DataFrame, reported: pd.DataFrame, out_dir: Path, experiment: str,
                       folder: str) -> list[str]:
    """Writes ``variants.md``/``.tex`` and the scatter plot into out_dir (the index's ``folder``); returns index
    lines ([] when the experiment ran no catalogue dataset)."""
    rows = suite_rows(results)
    if rows.empty:
        return []
    merged = with_reported(rows, reported)
    table = variants_table(merged)
    note = "Reproduced x100; open_clip's reported value in brackets where it publishes one."
    (out_dir / "variants.md").write_text(f"# {experiment}: models x datasets\n\n{note}\n\n" + to_markdown(table))
    (out_dir / "variants.tex").write_text(to_latex(table, f"{experiment}: reproduced (reported) x100"))
    lines = [f"* [models x datasets]({folder}/variants.md) ([LaTeX]({folder}/variants.tex))"]
    plot = reproduced_vs_reported_plot(merged, out_dir / "reproduced_vs_reported.png")
    if plot is not None:
        lines.append(f"* ![reproduced vs reported]({folder}/{plot.name})")
    return lines


def write_model_comparison(tested: pd.DataFrame, out_dir: Path, experiment: str, folder: str) -> list[str]:
    """For an experiment with several models: ``variants.md``/``.tex``, per task its headline metric (the first in
    natural order) with models as rows, datasets as columns and their average; [] for one model."""
    rows = tested[~tested["metric"].isin(COUNT_METRICS)]
    if rows["model"].nunique() < 2:
        return []
    sections, latex = [], []
    for task, part in rows.groupby("task", sort=True):
        metric = in_natural_order(part["metric"])[0]
        part = part[part["metric"] == metric]
        split = part["split"].astype(str)
        benchmark = part["dataset"] + (" " + split if split.nunique() > 1 else "")
        settings = differing_settings(part.assign(dataset_params=""), "method_label")
        label = (part["method_label"] + (" (" + settings + ")").where(settings != "", ""))
        tag = distinct_settings(part, pd.Series("", index=part.index), pd.Series(benchmark, index=part.index))
        method = label + (" (" + tag + ")").where(tag != "", "")
        part = part.assign(benchmark=benchmark, method_label=method, reported=float("nan"))
        scale = 100 if is_fraction(metric) else 1
        table = variants_table(part, scale).drop(columns=["average (reported datasets)", "reported average"])
        baselines = part.loc[part["is_baseline"].astype(bool), "model"].unique() if "is_baseline" in part else []
        unit = " (x100)" if scale == 100 else ""
        note = f"{metric}{unit}; baseline of the paired tests: {', '.join(baselines) or 'none'}."
        sections.append(f"## {task}\n\n{note}\n\n" + to_markdown(table))
        latex.append(to_latex(table, f"{experiment}: {task}, {metric}{unit}"))
    (out_dir / "variants.md").write_text(f"# {experiment}: models x datasets\n\n" + "\n".join(sections))
    (out_dir / "variants.tex").write_text("\n".join(latex))
    return [f"* [models x datasets]({folder}/variants.md) ([LaTeX]({folder}/variants.tex))"]

"""Plots (PNG), each of one metric with its 95% intervals: alpha curves, a layer x head heatmap, per-model
and per-method bars.

Every figure uses ``constrained_layout``; y axes name the metric (percent for fractions).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from clipbench.report.tables import distinct_settings, is_fraction  # noqa: E402
from clipbench.results.settings import varying_labels  # noqa: E402
from clipbench.results.table import in_natural_order  # noqa: E402

# each task's headline metrics, the first one present a panel's (Winoground's group score before its text score)
HEADLINE = ("top1", "lp_top1", "accuracy", "accuracy_mean", "kendall_tau_c", "kendall_tau_b", "image_retrieval_recall@5",
            "text_retrieval_recall@5", "group_score", "text_score")
DPI = 130


def _headline(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["metric"].isin(HEADLINE)]


def _params(frame: pd.DataFrame) -> pd.DataFrame:
    parsed = [json.loads(p) if p else {} for p in frame["method_params"]]
    return pd.DataFrame(parsed, index=frame.index)


def _scale(metric: str) -> float:
    return 100.0 if is_fraction(metric) else 1.0


def _axis_label(metric: str) -> str:
    return f"{metric} (%)" if is_fraction(metric) else metric


def _errors(part: pd.DataFrame, scale: float) -> np.ndarray | None:
    low, high = part["ci_low"].astype(float), part["ci_high"].astype(float)
    if low.isna().all():
        return None
    value = part["value"].astype(float)
    return np.nan_to_num(np.vstack([(value - low).clip(lower=0), (high - value).clip(lower=0)])) * scale


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", text).strip("_")


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _is_geometric(values: np.ndarray) -> bool:
    values = np.sort(np.unique(values))
    if len(values) < 3 or (values <= 0).any():
        return False
    ratios = values[1:] / values[:-1]
    return bool(np.allclose(ratios, ratios[0], rtol=0.05) and ratios[0] > 1.5)


def _hashable(v) -> str:
    return json.dumps(v, sort_keys=True) if not isinstance(v, str) else v


def _varying_label(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Per row, the values of ``columns`` that differ between the rows, short (``layers=[-1], alpha=0.571``)."""
    records = [{c: v for c, v in row.items() if _given(v)} for row in frame[columns].to_dict("records")]
    return pd.Series(varying_labels(records, columns), index=frame.index)


def _given(value) -> bool:
    return not (isinstance(value, float) and value != value) and value is not None


LEGEND_ENTRIES = 12  # curves named in a legend; more are drawn and counted in one last entry


def _legend(ax) -> None:
    """The legend beside the axes (never over the points), at most ``LEGEND_ENTRIES`` curves named."""
    handles, labels = ax.get_legend_handles_labels()
    hidden = len(handles) - LEGEND_ENTRIES
    if hidden > 0:
        handles, labels = handles[:LEGEND_ENTRIES] + [plt.Line2D([], [], linestyle="none")], labels[:LEGEND_ENTRIES] + [f"... {hidden} more"]
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)


def alpha_curves(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Per metric: the metric against alpha, one line per other setting that varies (never averaged);
    a plain ``clip`` run of the same data is drawn as a dashed reference with its interval as a band."""
    rows = _headline(frame)
    params = _params(rows)
    if "alpha" not in params or params["alpha"].dropna().nunique() < 2:
        return []
    swept = rows[params["alpha"].notna()]
    params = params.loc[swept.index]
    swept = swept.assign(alpha=params["alpha"].astype(float))
    context = swept[["dataset", "split", "model", "method_label"]].join(params.drop(columns="alpha"))
    swept = swept.assign(setting=_varying_label(context, list(context.columns)))
    paths = []
    metrics = in_natural_order(swept["metric"])
    for metric in metrics:
        part_m = swept[swept["metric"] == metric]
        scale = _scale(metric)
        fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
        for setting, part in part_m.groupby("setting", sort=True):
            part = part.sort_values("alpha")
            ax.errorbar(part["alpha"], part["value"] * scale, yerr=_errors(part, scale), marker="o", capsize=3,
                        label=setting or "FALIP")
        same_data = rows["dataset"].isin(part_m["dataset"]) & rows["split"].isin(part_m["split"])
        plain = rows[(rows["method"] == "clip") & (rows["metric"] == metric) & same_data & rows["model"].isin(part_m["model"])]
        for _, base in plain.iterrows():
            ax.axhline(base["value"] * scale, color="grey", linestyle="--", label="clip (no FALIP)")
            if pd.notna(base["ci_low"]):
                ax.axhspan(base["ci_low"] * scale, base["ci_high"] * scale, color="grey", alpha=0.15)
        if _is_geometric(part_m["alpha"].to_numpy()):
            ax.set_xscale("log")
            ticks = np.sort(part_m["alpha"].unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("FALIP alpha")
        ax.set_ylabel(_axis_label(metric))
        where = ", ".join(sorted({f"{d} {s}".strip() for d, s in zip(part_m["dataset"], part_m["split"])}))
        ax.set_title(f"{metric} on {where} against FALIP alpha\n(bars and band: 95% interval)", fontsize=10)
        ax.grid(alpha=0.3)
        _legend(ax)
        name = "alpha_curves.png" if len(metrics) == 1 else f"alpha_curves_{_slug(metric)}.png"
        paths.append(_save(fig, out / name))
    return paths


def _single(v):
    """A layer or head given as an int or a one-element list."""
    while isinstance(v, list) and len(v) == 1:
        v = v[0]
    return v if isinstance(v, (int, np.integer)) else None


def _baselines(part: pd.DataFrame) -> str:
    """The model and method the tested rows of ``part`` were compared with (``baseline_label``)."""
    labels = part.loc[part["p_value"].notna(), "baseline_label"] if "baseline_label" in part else pd.Series(dtype=object)
    names = sorted({str(v) for v in labels if v})
    return " / ".join(names) if names else "baseline"


def layer_head_heatmap(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Per metric: the value with the mask on one (layer, head); cells not significantly different
    from the no-FALIP baseline (after Holm) are grey."""
    rows = _headline(frame)
    params = _params(rows)
    if "layers" not in params or "heads" not in params:
        return []
    rows = rows.assign(layer=params["layers"].map(_single), head=params["heads"].map(_single)).dropna(subset=["layer", "head"])
    if rows.empty or rows["layer"].nunique() * rows["head"].nunique() < 2:
        return []
    paths = []
    metrics = in_natural_order(rows["metric"])
    for metric in metrics:
        part = rows[rows["metric"] == metric]
        scale = _scale(metric)
        grid = part.pivot_table(index="layer", columns="head", values="value", aggfunc="last") * scale
        tested = "significant" in part and part["p_value"].notna().any()
        significant = (part.assign(sig=part["significant"].fillna(False).astype(float))
                       .pivot_table(index="layer", columns="head", values="sig", aggfunc="last")
                       .reindex_like(grid).fillna(0).astype(bool)) if tested else None
        shown = np.ma.masked_where(~significant.to_numpy(), grid.to_numpy()) if tested else np.ma.masked_invalid(grid.to_numpy())
        cmap = plt.get_cmap("viridis").with_extremes(bad="#d0d0d0")
        fig, ax = plt.subplots(figsize=(max(5.5, 1.6 + 0.55 * grid.shape[1]), max(3.5, 1.4 + 0.45 * grid.shape[0])),
                               layout="constrained")
        im = ax.imshow(shown, cmap=cmap, aspect="auto", vmin=np.nanmin(grid.to_numpy()), vmax=np.nanmax(grid.to_numpy()))
        for (r, c), v in np.ndenumerate(grid.to_numpy()):
            if v == v:
                ax.text(c, r, f"{v:.1f}" if scale > 1 else f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if (tested and not significant.iat[r, c]) else "white")
        ax.set_xticks(range(grid.shape[1]), [str(int(c)) for c in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [str(int(i)) for i in grid.index])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        grey = f"grey: not significant vs {_baselines(part)} (Holm, 5%)" if tested else "no baseline run: significance not tested"
        ax.set_title(f"{metric}, mask on one (layer, head)\n{grey}", fontsize=10)
        fig.colorbar(im, ax=ax, label=_axis_label(metric))
        name = "layer_head_heatmap.png" if len(metrics) == 1 else f"layer_head_heatmap_{_slug(metric)}.png"
        paths.append(_save(fig, out / name))
    return paths


def _bar_panels(rows: pd.DataFrame, panel_keys: list[str], bar_key: str, title: str, path: Path) -> Path | None:
    panels = list(rows.groupby(panel_keys, sort=True))
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.8 * nrows), layout="constrained", squeeze=False)
    for ax, (key, part) in zip(axes.flat, panels):
        metric = part["metric"].iloc[0]
        scale = _scale(metric)
        part = part.drop_duplicates(bar_key, keep="last")
        x = np.arange(len(part))
        heights, errors = (part["value"] * scale).to_numpy(), _errors(part, scale)
        ax.bar(x, heights, yerr=errors, capsize=4, color="#4c72b0")
        tops = heights + (errors[1] if errors is not None else 0)
        for xi, (top, sig) in enumerate(zip(tops, part.get("significant", pd.Series(False, index=part.index)))):
            if pd.notna(sig) and bool(sig):
                ax.annotate("*", (xi, top), ha="center", va="bottom", fontsize=13, xytext=(0, 1), textcoords="offset points")
        if np.isfinite(tops).any() and np.nanmax(tops) > 0:
            ax.set_ylim(top=np.nanmax(tops) * 1.12)
        ax.set_xticks(x, part[bar_key], rotation=30, ha="right")
        ax.set_ylabel(_axis_label(metric))
        ax.set_title(" ".join(str(k) for k in key if k and k != metric) + f"\n{metric}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _one_headline_per_panel(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per (task, dataset, ...) only its first headline metric, so each panel shows one metric."""
    rank = rows["metric"].map({m: i for i, m in enumerate(HEADLINE)})
    best = rows.assign(rank=rank).groupby(keys)["rank"].transform("min")
    return rows[rank == best]


def model_bars(frame: pd.DataFrame, out: Path) -> Path | None:
    """Per task/dataset/split/method panel: one bar per model, with intervals."""
    rows = _headline(frame)
    if rows["model"].nunique() < 2:
        return None
    keys = ["task", "dataset", "split", "method_label"]
    rows = _one_headline_per_panel(rows, keys)
    tag = distinct_settings(rows, pd.Series("", index=rows.index), rows["dataset"] + rows["split"].astype(str))
    base = rows["is_baseline"].fillna(False).astype(bool) if "is_baseline" in rows else pd.Series(False, index=rows.index)
    rows = rows.assign(bar=rows["model"] + (" (" + tag + ")").where(tag != "", "") + np.where(base, "\n(baseline)", ""))
    return _bar_panels(rows, keys + ["metric"], "bar", "per model (bars: 95% interval; *: significant vs baseline)",
                       out / "per_model.png")


def method_bars(frame: pd.DataFrame, out: Path) -> Path | None:
    """Per task/dataset/split/model panel: one bar per method, with intervals (e.g. toy_default)."""
    rows = _headline(frame)
    keys = ["task", "dataset", "split", "model"]
    params = _params(rows)
    swept = any(c in params and params[c].dropna().map(_hashable).nunique() > 1 for c in ("alpha", "layers", "heads"))
    if rows.empty or rows["model"].nunique() > 1 or rows.groupby(keys)["method_label"].nunique().max() < 2 or swept:
        return None  # sweeps over models or alpha have their own plots
    rows = _one_headline_per_panel(rows, keys)
    return _bar_panels(rows, keys + ["metric"], "method_label",
                       "per task: methods (bars: 95% interval; *: significant vs clip)", out / "per_task_methods.png")


def all_plots(frame: pd.DataFrame, out: Path) -> list[Path]:
    paths = alpha_curves(frame, out) + layer_head_heatmap(frame, out)
    return paths + [p for p in (model_bars(frame, out), method_bars(frame, out)) if p]

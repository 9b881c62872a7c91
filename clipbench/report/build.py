"""``clipbench-report``: per-experiment tables (reported vs reproduced, with intervals and paired tests) and plots, plus an index.

    clipbench-report [--results results/results.csv] [--out results] [--runs outputs multirun] [--wandb]
                     [--baseline LABEL]

The intervals come from the results CSV (``ci_low``, ``ci_high``); the paired tests need each run's
per-sample ``outcomes.npz``, found under ``--runs``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import pandas as pd

from clipbench.errors import ClipbenchError, ConfigError, DataError
from clipbench.report.reported import UNIT_TO_FRACTION, load_reported
from clipbench.report.significance import ALPHA, find_outcomes, matches_baseline, paired_tests
from clipbench.report.tables import (
    distinct_settings,
    format_value,
    format_with_interval,
    model_labels,
    to_latex,
    to_markdown,
)
from clipbench.results.csv_store import parse_numeric, read_results
from clipbench.results.settings import differing_settings
from clipbench.results.table import COUNT_METRICS, in_natural_order, method_labels

KEYS = ["task", "dataset", "split", "model_arch", "method", "metric"]
NOT_HEADLINE = set(COUNT_METRICS)
SIGNIFICANCE_NOTE = (
    f"`*`: differs from the row named in `compared with` (the baseline of its task, dataset, split and metric) at "
    f"{ALPHA:.0%} after Holm's correction over the table (McNemar's exact test on per-sample hits, a paired bootstrap "
    "otherwise); how the baseline is chosen: docs/model_comparisons.md. "
    "Fractions are in percent; brackets hold the 95% bootstrap interval."
)
LATEST = ["experiment", "config_hash", "metric"]  # the report shows the latest run of each within an experiment


def load_results(path: Path) -> pd.DataFrame:
    """The rows the report shows: per experiment, the latest run of each configuration (``superseded`` lists the rest)."""
    return latest_runs(read_all(path))


def latest_runs(frame: pd.DataFrame) -> pd.DataFrame:
    # a config run under two experiment names belongs to both
    return frame.sort_values("timestamp", kind="stable").drop_duplicates(LATEST, keep="last")


def read_all(path: Path) -> pd.DataFrame:
    """Every row of the results CSV, with the report's labels."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; run an experiment first (e.g. make run)")
    text = read_results(path, numeric=False)
    # a metric written as nan (undefined, e.g. a rank correlation with constant ratings) keeps its row
    undefined = text["value"].str.lower() == "nan"
    frame = parse_numeric(text)
    frame = frame[frame["value"].notna() | undefined].copy()
    if frame.empty:
        raise DataError(f"{path} holds no results yet; run an experiment first (e.g. make run)")
    frame["value"] = frame["value"].astype(float)
    for col in ("ci_low", "ci_high"):
        if col not in frame:
            frame[col] = float("nan")
    for col in ("run_id", "experiment", "split", "model_pretrained", "method_params", "task_params"):
        frame[col] = frame[col].astype(object).fillna("").astype(str) if col in frame else ""
    frame["experiment"] = frame["experiment"].replace("", "adhoc")
    frame["method_label"] = method_labels(frame)
    frame["model"] = model_labels(frame)
    return frame


def superseded(frame: pd.DataFrame) -> list[str]:
    """For the rows of one experiment: one line per configuration that was run more than once: which run the report kept
    (the latest) and which it left out (earlier runs of the same config_hash, i.e. reruns)."""
    runs = frame.sort_values("timestamp", kind="stable").drop_duplicates(["config_hash", "run_id"])
    lines = []
    for chash, part in runs.groupby("config_hash", sort=False):
        if len(part) > 1:
            kept, earlier = part.iloc[-1], part.iloc[:-1]
            lines.append(f"config `{chash}` ({kept['model']}, {kept['method_label']}) ran {len(part)} times: kept the "
                         f"latest run `{kept['run_id']}` ({kept['timestamp']}); earlier runs left out: "
                         + ", ".join(f"`{r}` ({t})" for r, t in zip(earlier["run_id"], earlier["timestamp"])))
    return lines


# reported settings that name a task setting: a number is a counterpart only for runs with that setting
TASK_SETTINGS = {
    "PointCLIP V1 projection": ("projection", "pointclip_v1"),
    "PointCLIP V1 depth maps": ("projection", "pointclip_v1"),
    "PointCLIP V2 projection": ("projection", "pointclip_v2"),
}


def _setting_matches(setting: str, task_params: str) -> bool:
    if setting not in TASK_SETTINGS:
        return True
    key, value = TASK_SETTINGS[setting]
    try:
        params = json.loads(task_params) if task_params else {}
    except json.JSONDecodeError:
        return False
    return isinstance(params, dict) and params.get(key) == value


def compare(results: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """Reproduced rows with the matching reported value (same task/dataset/split/model/method/metric).

    Only runs with real pretrained weights (an open_clip tag) are matched: random-init and toy rows
    have no reported counterpart. ``inside`` says whether the reported value lies in the reproduced interval.
    """
    rows = results[~results["metric"].isin(NOT_HEADLINE)].copy()
    rows["reproduced"] = rows["value"]
    rows["_row"] = range(len(rows))
    rep = reported.rename(columns={"model": "model_arch", "value": "reported_raw"}).copy()
    rep["reported"] = rep["reported_raw"] * rep["unit"].map(UNIT_TO_FRACTION)
    merged = rows.merge(rep[KEYS + ["reported", "paper", "verified", "setting"]], on=KEYS, how="left")
    pretrained = merged["model_pretrained"].astype(str)
    untagged = pretrained.eq("") | pretrained.str.contains(r"[/\\.]", regex=True)
    # a number reported for one pretrained tag is no counterpart for another tag of the same arch
    setting = merged["setting"].fillna("").astype(str)
    untagged |= setting.str.startswith("pretrained=") & (setting != "pretrained=" + pretrained)
    untagged |= ~pd.Series([_setting_matches(s, t) for s, t in zip(setting, merged["task_params"])], index=merged.index)
    merged.loc[untagged, "reported"] = float("nan")
    merged[["paper", "verified"]] = merged[["paper", "verified"]].astype(object)
    merged.loc[untagged, ["paper", "verified"]] = ""
    matched = merged.groupby("_row")["reported"].transform(lambda r: r.notna().any())
    merged = merged[merged["reported"].notna() | ~matched].drop(columns=["_row", "setting"])
    merged = merged.drop_duplicates(subset=["config_hash", "metric", "paper"])
    merged["diff"] = merged["reproduced"] - merged["reported"]
    known = merged["reported"].notna() & merged["ci_low"].notna() & merged["ci_high"].notna()
    merged["inside"] = pd.Series(pd.NA, index=merged.index, dtype="boolean")
    merged.loc[known, "inside"] = (merged["ci_low"] <= merged["reported"]) & (merged["reported"] <= merged["ci_high"])
    extra = [c for c in ("p_value", "p_holm", "significant", "test", "is_baseline", "baseline_label") if c in merged]
    cols = KEYS + ["run_id", "config_hash", "model_pretrained", "model", "method_label", "method_params", "task_params",
                   "n", "reproduced", "ci_low", "ci_high", "reported", "diff", "inside", "paper", "verified"] + extra
    return merged[cols].sort_values(KEYS, key=_natural_metrics, kind="stable").reset_index(drop=True)


def _natural_metrics(column: pd.Series) -> pd.Series:
    """A sort key that puts the metric column in ``metric_sort_key`` order (other columns as they are)."""
    if column.name != "metric":
        return column
    order = {m: i for i, m in enumerate(in_natural_order(column))}
    return column.map(order)


def compared_with(table: pd.DataFrame) -> pd.Series:
    """Per row: "baseline" for a baseline, else the model and method it is tested against ("" when none)."""
    if "baseline_label" not in table:
        return pd.Series("", index=table.index, dtype=object)
    own = table["is_baseline"].fillna(False).astype(bool)
    return table["baseline_label"].fillna("").astype(str).where(~own, "baseline")


def _settings(table: pd.DataFrame) -> pd.Series:
    return differing_settings(table.assign(dataset_params=""), "method_label")  # the dataset and split have columns


def _mark(row) -> str:
    significant = row.get("significant", False)
    return " *" if pd.notna(significant) and bool(significant) else ""


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a reader wants it: labels, percent for fractions, intervals, marks."""
    out = pd.DataFrame({
        "task": table["task"], "dataset": table["dataset"], "split": table["split"], "model": table["model"],
        "method": table["method_label"], "settings": distinct_settings(table, _settings(table), table["dataset"] + table["split"].astype(str) + table["metric"]),
        "compared with": compared_with(table),
        "metric": table["metric"], "n": table["n"],
        "reproduced [95% CI]": [format_with_interval(r.metric, r.reproduced, r.ci_low, r.ci_high) + _mark(r._asdict())
                                for r in table.itertuples()],
        "reported": [format_value(m, v) for m, v in zip(table["metric"], table["reported"])],
        "diff": [format_value(m, v) for m, v in zip(table["metric"], table["diff"])],
        "reported in CI": table["inside"].map({True: "yes", False: "no"}).fillna(""),
        "p (Holm)": [f"{p:.3g}" if pd.notna(p) else "" for p in table.get("p_holm", [float("nan")] * len(table))],
        "paper": table["paper"].fillna(""), "verified": table["verified"].map({True: "yes", False: "no"}).fillna(""),
    })
    empty = [c for c in ("settings", "compared with", "reported", "diff", "reported in CI", "p (Holm)", "paper", "verified") if not out[c].astype(bool).any()]
    return out.drop(columns=empty)


PROVENANCE = {"env": "environments", "data_fingerprint": "data fingerprints"}  # CSV column -> what it tells apart


def warn_mixed_provenance(experiment: str, rows: pd.DataFrame) -> None:
    """One line on stderr per column of PROVENANCE whose values differ within a compared task/dataset/split
    (empty cells, rows from before the column, say nothing)."""
    for column, what in PROVENANCE.items():
        if column not in rows:
            continue
        known = rows[rows[column].fillna("").astype(str) != ""]
        mixed = known.groupby(["task", "dataset", "split"])[column].unique()
        mixed = mixed[mixed.map(len) > 1]
        if not mixed.empty:
            values = sorted({v for vs in mixed for v in vs})
            where = ", ".join("/".join(str(k) for k in key if k) for key in mixed.index)
            print(f"warning: experiment {experiment!r} compares rows from {len(values)} {what} "
                  f"({', '.join(values[:4])}{', ...' if len(values) > 4 else ''}) on {where}; "
                  f"see {column} in each run's metrics.json", file=sys.stderr)


ROW = ["task", "model", "method_label", "settings"]  # a row of the paper layout


def _row_compared_with(labels: pd.Series) -> str:
    values = [v for v in dict.fromkeys(labels) if v]
    return "baseline" if "baseline" in values else "; ".join(values)


def paper_layout(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task: model and method (with the settings that vary) as rows, dataset/split/metric as columns (metrics in
    their natural order), and which row each row is compared with."""
    column = (table["dataset"] + " " + table["split"].astype(str) + " " + table["metric"]).str.replace("  ", " ")
    wide = table.assign(
        column=column, settings=distinct_settings(table, _settings(table), column), vs=compared_with(table),
        cell=[format_with_interval(r.metric, r.reproduced, r.ci_low, r.ci_high) + _mark(r._asdict()) for r in table.itertuples()],
    )
    wide = wide.drop_duplicates(ROW + ["column"], keep="last")  # one config's rows matched to several papers
    layouts = {}
    for task, part in wide.groupby("task", sort=True):
        order = part.sort_values(["dataset", "split", "metric"], key=_natural_metrics, kind="stable")["column"].unique()
        pivot = part.pivot(index=ROW[1:], columns="column", values="cell").reindex(columns=order).fillna("")
        vs = part.groupby(ROW[1:])["vs"].agg(_row_compared_with)
        pivot.insert(0, "compared with", vs.reindex(pivot.index).fillna(""))
        pivot = pivot.reset_index().rename(columns={"method_label": "method"})
        pivot.columns.name = None
        empty = [c for c in ("settings", "compared with") if not pivot[c].astype(bool).any()]
        layouts[str(task)] = pivot.drop(columns=empty)
    return layouts


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def experiment_folder(experiment: str, taken: set[str]) -> str:
    """A folder name under the report's ``--out`` for an experiment name read from a results CSV.

    The CSV may come from someone else: a name must never choose where files land (``../../x``, ``/abs``),
    so every character outside ``[A-Za-z0-9._+=-]`` becomes ``_``, leading dots are dropped, and a name that
    collides with an earlier experiment's folder gets a short digest of the original name appended.
    """
    folder = _UNSAFE.sub("_", experiment).lstrip(".") or "adhoc"
    if folder in taken:
        folder = f"{folder}-{hashlib.sha1(experiment.encode()).hexdigest()[:8]}"
    taken.add(folder)
    return folder


def _run_setting(rows: pd.DataFrame, run_dirs: dict[str, Path], key: str) -> str | None:
    """``key`` from the saved config.yaml of the latest of ``rows``' runs that sets it."""
    from omegaconf import OmegaConf

    for run_id in rows.sort_values("timestamp", ascending=False)["run_id"].unique():
        config = run_dirs.get(run_id, Path("/nonexistent")) / "config.yaml"
        if config.is_file():
            value = OmegaConf.select(OmegaConf.load(config), key)
            if value:
                return str(value)
    return None


def experiment_baseline(experiment: str, rows: pd.DataFrame, given: str | None, run_dirs: dict[str, Path]) -> str | None:
    """``--baseline`` where it names something in this experiment, else the experiment's own ``baseline:`` key."""
    if given and matches_baseline(rows, given):
        return given
    if given:
        print(f"note: --baseline {given!r} names no model, method or run of experiment {experiment!r}; "
              "its own baseline is used", file=sys.stderr)
    own = _run_setting(rows, run_dirs, "baseline")
    if own and not matches_baseline(rows, own):
        print(f"note: experiment {experiment!r} sets baseline={own!r}, which names none of its models, methods or "
              f"runs (models: {', '.join(sorted(rows['model'].unique()))}); the default baseline is used", file=sys.stderr)
        return None
    return own


def build_report(results_csv: Path, out_dir: Path, use_wandb: bool = False, runs: list[Path] | None = None,
                 baseline: str | None = None) -> Path:
    from clipbench.report import plots, studies, suite

    every_row = read_all(results_csv)
    results = latest_runs(every_row)
    if baseline and not matches_baseline(results, baseline):
        raise ConfigError("--baseline", f"{baseline!r} names no model, method or run id in {results_csv}; models: "
                          + ", ".join(sorted(results["model"].unique())))
    reported = load_reported()
    outcomes, run_dirs = find_outcomes(runs if runs is not None else [Path("outputs"), Path("multirun")])
    out_dir.mkdir(parents=True, exist_ok=True)
    index = ["# clipbench results", "", f"From `{results_csv}` ({len(results)} rows).", ""]
    wandb_parts = {}
    folders: set[str] = set()
    for experiment, part in results.groupby("experiment"):
        folder = experiment_folder(str(experiment), folders)
        exp_dir = out_dir / folder
        exp_dir.mkdir(parents=True, exist_ok=True)
        warn_mixed_provenance(str(experiment), part)
        chosen = experiment_baseline(str(experiment), part, baseline, run_dirs)
        tested = paired_tests(part[~part["metric"].isin(NOT_HEADLINE)], outcomes, chosen)
        table = compare(tested, reported)
        shown, layout = readable(table), paper_layout(table)
        note = "\n" + SIGNIFICANCE_NOTE + "\n"
        (exp_dir / "comparison.md").write_text(f"# {experiment}: reproduced vs reported\n\n" + to_markdown(shown) + note)
        (exp_dir / "comparison.tex").write_text(to_latex(shown, f"{experiment}: reproduced vs reported"))
        (exp_dir / "table.md").write_text(
            f"# {experiment}\n\n" + "\n".join(f"## {task}\n\n" + to_markdown(t) for task, t in layout.items()) + note)
        (exp_dir / "table.tex").write_text("\n".join(to_latex(t, f"{experiment}: {task}") for task, t in layout.items()))
        figures = plots.all_plots(tested, exp_dir)
        figures += studies.copy_study_plots([run_dirs[r] for r in part["run_id"].unique() if r in run_dirs], exp_dir)
        suite_lines = suite.write_suite_report(part, reported, exp_dir, str(experiment), folder)
        suite_lines = suite_lines or suite.write_model_comparison(tested, exp_dir, str(experiment), folder)
        index += [f"## {experiment}", "", f"* [paper layout]({folder}/table.md) ([LaTeX]({folder}/table.tex))",
                  f"* [reproduced vs reported]({folder}/comparison.md) ([LaTeX]({folder}/comparison.tex))"]
        index += [f"* ![{p.stem}]({folder}/{p.name})" for p in figures] + suite_lines
        matched = table["reported"].notna().sum()
        tests = int(table["p_value"].notna().sum())
        index += [f"* {len(table)} result rows, {matched} with a reported counterpart, "
                  f"{tests} paired tests ({int(table['significant'].sum())} significant after Holm)"]
        if tested["is_baseline"].any():
            index += [f"* baseline: {chosen or 'the default rule (docs/model_comparisons.md)'}"]
        index += [f"* {line}" for line in superseded(every_row[every_row["experiment"] == experiment])] + [""]
        wandb_parts[str(experiment)] = (table, layout, figures)
    index_path = out_dir / "README.md"
    index_path.write_text("\n".join(index) + "\n")
    if use_wandb:
        _log_wandb(wandb_parts, out_dir, _wandb_project(results, run_dirs))
    return index_path


def _wandb_project(results: pd.DataFrame, run_dirs: dict[str, Path]) -> str:
    """``logger.wandb.project`` from the runs' saved config.yaml (the latest run that has one), else the default."""
    from clipbench.config import WandbConfig

    return _run_setting(results, run_dirs, "logger.wandb.project") or WandbConfig().project


NUMERIC = ["n", "reproduced", "ci_low", "ci_high", "reported", "diff", "p_value", "p_holm"]


def _log_wandb(parts: dict, out_dir: Path, project: str) -> None:
    import os

    import wandb

    from clipbench.config import WandbConfig
    from clipbench.results.wandb_logger import init_run

    mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    for experiment, (table, layout, figures) in parts.items():
        numbers = table[KEYS + ["model", "method_label", "method_params"] + [c for c in NUMERIC if c in table]].copy()
        for col in NUMERIC:
            if col in numbers:
                numbers[col] = pd.to_numeric(numbers[col], errors="coerce").astype(float)
        for col in ("inside", "significant"):
            if col in table:
                numbers[col] = table[col].astype("boolean").fillna(False).astype(bool)
        run = init_run(mode, WandbConfig().init_timeout, project=project, group=experiment,
                       name=f"report-{experiment}", job_type="report", dir=str(out_dir))
        logged = {"comparison": wandb.Table(dataframe=numbers)}
        logged |= {f"table/{task}": wandb.Table(dataframe=t.astype(str)) for task, t in layout.items()}
        logged |= {f"plots/{p.stem}": wandb.Image(str(p)) for p in figures}
        run.log(logged)
        run.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipbench-report", description="Tables and plots from the results CSV.")
    parser.add_argument("--results", type=Path, default=Path("results/results.csv"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--runs", type=Path, nargs="*", default=[Path("outputs"), Path("multirun")],
                        help="folders holding the run directories (their outcomes.npz feed the paired tests)")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and plots to W&B, grouped per experiment")
    parser.add_argument("--baseline", help="what the paired tests compare with: a model label as the tables show it "
                        "(e.g. 'ViT-B-32 openai'), a method (clip) or a run id; default: each experiment's own "
                        "baseline key, else docs/model_comparisons.md")
    args = parser.parse_args(argv)
    try:
        index = build_report(args.results, args.out, args.wandb, args.runs, args.baseline)
    except ClipbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"report written: {index}")


if __name__ == "__main__":
    main()

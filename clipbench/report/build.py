"""``clipbench-report``: per-experiment tables (reported vs reproduced) and plots, plus an index.

    clipbench-report [--results results/results.csv] [--out results] [--wandb]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from clipbench.errors import ClipbenchError, DataError
from clipbench.report.reported import UNIT_TO_FRACTION, load_reported
from clipbench.report.tables import to_latex, to_markdown

KEYS = ["task", "dataset", "split", "model_arch", "method", "metric"]
NOT_HEADLINE = {"skipped"}


def load_results(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} does not exist; run an experiment first (e.g. make run)")
    frame = pd.read_csv(path, on_bad_lines="warn", keep_default_na=False, na_values=[""])
    frame = frame[pd.to_numeric(frame["value"], errors="coerce").notna()].copy()
    if frame.empty:
        raise DataError(f"{path} holds no results yet; run an experiment first (e.g. make run)")
    frame["value"] = frame["value"].astype(float)
    for col in ("experiment", "split", "model_pretrained", "method_params", *SETTING_PARAMS):
        frame[col] = frame[col].fillna("").astype(str) if col in frame else ""
    frame["experiment"] = frame["experiment"].replace("", "adhoc")
    # the latest run of each configuration and metric
    frame = frame.sort_values("timestamp").drop_duplicates(["config_hash", "metric"], keep="last")
    return label_settings(frame)


SETTING_PARAMS = {"task_params": "task", "dataset_params": "dataset"}
SHOWN_ELSEWHERE = {"task.name", "dataset.name", "dataset.split"}


def _params(text: str) -> dict:
    return json.loads(text) if text else {}


def label_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``method_config`` (the ``method=`` config chosen) and ``setting`` (the task and dataset keys whose
    values differ within an experiment's task and dataset, e.g. ``task.projection=pointclip_v2``), so that
    tables keep rows apart that differ only there."""
    frame = frame.copy()
    frame["method_config"] = [_params(p).get("config") or m for p, m in zip(frame["method_params"], frame["method"])]
    frame["setting"] = ""
    for _, part in frame.groupby(["experiment", "task", "dataset"]):
        flat = [
            {f"{prefix}.{k}": v for col, prefix in SETTING_PARAMS.items() for k, v in _params(row[col]).items()}
            for _, row in part.iterrows()
        ]
        keys = sorted({k for d in flat for k in d} - SHOWN_ELSEWHERE)
        varying = [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in flat}) > 1]
        frame.loc[part.index, "setting"] = [" ".join(f"{k}={_shown(d.get(k))}" for k in varying) for d in flat]
    return frame


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def compare(results: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """Reproduced rows with the matching reported value (same task/dataset/split/model/method/metric).

    Only runs with real pretrained weights (an open_clip tag) are matched: random-init and toy rows
    have no reported counterpart.
    """
    rows = results[~results["metric"].isin(NOT_HEADLINE)].copy()
    rows["reproduced"] = rows["value"]
    rep = reported.rename(columns={"model": "model_arch", "value": "reported_raw"}).copy()
    rep["reported"] = rep["reported_raw"] * rep["unit"].map(UNIT_TO_FRACTION)
    merged = rows.merge(rep[KEYS + ["reported", "paper", "verified"]], on=KEYS, how="left")
    pretrained = merged["model_pretrained"].astype(str)
    untagged = pretrained.eq("") | pretrained.str.contains(r"[/\\.]", regex=True)
    merged.loc[untagged, "reported"] = float("nan")
    merged[["paper", "verified"]] = merged[["paper", "verified"]].astype(object)
    merged.loc[untagged, ["paper", "verified"]] = ""
    merged = merged.drop_duplicates()
    merged["diff"] = merged["reproduced"] - merged["reported"]
    cols = KEYS + ["method_config", "setting", "model_pretrained", "method_params", "n", "reproduced", "reported", "diff",
                   "paper", "verified"]
    return merged[cols].sort_values(KEYS + ["method_config", "setting"]).reset_index(drop=True)


def _percent(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in ("reproduced", "reported", "diff"):
        out[col] = out[col] * 100
    return out.rename(columns={"reproduced": "reproduced (x100)", "reported": "reported (x100)", "diff": "diff (x100)"})


def paper_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Methods as rows, dataset/split/metric as columns, reproduced (x100) as values."""
    wide = table.assign(column=table["dataset"] + " " + table["split"].astype(str) + " " + table["metric"])
    wide = wide.assign(value=wide["reproduced"] * 100)
    index = ["model_arch", "method", "method_config", "setting", "method_params"]
    pivot = wide.pivot_table(index=index, columns="column", values="value", aggfunc="last")
    return pivot.reset_index()


def build_report(results_csv: Path, out_dir: Path, use_wandb: bool = False) -> Path:
    from clipbench.report import plots

    results = load_results(results_csv)
    reported = load_reported()
    out_dir.mkdir(parents=True, exist_ok=True)
    index = ["# clipbench results", "", f"From `{results_csv}` ({len(results)} rows).", ""]
    wandb_tables = {}
    for experiment, part in results.groupby("experiment"):
        exp_dir = out_dir / str(experiment)
        exp_dir.mkdir(parents=True, exist_ok=True)
        table = compare(part, reported)
        shown = _percent(table)
        layout = paper_layout(table)
        (exp_dir / "comparison.md").write_text(f"# {experiment}: reproduced vs reported\n\n" + to_markdown(shown))
        (exp_dir / "comparison.tex").write_text(to_latex(shown, f"{experiment}: reproduced vs reported (x100)"))
        (exp_dir / "table.md").write_text(f"# {experiment}\n\n" + to_markdown(layout))
        (exp_dir / "table.tex").write_text(to_latex(layout, f"{experiment} (x100)"))
        figures = plots.all_plots(part, exp_dir)
        index += [f"## {experiment}", "", f"* [paper layout]({experiment}/table.md) ([LaTeX]({experiment}/table.tex))",
                  f"* [reproduced vs reported]({experiment}/comparison.md) ([LaTeX]({experiment}/comparison.tex))"]
        index += [f"* ![{p.stem}]({experiment}/{p.name})" for p in figures]
        matched = table["reported"].notna().sum()
        index += [f"* {len(table)} result rows, {matched} with a reported counterpart", ""]
        wandb_tables[str(experiment)] = (shown, layout)
    index_path = out_dir / "README.md"
    index_path.write_text("\n".join(index) + "\n")
    if use_wandb:
        _log_wandb(wandb_tables, out_dir)
    return index_path


def _log_wandb(tables: dict, out_dir: Path) -> None:
    import os

    import wandb

    mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    for experiment, (shown, layout) in tables.items():
        run = wandb.init(project="clipbench", group=experiment, name=f"report-{experiment}", job_type="report", mode=mode, reinit=True, dir=str(out_dir))
        run.log({"comparison": wandb.Table(dataframe=shown.astype(str)), "table": wandb.Table(dataframe=layout.astype(str))})
        run.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipbench-report", description="Tables and plots from the results CSV.")
    parser.add_argument("--results", type=Path, default=Path("results/results.csv"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--wandb", action="store_true", help="also log the tables to W&B, grouped per experiment")
    args = parser.parse_args(argv)
    try:
        index = build_report(args.results, args.out, args.wandb)
    except ClipbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"report written: {index}")



if __name__ == "__main__":
    main()

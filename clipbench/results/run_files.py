"""Files in the run directory: config.yaml, metrics.json and predictions.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def write_metrics(run_dir: Path, payload: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(run_dir / "metrics.json")


def write_predictions(run_dir: Path, rows: list[dict]) -> Path:
    """One row per sample; the first columns are sample_id, target, pred, scores when present."""
    path = run_dir / "predictions.csv"
    preferred = ["sample_id", "target", "pred", "scores"]
    columns = [c for c in preferred if rows and c in rows[0]]
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path

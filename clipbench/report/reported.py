"""The reported numbers in experiments/reported/*.csv, validated row by row."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from clipbench.errors import DataError
from clipbench.paths import reported_dir

REPORTED_COLUMNS = [
    "paper", "table", "task", "dataset", "split", "method", "model", "setting", "metric", "value", "unit",
    "source", "verified",
]
UNIT_TO_FRACTION = {"percent": 0.01, "x100": 0.01, "fraction": 1.0}


def load_reported(paths: list[Path] | None = None) -> pd.DataFrame:
    """All reported rows; a malformed row raises one error naming the file and row number."""
    paths = sorted(reported_dir().glob("*.csv")) if paths is None else paths
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != REPORTED_COLUMNS:
                raise DataError(f"{path}: header must be {','.join(REPORTED_COLUMNS)}")
            for lineno, fields in enumerate(reader, start=2):
                rows.append(_parse_row(path, lineno, fields))
    frame = pd.DataFrame(rows, columns=REPORTED_COLUMNS + ["file"])
    return frame


def _parse_row(path: Path, lineno: int, fields: list[str]) -> dict:
    where = f"{path} row {lineno}"
    if len(fields) != len(REPORTED_COLUMNS):
        raise DataError(f"{where}: expected {len(REPORTED_COLUMNS)} fields, found {len(fields)}")
    row = dict(zip(REPORTED_COLUMNS, fields))
    try:
        row["value"] = float(row["value"])
    except ValueError:
        raise DataError(f"{where}: value {row['value']!r} is not a number") from None
    if row["unit"] not in UNIT_TO_FRACTION:
        raise DataError(f"{where}: unit {row['unit']!r} is not one of {sorted(UNIT_TO_FRACTION)}")
    if row["verified"] not in ("true", "false"):
        raise DataError(f"{where}: verified must be true or false, not {row['verified']!r}")
    row["verified"] = row["verified"] == "true"
    row["file"] = path.name
    return row

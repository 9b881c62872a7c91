"""The append-only results CSV: one row per metric, written atomically under a file lock."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from filelock import FileLock

from clipbench.errors import DataError

RESULT_COLUMNS = [
    "run_id", "timestamp", "git_sha", "config_hash", "experiment", "task", "dataset", "split",
    "model_arch", "model_pretrained", "method", "method_params", "metric", "value", "n",
    "items_per_s", "peak_mem_mb", "device", "seed",
]
# Columns added later, always at the end, so readers of the older header keep working.
LEGACY_COLUMNS = RESULT_COLUMNS[:]
RESULT_COLUMNS = LEGACY_COLUMNS + ["task_params", "dataset_params", "ci_low", "ci_high"]


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if value == value else "nan"
    return str(value)


def append_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append ``rows`` to the CSV in one write under a lock; the header is written once.

    Every row must carry exactly ``RESULT_COLUMNS``. Parallel jobs never interleave, and a killed
    process leaves either all of its rows or none.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if set(row) != set(RESULT_COLUMNS):
            raise ValueError(f"result row keys differ from the schema: {sorted(set(row) ^ set(RESULT_COLUMNS))}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([_format(row[c]) for c in RESULT_COLUMNS])
    with FileLock(str(path) + ".lock", timeout=120):
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh:
            _ensure_trailing_newline(path)
            if _check_header(path) == LEGACY_COLUMNS:
                _upgrade_header(path)
        payload = (",".join(RESULT_COLUMNS) + "\n" if fresh else "") + buf.getvalue()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if header not in (RESULT_COLUMNS, LEGACY_COLUMNS):
        raise DataError(f"{path} is not a clipbench results file (its header differs); choose another results_csv")
    return header


def _upgrade_header(path: Path) -> None:
    """Rewrite an older-header file with the current header; its rows get empty new columns (atomic replace)."""
    extra = len(RESULT_COLUMNS) - len(LEGACY_COLUMNS)
    with open(path, newline="") as f:
        records = list(csv.reader(f))[1:]
    tmp = path.with_name(path.name + ".upgrade")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(RESULT_COLUMNS)
        for record in records:
            writer.writerow(record + [""] * extra if len(record) == len(LEGACY_COLUMNS) else record)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _ensure_trailing_newline(path: Path) -> None:
    """A row cut short by a crash outside clipbench is terminated, so the next rows stay parseable."""
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
    if last != b"\n":
        with open(path, "ab") as f:
            f.write(b"\n")


def read_results(path: str | os.PathLike):
    """The results CSV as a DataFrame (rows that do not parse are dropped with a warning)."""
    import pandas as pd

    return pd.read_csv(path, on_bad_lines="warn")

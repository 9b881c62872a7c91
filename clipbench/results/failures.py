"""``<sweep dir>/failures.csv``: the jobs of a sweep that failed and have not succeeded since.

A job is identified by its overrides, ``resume=`` left out, so a retry in the same sweep dir (often
with ``resume=true``) clears the record of the job it reruns.
"""

from __future__ import annotations

import csv
import os
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

FAILURE_COLUMNS = ["timestamp", "job", "overrides", "error"]


def now() -> str:
    """A timestamp as failures.csv writes it (microseconds, so that a sweep's start orders its own failures)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def failures_path(sweep_dir: str | os.PathLike) -> Path:
    return Path(sweep_dir) / "failures.csv"


def job_key(overrides: str) -> str:
    return " ".join(t for t in overrides.split(" ") if not t.lstrip("+").startswith("resume="))


def record_failure(sweep_dir: str | os.PathLike, job: int, overrides: str, error: str) -> None:
    path = failures_path(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        fresh = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if fresh:
                writer.writerow(FAILURE_COLUMNS)
            writer.writerow([now(), job, overrides, error])


def read_failures(sweep_dir: str | os.PathLike) -> list[dict]:
    path = failures_path(sweep_dir)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def clear_failure(sweep_dir: str | os.PathLike, overrides: str) -> None:
    """Drop the records of the job with these overrides (it has just succeeded)."""
    path = failures_path(sweep_dir)
    if not path.is_file():
        return
    key = job_key(overrides)
    with FileLock(str(path) + ".lock", timeout=120):
        rows = read_failures(sweep_dir)
        kept = [r for r in rows if job_key(r.get("overrides") or "") != key]
        if len(kept) == len(rows):
            return
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FAILURE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)


def failures_since(sweep_dir: str | os.PathLike, start: str) -> list[dict]:
    """The failures recorded at or after ``start`` (a :func:`now` timestamp) and not cleared since."""
    return [r for r in read_failures(sweep_dir) if (r.get("timestamp") or "") >= start]

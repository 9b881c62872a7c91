"""The append-only results CSV: one row per metric, written atomically under a file lock."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path

from filelock import FileLock

from clipbench.errors import ConfigError, DataError

LEGACY_COLUMNS = [  # the first header
    "run_id", "timestamp", "git_sha", "config_hash", "experiment", "task", "dataset", "split",
    "model_arch", "model_pretrained", "method", "method_params", "metric", "value", "n",
    "items_per_s", "peak_mem_mb", "device", "seed",
]
# Columns added later, a group at a time and always at the end, so readers of an older header keep working;
# a file with an older header is rewritten with the current one on its next append.
ADDED_COLUMNS = [
    ["task_params", "dataset_params", "ci_low", "ci_high"],
    ["weights_fingerprint", "model_precision", "ci_level", "ci_resamples"],
    ["model_source", "env", "data_fingerprint"],  # env: the key of metrics.json's environment record
    ["world_size"],  # ranks one evaluation was sharded over (clipbench/distributed.py); 1 for one process
]
OLDER_HEADERS = [LEGACY_COLUMNS + sum(ADDED_COLUMNS[:i], []) for i in range(len(ADDED_COLUMNS))]
RESULT_COLUMNS = LEGACY_COLUMNS + sum(ADDED_COLUMNS, [])


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
    with FileLock(lock_path(path), timeout=120):
        if path.exists():
            quarantine_damaged_tail(path)
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh:
            if _check_header(path) != RESULT_COLUMNS:
                _upgrade_header(path)
        payload = (",".join(RESULT_COLUMNS) + "\n" if fresh else "") + buf.getvalue()
        write_whole(path, payload.encode())


def write_whole(path: Path, payload: bytes) -> None:
    """Append ``payload`` completely or not at all: a short ``os.write`` is continued, and a failure (a full
    disk, a file-size limit) truncates the file back to its old length and says so, so no cut row stays."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    start = os.fstat(fd).st_size
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise DataError(f"{path}: the result rows could not be written ({exc.strerror or exc}); "
                        "nothing was appended, rerun with resume=true once there is room") from None
    finally:
        os.close(fd)


def lock_path(path: Path) -> str:
    return str(path) + ".lock"


def _check_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if header != RESULT_COLUMNS and header not in OLDER_HEADERS:
        raise DataError(f"{path} is not a clipbench results file (its header differs); choose another results_csv")
    return header


def _upgrade_header(path: Path) -> None:
    """Rewrite an older-header file with the current header; its rows get empty new columns (atomic replace
    of the file itself: a symlinked CSV stays a link to the shared file)."""
    path = Path(os.path.realpath(path))
    with open(path, newline="") as f:
        header, *records = list(csv.reader(f))
    extra = len(RESULT_COLUMNS) - len(header)
    tmp = path.with_name(path.name + ".upgrade")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(RESULT_COLUMNS)
        for record in records:
            writer.writerow(record + [""] * extra if len(record) == len(header) else record)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def damaged_tail_offset(data: bytes) -> int:
    """Where a cut-short last record starts in ``data`` (``len(data)`` when the file ends cleanly).

    Every clipbench write ends with a newline outside any quoted field, so a file that ends without
    one, or inside an open quote, was cut by a crash elsewhere. A newline is a record boundary only
    when an even number of quotes precedes it.
    """
    total = data.count(b'"')
    if data.endswith(b"\n") and total % 2 == 0:
        return len(data)
    end, quotes_after = len(data), 0
    while (newline := data.rfind(b"\n", 0, end)) >= 0:
        quotes_after += data.count(b'"', newline, end)
        if (total - quotes_after) % 2 == 0:
            return newline + 1
        end = newline
    return 0


def quarantine_damaged_tail(path: Path) -> None:
    """Move a cut-short last record to ``<file>.damaged`` (said on stderr), so no row is appended into it."""
    data = path.read_bytes()
    cut = damaged_tail_offset(data)
    if cut == len(data):
        return
    quarantine = path.with_name(path.name + ".damaged")
    with open(quarantine, "ab") as f:
        f.write(data[cut:] + (b"" if data.endswith(b"\n") else b"\n"))
        f.flush()
        os.fsync(f.fileno())
    os.truncate(path, cut)
    print(f"warning: {path}: its last record was cut short ({len(data) - cut} bytes); moved it to {quarantine}",
          file=sys.stderr)


def check_results_csv(path: str | os.PathLike) -> None:
    """Fail before any work, with one line, when ``path`` cannot take result rows.

    It must be a regular file (or creatable) that this process can append to, holding a clipbench
    header when not empty. A cut-short last record is quarantined here too, so ``resume`` reads a
    parseable file.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError("results_csv", f"{path} is a directory; name a .csv file, e.g. {path / 'results.csv'}")
    if path.exists() and not path.is_file():
        raise ConfigError("results_csv", f"{path} is not a regular file; name a .csv file")
    try:
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        raise ConfigError("results_csv", f"{path} cannot be written ({exc.strerror or exc}); choose another path") from None
    lock = lock_path(path)
    try:  # every append takes this lock; a folder that refuses it would fail only after the whole evaluation
        if os.path.lexists(lock):
            os.close(os.open(lock, os.O_WRONLY))
        else:  # not created here: an unlinked lock file could let two writers in
            tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        raise ConfigError("results_csv", f"its lock file {lock} cannot be created ({exc.strerror or exc}); "
                          "choose a results_csv in a writable folder") from None
    if path.exists() and path.stat().st_size:
        with FileLock(lock_path(path), timeout=120):
            quarantine_damaged_tail(path)
            if path.stat().st_size:
                try:
                    _check_header(path)
                except DataError as exc:
                    raise ConfigError("results_csv", str(exc)) from None


NUMERIC_COLUMNS = (
    "value", "n", "items_per_s", "peak_mem_mb", "seed", "ci_low", "ci_high", "ci_level", "ci_resamples", "world_size",
)


def read_results(path: str | os.PathLike, numeric: bool = True):
    """The results CSV as a DataFrame (rows that do not parse are dropped with a warning).

    Every column is read as text (a config hash such as ``1234e5`` or ``0042`` stays the string written),
    then (unless ``numeric=False``) the numeric columns are parsed; an empty cell is "" in text columns
    and NaN in numeric ones.
    """
    import pandas as pd

    frame = pd.read_csv(path, on_bad_lines="warn", dtype=str, keep_default_na=False)
    return parse_numeric(frame) if numeric else frame


def parse_numeric(frame):
    """A copy of a text-read results frame with its numeric columns parsed (unparseable cells NaN)."""
    import pandas as pd

    frame = frame.copy()
    for col in NUMERIC_COLUMNS:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def has_results(path: str | os.PathLike, chash: str, weights: str | None = None, experiment: str | None = None) -> bool:
    """Whether the results CSV holds any row of config ``chash`` (measured with the weights fingerprinted
    ``weights`` when given: a checkpoint replaced at the same path is not done; under ``experiment`` when given:
    the same grid resumed under another experiment name still gets its own rows)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    frame = read_results(path, numeric=False)
    done = frame["config_hash"] == chash
    if weights is not None:  # a file from before the fingerprints were recorded has none
        done &= frame.get("weights_fingerprint", "") == weights
    if experiment is not None:
        done &= frame["experiment"] == experiment
    return bool(done.any())


def _claim_file(path: Path, chash: str, experiment: str | None = None) -> Path:
    name = f"{chash}-{hashlib.sha1(experiment.encode()).hexdigest()[:8]}" if experiment else chash
    return Path(str(path) + ".claims") / name


def claim_config(path: str | os.PathLike, chash: str, weights: str | None = None,
                 experiment: str | None = None) -> str | None:
    """For ``resume=true``: under the append lock, None when this process may run ``chash`` (a claim is
    recorded), else why not (it has rows with these ``weights``, see ``has_results``, or a live job on this
    host, or any job on another host, claimed it).

    Two sweeps resumed together on one CSV thus split the configs instead of both running every one.
    """
    import socket

    path = Path(path)
    host, claim = socket.gethostname(), _claim_file(path, chash, experiment)
    with FileLock(lock_path(path), timeout=120):
        if has_results(path, chash, weights, experiment):
            return f"already has results in {path}"
        if claim.is_file():
            owner_host, _, owner_pid = claim.read_text().strip().partition(" ")
            alive = owner_host != host or _pid_alive(int(owner_pid or 0))
            if alive and not (owner_host == host and int(owner_pid or 0) == os.getpid()):
                return f"is being run by {owner_host} pid {owner_pid} (delete {claim} if that job is gone)"
        claim.parent.mkdir(exist_ok=True)
        claim.write_text(f"{host} {os.getpid()}\n")
    return None


def release_claim(path: str | os.PathLike, chash: str, experiment: str | None = None) -> None:
    with contextlib.suppress(OSError):
        _claim_file(Path(path), chash, experiment).unlink()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

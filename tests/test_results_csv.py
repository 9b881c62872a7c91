import csv
import multiprocessing as mp

import pytest

from clipbench.errors import DataError
from clipbench.logging.results import RESULT_COLUMNS, append_rows, read_results


def _row(run_id: str, metric: str, value: float) -> dict:
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(run_id=run_id, metric=metric, value=value, n=10, method_params='{"a": [1, 2], "b": "x,y"}')
    return row


def _writer(path: str, worker: int) -> None:
    for k in range(20):
        append_rows(path, [_row(f"w{worker}-{k}", m, 0.5) for m in ("top1", "top5", "skipped")])


def test_parallel_appends_never_interleave(tmp_path):
    path = str(tmp_path / "r.csv")
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == RESULT_COLUMNS
    assert len(rows) == 4 * 20 * 3
    # each job's 3 rows are contiguous and in order
    for i in range(0, len(rows), 3):
        assert [r["metric"] for r in rows[i : i + 3]] == ["top1", "top5", "skipped"]
        assert len({r["run_id"] for r in rows[i : i + 3]}) == 1
    assert rows[0]["method_params"] == '{"a": [1, 2], "b": "x,y"}'


def test_a_cut_last_line_does_not_corrupt_later_rows(tmp_path):
    path = tmp_path / "r.csv"
    append_rows(path, [_row("a", "top1", 0.1)])
    with open(path, "a") as f:
        f.write("b,2026")  # a row cut short by a crash elsewhere
    append_rows(path, [_row("c", "top1", 0.3)])
    frame = read_results(path)
    assert "c" in set(frame["run_id"]) and (frame.loc[frame.run_id == "c", "value"] == 0.3).all()


def test_foreign_csv_is_not_appended_to(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="not a clipbench results file"):
        append_rows(path, [_row("a", "top1", 0.1)])
    assert path.read_text() == "x,y\n1,2\n"


def test_rows_must_match_schema(tmp_path):
    with pytest.raises(ValueError):
        append_rows(tmp_path / "r.csv", [{"run_id": "x"}])


def test_an_older_header_file_is_upgraded_and_keeps_every_row(tmp_path):
    from clipbench.logging.results import LEGACY_COLUMNS

    path = tmp_path / "old.csv"
    old_rows = [[f"r{i}", "2026", "sha", "h", "", "zeroshot", "cifar100", "test", "a", "", "clip", '{"k": "a,b"}',
                 "top1", str(0.1 * i), "10", "1.0", "2.0", "cpu", "0"] for i in range(3)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LEGACY_COLUMNS)
        writer.writerows(old_rows)
    row = _row("new", "top1", 0.9)
    row.update(task_params='{"name": "zeroshot"}', ci_low=0.8, ci_high=0.95)
    append_rows(path, [row])
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    assert list(records[0]) == RESULT_COLUMNS
    assert [r["run_id"] for r in records] == ["r0", "r1", "r2", "new"]
    assert [r["method_params"] for r in records[:3]] == ['{"k": "a,b"}'] * 3
    assert records[1]["value"] == "0.1" and records[1]["seed"] == "0" and records[1]["ci_low"] == ""
    assert records[3]["ci_low"] == "0.8" and records[3]["task_params"] == '{"name": "zeroshot"}'

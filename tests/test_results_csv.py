import csv
import multiprocessing as mp

import pytest

from clipbench.errors import DataError
from clipbench.results.csv_store import RESULT_COLUMNS, append_rows, read_results


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
    from clipbench.results.csv_store import LEGACY_COLUMNS

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


def test_a_record_cut_inside_a_quoted_field_is_quarantined_not_appended_into(tmp_path, capsys):
    from clipbench.results.csv_store import has_results

    path = tmp_path / "r.csv"
    append_rows(path, [_row("a", "top1", 0.1) | {"config_hash": "ha"}])
    intact = path.read_bytes()
    cut = 'b,2026,sha,hb,,zeroshot,cifar100,test,a,,clip,"{""a"": [1'  # a crash elsewhere, inside method_params
    with open(path, "a") as f:
        f.write(cut)
    append_rows(path, [_row("c", "top1", 0.3) | {"config_hash": "hc"}])
    assert path.read_bytes().startswith(intact)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == ["a", "c"]
    assert rows[1]["value"] == "0.3" and rows[1]["method_params"] == '{"a": [1, 2], "b": "x,y"}'
    assert (tmp_path / "r.csv.damaged").read_text() == cut + "\n"
    assert "r.csv: its last record was cut short" in capsys.readouterr().err
    assert has_results(str(path), "hc") and not has_results(str(path), "hb")


def test_damaged_tail_offset_knows_quoted_newlines():
    from clipbench.results.csv_store import damaged_tail_offset

    header, multiline = b"a,b\n", b'1,"x\ny"\n'  # a complete record whose quoted field holds a newline
    assert damaged_tail_offset(header + multiline) == len(header + multiline)
    assert damaged_tail_offset(header + multiline + b'2,"x\n') == len(header + multiline)  # cut after a quoted newline
    assert damaged_tail_offset(header + b"2,3") == len(header)
    assert damaged_tail_offset(b"a,") == 0


def test_results_csv_that_cannot_take_rows_is_refused_with_one_line(tmp_path):
    import os
    import sys

    from clipbench.errors import ConfigError
    from clipbench.results.csv_store import check_results_csv

    (tmp_path / "a_file").write_text("x")
    foreign = tmp_path / "other.csv"
    foreign.write_text("x,y\n1,2\n")
    cases = {
        tmp_path: "is a directory",
        tmp_path / "a_file" / "results.csv": "cannot be written",
        foreign: "not a clipbench results file",
    }
    if sys.platform.startswith("linux"):
        cases[type(tmp_path)("/proc/clipbench-results.csv")] = "cannot be written"  # refused even to root
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message) as info:
            check_results_csv(path)
        assert str(info.value).startswith("results_csv: ") and "\n" not in str(info.value)
    assert foreign.read_text() == "x,y\n1,2\n"
    check_results_csv(tmp_path / "new" / "results.csv")  # creatable: fine, and nothing is left behind
    assert os.listdir(tmp_path / "new") == []

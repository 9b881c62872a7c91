"""The results CSV at its edges: a full disk, numeric-looking hashes, symlinks, read-only folders."""

import csv
import os
import subprocess
import sys

import pytest

from clipbench.errors import ConfigError, DataError
from clipbench.results.csv_store import (
    LEGACY_COLUMNS,
    RESULT_COLUMNS,
    append_rows,
    check_results_csv,
    read_results,
)


def _row(run_id: str, chash: str = "h", metric: str = "top1", value: float = 0.5) -> dict:
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(run_id=run_id, config_hash=chash, metric=metric, value=value, n=10, method_params='{"a": 1}')
    return row


def test_a_file_size_limit_during_the_append_leaves_whole_rows_and_fails(tmp_path):
    path = tmp_path / "r.csv"
    append_rows(path, [_row("a")])
    intact = path.read_bytes()
    limit = len(intact) + 40  # room for part of the next rows only
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from clipbench.results.csv_store import RESULT_COLUMNS, append_rows\n"
        "from clipbench.errors import DataError\n"
        "row = dict.fromkeys(RESULT_COLUMNS, '') | {'run_id': 'b', 'config_hash': 'hb', 'metric': 'top1', 'value': 0.25}\n"
        "try:\n"
        f"    append_rows({str(path)!r}, [row | {{'metric': m}} for m in ('top1', 'top5', 'skipped')])\n"
        "except DataError as exc:\n"
        "    print(exc, file=sys.stderr)\n"
        "    sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "the result rows could not be written" in proc.stderr and "nothing was appended" in proc.stderr
    assert path.read_bytes() == intact  # no cut row for the next run to quarantine
    append_rows(path, [_row("c", "hc")])
    assert [r["run_id"] for r in read_results(path).to_dict("records")] == ["a", "c"]
    assert not (tmp_path / "r.csv.damaged").exists()


@pytest.mark.parametrize("chash", ["1234567890123456", "12e45", "0042", "1e5"])
def test_config_hashes_that_look_like_numbers_stay_text(tmp_path, chash):
    from clipbench.results.csv_store import has_results

    path = tmp_path / "r.csv"
    append_rows(path, [_row("a", chash)])
    assert read_results(path)["config_hash"].tolist() == [chash]
    assert has_results(str(path), chash)
    assert not has_results(str(path), "12e46")


def test_an_old_header_csv_behind_a_symlink_is_upgraded_in_place(tmp_path):
    shared = tmp_path / "shared" / "results.csv"
    shared.parent.mkdir()
    with open(shared, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LEGACY_COLUMNS)
        writer.writerow(["old" if c == "run_id" else "" for c in LEGACY_COLUMNS])
    link = tmp_path / "mine.csv"
    link.symlink_to(shared)
    append_rows(link, [_row("new")])
    assert link.is_symlink() and os.readlink(link) == str(shared)
    assert [r["run_id"] for r in read_results(shared).to_dict("records")] == ["old", "new"]


def test_a_writable_csv_whose_lock_cannot_be_created_fails_before_any_work(tmp_path):
    path = tmp_path / "r.csv"
    append_rows(path, [_row("a")])
    os.remove(str(path) + ".lock")
    os.mkdir(str(path) + ".lock")  # the lock file cannot be created here (as in a read-only folder)
    with pytest.raises(ConfigError, match=r"lock file .*r.csv.lock cannot be created"):
        check_results_csv(path)


def test_a_results_csv_whose_lock_cannot_exist_fails_at_once(tmp_path):
    with pytest.raises(ConfigError, match="results_csv"):
        check_results_csv("/proc/version")  # no waiting 120 s for a lock that can never be taken


def _report_row(run_id, experiment, metric, value, chash="h1", ts="2026-01-01T00:00:00+00:00"):
    import json

    return _row(run_id, chash, metric, value) | dict(
        timestamp=ts, experiment=experiment, task="clipscore", dataset="flickr8k_expert", split="test",
        model_arch="toyclip", method="clip", method_params=json.dumps({"config": "clip"}), seed=0, device="cpu")


def test_an_undefined_metric_keeps_its_row_and_reads_undefined(tmp_path, capsys):
    from clipbench.report.build import build_report, load_results
    from clipbench.results.table import with_intervals
    from clipbench.runner import warn_undefined

    path = tmp_path / "r.csv"
    append_rows(path, [_report_row("a", "e", "kendall_tau_c", float("nan")), _report_row("a", "e", "clip_s", 0.7)])
    frame = load_results(path)
    assert sorted(frame["metric"]) == ["clip_s", "kendall_tau_c"]
    index = build_report(path, tmp_path / "out", runs=[])
    table = (tmp_path / "out" / "e" / "table.md").read_text()
    assert "undefined" in table and index.is_file()
    assert with_intervals([{"value": float("nan"), "ci_low": None, "ci_high": None}])[0]["value"] == "undefined"
    warn_undefined({"kendall_tau_c": float("nan"), "clip_s": 0.7})
    err = capsys.readouterr().err
    assert err.startswith("warning: kendall_tau_c undefined (NaN)") and "clip_s" not in err


def test_the_report_keeps_a_config_run_under_two_experiment_names(tmp_path):
    from clipbench.report.build import build_report, load_results

    path = tmp_path / "r.csv"
    append_rows(path, [_report_row("a", "first", "clip_s", 0.7),
                       _report_row("b", "second", "clip_s", 0.7, ts="2026-01-02T00:00:00+00:00")])
    assert sorted(load_results(path)["experiment"]) == ["first", "second"]
    index = build_report(path, tmp_path / "out", runs=[]).read_text()
    assert "## first" in index and "## second" in index


def test_a_candidates_json_with_a_repeated_image_id_is_one_error(tmp_path):
    from clipbench.data.clipscore_corpora import read_candidates_json

    path = tmp_path / "candidates.json"
    path.write_text('{"img1": "a dog", "img2": "a cat", "img1": "a bird"}')
    with pytest.raises(DataError, match=r"candidates.json: 1 key\(s\) appear twice in one object \(first: 'img1'\)"):
        read_candidates_json(path)
    path.write_text('{"img1": "a dog", "img2": "a cat"}')
    assert read_candidates_json(path) == {"img1": "a dog", "img2": "a cat"}


def test_resumed_jobs_claim_a_config_under_the_lock(tmp_path):
    import socket

    from clipbench.results.csv_store import claim_config, release_claim

    path = tmp_path / "r.csv"
    other = ("import sys\nfrom clipbench.results.csv_store import claim_config\n"
             f"print(claim_config({str(path)!r}, sys.argv[1]))\n")

    def claim_elsewhere(chash):
        return subprocess.run([sys.executable, "-c", other, chash], capture_output=True, text=True, timeout=120).stdout.strip()

    assert claim_config(path, "h1") is None
    assert claim_elsewhere("h1").startswith(f"is being run by {socket.gethostname()} pid {os.getpid()}")
    assert claim_elsewhere("h2") == "None"  # another config is free; that process has ended since
    assert claim_config(path, "h2") is None  # a claim whose process is gone is taken over
    release_claim(path, "h1")
    assert claim_elsewhere("h1") == "None"
    append_rows(path, [_row("a", "h3")])
    assert claim_config(path, "h3") == f"already has results in {path}"

"""The terminal tables: a run's rows with their intervals, and the compact end-of-sweep summary."""

import pandas as pd

from clipbench.results.csv_store import RESULT_COLUMNS
from clipbench.results.table import SUMMARY_COLUMNS, format_table, sweep_summary, with_intervals


def _rows(run_id, alpha, skipped=0.0, config="falip", **kw):
    base = dict.fromkeys(RESULT_COLUMNS, "")
    base.update(run_id=run_id, task="rec", dataset="refcoco", split="val", model_arch="toyclip", method="falip",
                method_params=f'{{"alpha": {alpha}, "config": "{config}", "sigma": 100.0}}', task_params='{"name": "rec"}',
                dataset_params='{"split": "val"}', **kw)
    return [base | {"metric": "accuracy", "value": 0.5 + alpha, "ci_low": 0.45 + alpha, "ci_high": 0.55 + alpha},
            base | {"metric": "skipped", "value": skipped}]


def test_run_table_shows_value_with_its_interval():
    rows = _rows("a", 0.1)
    text = format_table(with_intervals(rows), SUMMARY_COLUMNS)
    assert "0.6000 [0.5500, 0.6500]" in text


def test_sweep_summary_is_one_row_per_run_with_the_differing_settings():
    frame = pd.DataFrame(_rows("a", 0.1, config="falip_subtract") + _rows("b", 0.4, config="falip_subtract"))
    text = sweep_summary(frame)
    body = [line for line in text.splitlines() if line.startswith("| refcoco")]
    assert len(body) == 2
    assert "alpha=0.1" in body[0] and "alpha=0.4" in body[1] and "sigma" not in text  # only what differs
    assert "falip_subtract" in body[0] and "skipped" not in text  # config name; no all-zero skipped column
    assert "0.6000 [0.5500, 0.6500]" in body[0]
    with_skips = sweep_summary(pd.DataFrame(_rows("a", 0.1) + _rows("b", 0.4, skipped=3.0)))
    run_b = next(line for line in with_skips.splitlines() if "alpha=0.4" in line)
    assert "skipped" in with_skips and run_b.rstrip(" |").endswith("3")


def test_run_table_layout_numbers_right_text_left():
    rows = [
        {"metric": "accuracy", "value": "0.9537 [0.9325, 0.9712]", "n": 800, "items_per_s": 886.014, "peak_mem_mb": 1078.4},
        {"metric": "skipped", "value": 0.0, "n": 800, "items_per_s": 1370.0, "peak_mem_mb": float("nan")},
        {"metric": "length", "value": -3, "n": None},
    ]
    expected = """\
+----------+-------------------------+-----+-------------+-------------+
| metric   | value                   | n   | items_per_s | peak_mem_mb |
+----------+-------------------------+-----+-------------+-------------+
| accuracy | 0.9537 [0.9325, 0.9712] | 800 |    886.0140 |      1078.4 |
| skipped  |                  0.0000 | 800 |      1370.0 |             |
| length   |                      -3 |     |             |             |
+----------+-------------------------+-----+-------------+-------------+"""
    assert format_table(rows, ["metric", "value", "n", "items_per_s", "peak_mem_mb"]) == expected
    assert format_table([], ["metric", "n"]) == "+--------+---+\n| metric | n |\n+--------+---+\n+--------+---+"


def test_results_package_does_not_import_the_report_package():
    import ast
    from pathlib import Path

    import clipbench.results

    for path in Path(clipbench.results.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "clipbench.report" or n.startswith("clipbench.report.") for n in names), path.name

"""Rows are never lost: the CSV is written before W&B, a bad results_csv stops before any work, rows carry their settings."""

import json

import pandas as pd
import pytest
from conftest import base_args, run_cli
from helpers import compose_config, tmp_overrides

from clipbench.errors import ConfigError
from clipbench.runner import run


def _cfg(tmp_path, cifar_root, *extra):
    return compose_config(tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=4", *extra))


@pytest.mark.parametrize("logger", ["both", "wandb"])
def test_csv_rows_land_before_wandb_is_called(tmp_path, cifar_root, monkeypatch, logger):
    from clipbench.results import wandb_logger

    seen = []

    def killed_during_wandb(*args, **kwargs):  # W&B hanging until the job is killed
        path = tmp_path / "results.csv"
        seen.append(len(pd.read_csv(path)) if path.exists() else 0)
        raise KeyboardInterrupt

    monkeypatch.setattr(wandb_logger, "log_run", killed_during_wandb)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path, cifar_root, f"logger={logger}"), tmp_path / "run")
    assert seen == [3]  # every metric row (4 classes: no top5) was in the CSV when W&B started
    assert len(pd.read_csv(tmp_path / "results.csv")) == 3


def test_bad_results_csv_stops_before_any_work(tmp_path, cifar_root, monkeypatch):
    import clipbench.models

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before results_csv was checked")

    monkeypatch.setattr(clipbench.models, "load_model", no_work)
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("x,y\n1,2\n")
    (tmp_path / "a_dir").mkdir()
    cases = [
        (tmp_path / "a_dir", "false", "is a directory"),
        (foreign, "false", "not a clipbench results file"),
        (foreign, "true", "not a clipbench results file"),
    ]
    for path, resume, message in cases:
        cfg = _cfg(tmp_path, cifar_root, f"results_csv={path}", f"resume={resume}")
        with pytest.raises(ConfigError, match=message):
            run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # not even config.yaml was written
    assert foreign.read_text() == "x,y\n1,2\n"


def test_foreign_results_csv_with_resume_is_one_line_from_the_cli(tmp_path, cifar_root):
    foreign = tmp_path / "results.csv"  # where base_args points results_csv
    foreign.write_text("x,y\n1,2\n")
    proc = run_cli(*base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "resume=true"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and errors[0].startswith("error: results_csv: ") and "not a clipbench results file" in errors[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_rows_name_the_method_config_chosen(tmp_path, cifar_root):
    run_cli(*base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=4",
                       "method=red_circle_falip"), check=True)
    frame = pd.read_csv(tmp_path / "results.csv")
    params = [json.loads(p) for p in frame.method_params]
    assert set(frame.method) == {"red_circle"}  # the method column keeps the method's name
    assert {p["config"] for p in params} == {"red_circle_falip"} and {p["variant"] for p in params} == {"falip"}
    assert {json.loads(t)["name"] for t in frame.task_params} == {"zeroshot"}
    assert {json.loads(d)["root"] for d in frame.dataset_params} == {str(cifar_root)}


def test_resume_matches_what_is_measured_not_the_config_name(tmp_path, cifar_root):
    first = run(_cfg(tmp_path, cifar_root, "method=red_circle_falip"), tmp_path / "run", method_config="red_circle_falip")
    assert {json.loads(r["method_params"])["config"] for r in first} == {"red_circle_falip"}
    same = _cfg(tmp_path, cifar_root, "method=red_circle", "method.variant=falip", "resume=true")  # the same settings
    assert run(same, tmp_path / "run2", method_config="red_circle") == []
    other = _cfg(tmp_path, cifar_root, "method=red_circle", "resume=true")
    assert len(run(other, tmp_path / "run3", method_config="red_circle")) == 3
    assert pd.read_csv(tmp_path / "results.csv").config_hash.nunique() == 2

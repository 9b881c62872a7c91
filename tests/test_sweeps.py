"""Sweeps that survive real use: parallel launchers, interruption and resume."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
from conftest import ROOT, base_args, run_cli


def test_parallel_joblib_sweep_lands_every_row_intact(tmp_path, cifar_root):
    run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=8", "seed=0,1"), check=True)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert sorted(frame.seed.unique()) == [0, 1]
    assert len(frame) == 8  # 4 metric rows per job
    for _, rows in frame.groupby("run_id"):  # each job's rows arrived as one block
        assert rows.index.max() - rows.index.min() == len(rows) - 1


def test_interrupted_sweep_resumes_only_what_is_missing(tmp_path, cifar_root):
    args = ["-m", *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "resume=true", "seed=0,1,2,3")]
    results = tmp_path / "results.csv"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "clipbench", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and pd.read_csv(results).seed.nunique() >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = set(pd.read_csv(results).config_hash)
    assert 1 <= len(done_before) <= 4
    relaunch = run_cli(*args, check=True)
    frame = pd.read_csv(results)
    assert sorted(frame.seed.unique()) == [0, 1, 2, 3]
    assert (frame.groupby("config_hash").run_id.nunique() == 1).all()  # nothing evaluated twice
    assert relaunch.stdout.count("skipping") == len(done_before)


def test_slurm_launcher_preset_composes():
    from hydra import compose, initialize_config_dir

    from clipbench.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 240)


def test_optuna_search_maximises_the_optimized_metric(tmp_path, cifar_root):
    import yaml

    run_cli("-m", "hparams_search=falip_heads", "method=falip", "optimized_metric=top1", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.max_failure_rate=1.0",
            *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=6"), check=True)
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    frame = pd.read_csv(tmp_path / "results.csv")
    top1 = frame[frame.metric == "top1"].value
    assert len(top1) >= 1 and best["best_value"] == top1.max()
    assert {"method.alpha", "method.rows"} <= set(best["best_params"])


def test_optimized_value_picks_the_named_metric():
    import pytest

    from clipbench.cli import optimized_value
    from clipbench.errors import ClipbenchError

    rows = [{"metric": "top1", "value": 0.25}, {"metric": "skipped", "value": 0.0}]
    assert optimized_value("top1", rows) == 0.25 and optimized_value(None, rows) is None
    with pytest.raises(ClipbenchError, match="accuracy"):
        optimized_value("accuracy", rows)

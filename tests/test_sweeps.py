"""Sweeps that survive real use: parallel launchers, interruption and resume."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, base_args, run_cli

LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds worker processes in /proc")


def test_parallel_joblib_sweep_lands_every_row_intact(tmp_path, cifar_root):
    run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=8", "seed=0,1"), check=True)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert sorted(frame.seed.unique()) == [0, 1]
    assert len(frame) == 6  # 3 metric rows per job (4 classes: no top5)
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

    proc = run_cli("-m", "hparams_search=falip_heads", "method=falip", "optimized_metric=top1", "hydra.sweeper.n_trials=3",
                   "hydra.sweeper.max_failure_rate=1.0",
                   *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=6"))
    failures = tmp_path / "sweep" / "failures.csv"
    failed = len(pd.read_csv(failures)) if failures.exists() else 0
    assert proc.returncode == (1 if failed else 0), proc.stderr  # failed trials make the sweep exit 1
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


def test_failed_jobs_make_the_sweep_exit_nonzero_and_a_retry_clears_them(tmp_path, cifar_root):
    later = tmp_path / "later"  # the data arrives after the first attempt
    args = ["-m", *base_args(tmp_path, "dataset.check_integrity=false", "limit=4", f"dataset.root={cifar_root},{later}")]
    failures = tmp_path / "sweep" / "failures.csv"
    first = run_cli(*args)
    assert first.returncode == 1 and "1 job(s) failed" in first.stdout, first.stderr
    assert len(pd.read_csv(failures)) == 1 and len(pd.read_csv(tmp_path / "results.csv")) == 3  # the other job ran
    shutil.copytree(cifar_root, later)
    retry = run_cli(*args, "resume=true")
    assert retry.returncode == 0, retry.stderr
    assert len(pd.read_csv(failures)) == 0  # the job succeeded on retry: no longer listed
    assert pd.read_csv(tmp_path / "results.csv").config_hash.nunique() == 2


def test_submitit_local_sweep_with_a_failed_job_exits_nonzero(tmp_path, cifar_root):
    proc = run_cli("-m", "hydra/launcher=submitit_local",
                   *base_args(tmp_path, "dataset.check_integrity=false", "limit=4", f"dataset.root={cifar_root},/missing"))
    assert proc.returncode == 1 and "1 job(s) failed" in proc.stdout, proc.stderr
    assert len(pd.read_csv(tmp_path / "results.csv")) == 3  # top1, mean per-class recall, skipped


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _job_workers(pid: int) -> list[int]:
    """Worker processes running jobs (not multiprocessing's resource tracker)."""
    workers = []
    for kid in _children(pid):
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline or b"loky" in cmdline and b"resource_tracker" not in cmdline:
            workers.append(kid)
    return workers


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _popen_cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "clipbench", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _first_workers(proc: subprocess.Popen, count: int) -> list[int]:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(workers := _job_workers(proc.pid)) >= count:
            return workers
        time.sleep(0.02)
    return []


@LINUX_ONLY
def test_a_killed_joblib_worker_is_recorded_and_the_sweep_goes_on(tmp_path, cifar_root):
    proc = _popen_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                      *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=4", "seed=0,1,2"))
    try:
        workers = _first_workers(proc, 1)
        assert workers, "no job worker process appeared"
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1 and "1 job(s) failed" in out, err
    failures = pd.read_csv(tmp_path / "sweep" / "failures.csv")
    assert len(failures) == 1 and "signal 9 (SIGKILL)" in failures.error[0]
    lost_seed = int(failures.overrides[0].split("seed=")[1].split()[0])
    frame = pd.read_csv(tmp_path / "results.csv")
    assert sorted(frame.seed.unique()) == sorted({0, 1, 2} - {lost_seed})  # the other jobs ran to the end


@LINUX_ONLY
def test_joblib_workers_end_with_their_parent(tmp_path, cifar_root):
    results = tmp_path / "results.csv"
    proc = _popen_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                      *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=4", "seed=0,1"))
    workers: list[int] = []
    try:
        workers = _first_workers(proc, 2)
        assert workers, "no job worker processes appeared"
        deadline = time.time() + 300
        while time.time() < deadline and not list((tmp_path / "sweep").glob("*/.hydra")):
            time.sleep(0.02)  # until a job has started in its worker
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        deadline = time.time() + 300
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "workers outlived the killed sweep"
    finally:
        for worker in filter(_alive, workers):
            os.kill(worker, signal.SIGKILL)
    assert not results.exists() or len(pd.read_csv(results)) == 0  # no job appended rows after the sweep was killed


def test_launcher_helpers_follow_joblib_and_errors_cross_processes():
    import pickle

    import cloudpickle

    from clipbench.errors import ConfigError
    from hydra_plugins.clipbench_sweeper.process_launcher import worker_count

    assert worker_count(3) == 3 and worker_count(-1) == (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="n_jobs=0"):
        worker_count(0)
    error = pickle.loads(cloudpickle.dumps(ConfigError("method.layers", "out of range")))  # a failed trial's return
    assert isinstance(error, ConfigError) and error.key == "method.layers" and str(error) == "method.layers: out of range"

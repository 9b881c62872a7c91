"""A parallel sweep on one node: one GPU per worker, workers that keep their model between jobs, per-job peak memory."""

import re

import pandas as pd
import pytest
from conftest import base_args, run_cli

RAN_WITH = re.compile(r"#(\d+) ran with CUDA_VISIBLE_DEVICES=(\S+)")
MODEL_LOADS = "model clipbench-test-vit, weights"


def _parallel_sweep(tmp_path, cifar_root, limits: str, *launcher: str):
    """Jobs that differ in ``limit`` only, so one loaded model (random init, one seed) serves them all."""
    proc = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *launcher,
                   *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", f"limit={limits}"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def _views(output: str) -> dict[int, str]:
    """Each job's CUDA_VISIBLE_DEVICES, as its worker saw it."""
    return {int(job): visible for job, visible in RAN_WITH.findall(output)}


def test_each_worker_gets_one_listed_gpu_and_keeps_its_model_between_jobs(tmp_path, cifar_root):
    output = _parallel_sweep(tmp_path, cifar_root, "4,5,6,7", "hydra.launcher.devices=[3,5]")
    views = _views(output)
    assert sorted(views) == [0, 1, 2, 3] and set(views.values()) == {"3", "5"}, output[-3000:]  # a free worker takes the next job
    assert output.count(MODEL_LOADS) == 2  # one load per worker, not per job
    assert sorted(pd.read_csv(tmp_path / "results.csv").n.unique()) == [4, 5, 6, 7]


def test_without_a_list_the_workers_split_the_gpus_the_sweep_sees(tmp_path, cifar_root, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b")
    views = _views(_parallel_sweep(tmp_path, cifar_root, "4,5"))
    assert sorted(views.values()) == ["GPU-a", "GPU-b"]


def test_worker_environments_round_robin_and_split_the_cpu_threads(monkeypatch):
    from hydra_plugins.clipbench_sweeper.process_launcher import worker_envs

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible: nothing to assign
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert worker_envs(None, 2) == [{"OMP_NUM_THREADS": "4"}] * 2
    envs = worker_envs([0, 1], 3)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["0", "1", "0"]
    assert {env["OMP_NUM_THREADS"] for env in envs} == {"2"}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice stands
    assert worker_envs([7], 2) == [{"CUDA_VISIBLE_DEVICES": "7"}] * 2


def test_a_small_job_after_a_large_one_reports_its_own_peak():
    import torch

    from clipbench.runtime import peak_memory_mb, reset_peak_memory

    cpu = torch.device("cpu")

    def job(mib: int) -> float:
        reset_peak_memory(cpu)  # as the runner does before each job
        block = torch.ones(mib * 2**18)  # float32, every page touched
        del block
        return peak_memory_mb(cpu)

    large, small = job(400), job(8)
    assert large - small > 300, (large, small)
    assert small == pytest.approx(job(8), abs=50)  # the same job measures the same again


def test_a_search_that_launches_trial_by_trial_keeps_its_worker(tmp_path, cifar_root):
    proc = run_cli("-m", "hparams_search=falip_heads", "method=falip", "optimized_metric=top1", "hydra.sweeper.n_trials=3",
                   "hydra.sweeper.max_failure_rate=1.0", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1",
                   *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=6"))
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: a trial's config failed, as in a sequential search
    assert len(pd.read_csv(tmp_path / "results.csv").run_id.unique()) >= 2
    assert (proc.stdout + proc.stderr).count(MODEL_LOADS) == 1  # one worker, one model load, for every trial


def test_a_listed_gpu_the_node_lacks_and_a_bad_worker_count_are_one_line_errors(tmp_path, monkeypatch):
    import torch

    from clipbench.errors import ConfigError
    from hydra_plugins.clipbench_sweeper.process_launcher import worker_envs

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in worker_envs([1, 0], 2)] == ["1", "0"]
    with pytest.raises(ConfigError, match="GPU 3 is not on this node; its GPUs are 0..1"):
        worker_envs([0, 3], 2)  # its worker would see no GPU and run on the CPU
    proc = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: hydra.launcher.n_jobs=0 is not allowed; use a positive count or -1 (one per CPU)"

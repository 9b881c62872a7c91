"""One evaluation sharded over 2 gloo ranks on CPU gives exactly the rows, outcomes and predictions of one
process, for every task; a failing rank ends the run on every rank with one line and writes nothing."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import compose_config

from clipbench.distributed import Ranks, index_batches
from clipbench.errors import ClipbenchError
from clipbench.models import factory, text_cache
from clipbench.results.csv_store import read_results

TASKS = ("zeroshot", "retrieval", "rec", "region_cls", "pointcloud", "clipscore")
COMPARED = ["task", "metric", "value", "n", "ci_low", "ci_high", "config_hash"]


def _overrides(toy_root: Path, out: Path, *job: str) -> list[str]:
    # batch_size=4 and limit=10: three batches, so rank 0 evaluates two and rank 1 one (uneven shards)
    return [f"paths.toy={toy_root}", "device=cpu", "num_workers=0", "progress=false", "batch_size=4",
            "save_predictions=true", f"results_csv={out / 'results.csv'}", f"cache_dir={out / 'cache'}", *job]


def _toy(task: str, limit: int) -> tuple[str, ...]:
    return f"+toy={task}", f"limit={limit}"


def _compared_jobs(suite: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(name, overrides): every toy task; a rank with no sample (limit=1); clip_benchmark's webdataset shards
    (12 samples in shards of 5, so batches straddle shards), single- and multi-label."""
    wds = [(f"wds_{name}", ("task=zeroshot", "dataset=clip_benchmark", f"dataset.name=wds/{name}",
                            f"dataset.root={suite}")) for name in WDS_SUITE]
    return [(task, _toy(task, 10)) for task in TASKS] + [("zeroshot_one_sample", _toy("zeroshot", 1))] + wds


WDS_SUITE = {"cars": 7, "voc2007_multilabel": 5}
FAILING = ("fails_on_rank_1", _toy("zeroshot", 9))  # last: a failed run leaves no process group behind it


def _run_jobs(out: Path, toy_root: Path, jobs, rank: int = 0) -> None:
    """Each job in this process; its error, if any, is kept in ``<job>.error.<rank>`` (a rank that raised would
    make torch.multiprocessing terminate the others before they report theirs)."""
    from clipbench.runner import run

    for name, job in jobs:
        if name == FAILING[0] and rank == 1:
            _fail_reading_images()
        try:
            run(compose_config(_overrides(toy_root, out, *job)), out / name)
        except Exception as exc:
            prefix = "" if isinstance(exc, ClipbenchError) else f"{type(exc).__name__}: "
            (out / f"{name}.error.{rank}").write_text(prefix + str(exc))


def _fail_reading_images() -> None:
    from clipbench.data.classification import Cifar100

    def unreadable(self, index):
        raise ValueError(f"boom at {index}")

    Cifar100.image = unreadable


def _rank(rank: int, world: int, port: int, out: Path, toy_root: Path, jobs) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # as the reference run: the same kernels on the same batches
    _run_jobs(out, toy_root, jobs, rank)


def _spawn(world: int, out: Path, toy_root: Path, jobs) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(world, port, out, toy_root, jobs), nprocs=world)


@pytest.fixture(scope="module")
def single_and_sharded(toy_root, tmp_path_factory):
    from clipbench.toy.writers.catalogue import write_generated_suite

    suite = write_generated_suite(tmp_path_factory.mktemp("suite"), WDS_SUITE, n=12, seed=3, shard_size=5)
    jobs = _compared_jobs(suite)
    single, sharded = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("sharded")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # the reference computes everything with the ranks' one thread: drop the loaded models and text features
    # an earlier test of this process computed with more threads (they can differ in the last bit)
    factory._MODEL_CACHE.clear()
    text_cache._MEMORY.clear()
    try:
        _run_jobs(single, toy_root, jobs)
    finally:
        torch.set_num_threads(threads)
    _spawn(2, sharded, toy_root, [*jobs, FAILING])
    return single, sharded, [name for name, _ in jobs]


def test_two_ranks_write_the_rows_of_one_process(single_and_sharded):
    single, sharded, _ = single_and_sharded
    errors = [p for p in [*single.glob("*.error.*"), *sharded.glob("*.error.*")] if not p.name.startswith(FAILING[0])]
    assert not errors, [p.read_text() for p in errors]
    one, two = read_results(single / "results.csv"), read_results(sharded / "results.csv")
    assert sorted(set(two["task"])) == sorted(TASKS) and {"wds/cars", "wds/voc2007_multilabel"} <= set(two["dataset"])
    assert one[COMPARED].reset_index(drop=True).equals(two[COMPARED].reset_index(drop=True))
    assert set(one["world_size"]) == {1} and set(two["world_size"]) == {2}
    assert two["ci_low"].notna().any()


def test_two_ranks_save_the_outcomes_and_predictions_of_one_process(single_and_sharded):
    single, sharded, jobs = single_and_sharded
    for job in jobs:
        _same_run_files(single / job, sharded / job, job)


def _same_run_files(single: Path, sharded: Path, job: str) -> None:
    a, b = np.load(single / "outcomes.npz", allow_pickle=True), np.load(sharded / "outcomes.npz", allow_pickle=True)
    assert sorted(a.files) == sorted(b.files), job
    for key in a.files:
        if key != "run_id":
            assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), (job, key)
    predictions = [run / "predictions.csv" for run in (single, sharded)]
    assert [p.is_file() for p in predictions] == [job != "retrieval"] * 2, job  # retrieval writes none
    if job != "retrieval":
        assert predictions[0].read_text() == predictions[1].read_text(), job
    metrics = json.loads((sharded / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["n"] == json.loads((single / "metrics.json").read_text())["n"], job


def test_only_rank_0_writes(single_and_sharded):
    _, sharded, jobs = single_and_sharded
    runs = sorted(p.name for p in sharded.iterdir() if p.is_dir() and p.name != "cache")
    assert runs == sorted([*jobs, FAILING[0]])  # rank 1 made no run directory of its own
    rows = read_results(sharded / "results.csv")
    assert len(rows) == len(set(zip(rows["config_hash"], rows["metric"])))  # one set of rows per run


def test_a_failing_rank_ends_the_run_on_every_rank_and_resume_reruns_it(single_and_sharded, toy_root):
    _, sharded, _ = single_and_sharded
    name, job = FAILING
    assert (sharded / f"{name}.error.1").read_text().startswith("ValueError: boom at")  # its own error
    seen_by_rank_0 = (sharded / f"{name}.error.0").read_text()
    assert seen_by_rank_0.startswith("rank 1 failed: ValueError: boom at") and "\n" not in seen_by_rank_0
    assert not (sharded / name / "metrics.json").exists()
    hashes = set(read_results(sharded / "results.csv")["config_hash"])
    from clipbench.runner import run

    rows = run(compose_config(_overrides(toy_root, sharded, *job, "resume=true")), sharded / "again")
    assert rows and rows[0]["world_size"] == 1 and rows[0]["config_hash"] not in hashes  # no row was written


def test_shares_are_contiguous_blocks_in_rank_order():
    batches = index_batches(10, 4)
    assert [list(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for world in (1, 2, 3, 5):
        shares = [Ranks(r, world).share(batches) for r in range(world)]
        assert [b for share in shares for b in share] == batches
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


class _TwoRanks:
    world_size = 2

    def __init__(self, values):
        self.values = values

    def each(self, _):
        return self.values


def test_throughput_is_summed_over_ranks_and_peak_memory_is_the_largest():
    from types import SimpleNamespace

    from clipbench.runner import run_usage

    result = SimpleNamespace(throughput=SimpleNamespace(items=6), n=9)
    usage = run_usage(_TwoRanks([(6, 2.0, 100.0), (3, 1.5, 300.0)]), torch.device("cpu"), result, 2.0)
    assert (usage.items_per_s, usage.peak_mem_mb, usage.world_size) == (6 / 2.0 + 3 / 1.5, 300.0, 2)


def test_scaling_benchmark_runs_quick(toy_root):
    """torchrun itself: 1 and 2 ranks of toy zero-shot give identical rows (the benchmark checks), and a table."""
    import subprocess
    import sys

    benchmark = Path(__file__).resolve().parent.parent / "benchmarks" / "distributed_scaling.py"
    proc = subprocess.run([sys.executable, str(benchmark), "--quick", "--tasks", "zeroshot", "--toy-root", str(toy_root)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("zeroshot"))
    assert row[1] == "64" and float(row[4]) > 0  # n, speedup


def test_a_submitit_slurm_job_with_several_tasks_gives_the_ranks(monkeypatch):
    from clipbench.distributed import launched_ranks

    exported = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    for key in exported:  # restored (removed) after the test: export() sets them in os.environ
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "123", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2",
             "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert launched_ranks() == launched_ranks() == Ranks(rank=3, world_size=4, local_rank=1)  # asked twice: no clash
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["WORLD_SIZE"] == "4"  # the rendezvous for env://
    monkeypatch.setenv("SLURM_NTASKS", "1")
    for key in exported:
        monkeypatch.delenv(key)
    assert launched_ranks() == Ranks()


@pytest.mark.parametrize("task", ["linear_probe", "compositionality"])
def test_a_task_that_does_not_shard_is_refused_on_several_ranks(tmp_path, toy_root, monkeypatch, task):
    """Every rank would evaluate the whole set and the summed throughput would be wrong: one line instead."""
    from clipbench import distributed
    from clipbench.errors import ConfigError
    from clipbench.runner import run

    monkeypatch.setattr(distributed, "join", lambda device: Ranks(rank=0, world_size=2))
    with pytest.raises(ConfigError, match=rf"task={task} is not sharded over ranks"):
        run(compose_config(_overrides(toy_root, tmp_path, f"+toy={task}")), tmp_path / "run")
    assert not (tmp_path / "results.csv").exists()


def test_the_timed_evaluation_starts_after_the_task_module_is_imported(tmp_path, monkeypatch):
    """A task's module is imported on first use (clipbench/registry.py); the run's ``seconds`` (and so items/s)
    must not include that import, nor, on several ranks, the wait for a rank that loaded its model later."""
    import types
    from dataclasses import replace as dc_replace

    from clipbench import runner
    from clipbench.tasks import TASKS

    events: list[str] = []
    (tmp_path / "slow_import_task.py").write_text(
        "import events_log\nevents_log.events.append('import')\n"
        "def evaluate(*args):\n    events_log.events.append('evaluate')\n    return events_log.result\n")
    log = types.ModuleType("events_log")
    log.events = events
    log.result = types.SimpleNamespace(n=1)
    monkeypatch.setitem(sys.modules, "events_log", log)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = dc_replace(TASKS.get("zeroshot"), evaluate=TASKS.lazy("slow_import_task", "evaluate"))
    monkeypatch.setitem(TASKS._entries, "zeroshot", spec)
    clock = runner.time.perf_counter
    monkeypatch.setattr(runner.time, "perf_counter", lambda: events.append("clock") or clock())
    ranks = types.SimpleNamespace(distributed=False, each=lambda value: events.append("ranks meet") or [value])
    v = types.SimpleNamespace(task=types.SimpleNamespace(name="zeroshot"), dataset=None)
    built = types.SimpleNamespace(model=None, dataset=None, method=None, ctx=types.SimpleNamespace(ranks=ranks))
    runner.evaluate(v, built)
    assert events == ["import", "ranks meet", "clock", "evaluate", "clock"]

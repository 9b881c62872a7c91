"""A parallel Hydra launcher in which a dying job costs only itself: ``hydra/launcher=joblib`` in clipbench.

``clipbench`` registers it under joblib's name (:func:`register_as_joblib`), keeping joblib's
``n_jobs`` key. ``n_jobs`` worker processes (joblib's meaning: -1 = one per CPU) live for the whole sweep
and take its jobs one at a time, so the loaded model, built dataset and caches serve every job after a
worker's first (and the trials after the first of a search that launches them one batch at a time).
A worker killed mid-job (out of memory, ``kill -9``) costs only that job: it is recorded
in ``<sweep dir>/failures.csv`` and a new worker takes the remaining jobs; with joblib's shared pool the
whole sweep would end. Workers end with their parent, so a killed sweep leaves no job running that could
still append rows.

Each worker gets one GPU, round robin over ``devices`` (e.g. ``hydra.launcher.devices=[0,1,2,3]``) or else
the GPUs the sweep process sees: its ``CUDA_VISIBLE_DEVICES`` is set before it starts, so torch in the
worker sees that GPU alone and ``device=auto`` means it.
"""

import atexit
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)
PARENT_POLL_S = 0.2
EXIT_GRACE_S = 60.0


class LostJob(RuntimeError):
    """A job whose worker ended before returning (a signal, an exit), or whose return did not come back."""


def worker_count(n_jobs: int) -> int:
    """joblib's rule: n_jobs > 0 as given, -1 all CPUs, -2 all but one, ..."""
    if n_jobs == 0:
        raise ValueError("hydra.launcher.n_jobs=0 is not allowed; use a positive count or -1 (one per CPU)")
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the launcher process is gone (its children are re-parented)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def visible_gpus() -> list[str]:
    """The GPUs this process sees: its ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs), else torch's count."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [entry.strip() for entry in visible.split(",") if entry.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def listed_gpus(devices: Sequence[Any]) -> list[str]:
    """``hydra.launcher.devices`` as ``CUDA_VISIBLE_DEVICES`` entries. On a node whose GPUs torch counts (and
    no ``CUDA_VISIBLE_DEVICES`` renumbers them) an index beyond them is refused: its worker would see no
    GPU and ``device=auto`` would quietly run on the CPU."""
    from clipbench.errors import ConfigError

    gpus = [str(device).strip() for device in devices]
    present = 0 if "CUDA_VISIBLE_DEVICES" in os.environ else len(visible_gpus())
    missing = [gpu for gpu in gpus if present and gpu.isdigit() and int(gpu) >= present]
    if missing:
        raise ConfigError("hydra.launcher.devices", f"GPU {', '.join(missing)} is not on this node; its GPUs are 0..{present - 1}")
    return gpus


def worker_envs(devices: Sequence[Any] | None, workers: int) -> list[dict[str, str]]:
    """Each worker's environment additions: one GPU, round robin over ``devices`` or the visible GPUs.

    CPU threads are split between the workers (unless ``OMP_NUM_THREADS`` is set): each torch would
    otherwise start one thread per core, and ``workers`` of them contend for the same cores."""
    gpus = listed_gpus(devices) if devices else visible_gpus()
    threads = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
    return [{**threads, **({"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {})} for i in range(workers)]


@contextmanager
def _environment(additions: dict[str, str]):
    """``os.environ`` with ``additions`` while a worker is spawned: the child inherits it before importing torch."""
    saved = {key: os.environ.get(key) for key in additions}
    os.environ.update(additions)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _worker(job_conn, result_conn, parent_pid: int) -> None:
    """Read the sweep's shared state once, then run jobs until the launcher closes the job pipe."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    _exit_with_parent(parent_pid)
    hydra_context, config, task_function, singleton_state = cloudpickle.loads(job_conn.recv_bytes())
    while True:
        try:
            idx, overrides = cloudpickle.loads(job_conn.recv_bytes())
        except EOFError:
            break
        ret = execute_job(idx, overrides, hydra_context, config, task_function, singleton_state)
        result_conn.send_bytes(cloudpickle.dumps((ret, os.environ.get("CUDA_VISIBLE_DEVICES"))))
    job_conn.close()
    result_conn.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
    return f"exit code {exitcode}"


def _send(conn, *payloads: bytes) -> None:
    """A worker that died before reading makes this fail instead of block (the launcher holds no read
    end of the pipe); its result pipe's EOF then records the job."""
    try:
        for payload in payloads:
            conn.send_bytes(payload)
    except OSError:
        pass


@dataclass
class Worker:
    """A worker process, the launcher's ends of its two pipes, its environment, the thread that sent its
    first job, and the job it is running."""

    proc: Any
    jobs: Any
    results: Any
    env: dict[str, str]
    sender: threading.Thread
    idx: int


class ProcessLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, devices: Sequence[Any] | None = None) -> None:
        self.n_jobs = n_jobs
        self.devices = list(devices) if devices else None
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._idle: list[Worker] = []  # kept for the next launch of a sweeper that launches in batches (optuna)
        atexit.register(self._end_idle)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        count, envs = self._settings(len(job_overrides))
        log.info(f"Launching {len(job_overrides)} jobs, {count} at a time, sweep output dir: {sweep_dir}")
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
        self._shared = cloudpickle.dumps((self.hydra_context, self.config, self.task_function, Singleton.get_state()))
        self._overrides, self._first = job_overrides, initial_job_idx
        self._pending = list(range(len(job_overrides)))
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        busy = {worker.results: worker for worker in self._workers(envs)}
        while busy:
            for conn in wait(list(busy)):
                worker = busy.pop(conn)
                idx = worker.idx
                returns[idx], lost = self._result(worker)
                if lost is not None:
                    returns[idx] = self._record_lost(sweep_dir, idx, lost)
                    if self._pending:
                        worker = self._start(worker.env)  # the same GPU for the jobs still to run
                        busy[worker.results] = worker
                elif self._next_job(worker):
                    busy[worker.results] = worker
                else:
                    self._idle.append(worker)
        return returns

    def _settings(self, jobs: int) -> tuple[int, list[dict[str, str]]]:
        """How many workers, and their environments; a bad ``n_jobs`` or ``devices`` ends the sweep in one line."""
        from clipbench.errors import ClipbenchError

        try:
            count = min(worker_count(self.n_jobs), jobs)
            return count, worker_envs(self.devices, count)
        except (ValueError, ClipbenchError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    def _workers(self, envs: list[dict[str, str]]) -> list[Worker]:
        """One worker per environment, each handed its first job: the previous launch's still alive, then new ones."""
        count = len(envs)
        for worker in [worker for worker in self._idle if not worker.proc.is_alive()]:  # ended while idle
            self._idle.remove(worker)
            self._stop(worker)
        reused, self._idle = self._idle[:count], self._idle[count:]
        reused = [worker for worker in reused if self._next_job(worker)]
        return reused + [self._start(env) for env in envs[len(reused):]]

    def _start(self, env: dict[str, str]) -> Worker:
        """A worker spawned with ``env`` and handed the sweep's shared state and the next pending job.

        A thread sends them: the shared state can exceed a pipe's buffer, and the worker reads it only
        once its imports are done, so the other workers start meanwhile."""
        ctx = mp.get_context("spawn")
        job_receive, job_send = ctx.Pipe(duplex=False)
        result_receive, result_send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(job_receive, result_send, os.getpid()), daemon=True)
        with _environment(env):
            proc.start()
        job_receive.close()
        result_send.close()
        idx = self._pending.pop(0)
        sender = threading.Thread(target=_send, args=(job_send, self._shared, self._job(idx)), daemon=True)
        sender.start()
        return Worker(proc, job_send, result_receive, env, sender, idx)

    def _next_job(self, worker: Worker) -> bool:
        """Hand ``worker`` the next pending job; False when none is left."""
        if not self._pending:
            return False
        worker.idx = self._pending.pop(0)
        _send(worker.jobs, self._job(worker.idx))
        return True

    def _job(self, idx: int) -> bytes:
        return cloudpickle.dumps((self._first + idx, list(self._overrides[idx])))

    def _result(self, worker: Worker) -> tuple[JobReturn | None, LostJob | None]:
        """The job's return, or why it was lost (its worker died, or its return did not unpickle)."""
        job = self._first + worker.idx
        try:
            ret, visible = cloudpickle.loads(worker.results.recv_bytes())
        except EOFError:
            self._stop(worker)
            return None, LostJob(f"job {job}'s worker process ended by {_death(worker.proc.exitcode)} before it finished")
        except Exception as exc:  # a return value that does not unpickle
            self._stop(worker)
            return None, LostJob(f"job {job}'s result could not be read back ({type(exc).__name__}: {exc})")
        if visible is not None:
            log.info(f"\t#{job} ran with CUDA_VISIBLE_DEVICES={visible}")
        return ret, None

    def _end_idle(self) -> None:
        for worker in self._idle:
            self._stop(worker)
        self._idle = []

    @staticmethod
    def _stop(worker: Worker) -> None:
        """Close the job pipe (the worker's loop ends) and reap it; one that lingers is killed."""
        worker.sender.join()  # done: the worker read its first job, or died and failed the write
        worker.jobs.close()
        worker.proc.join(timeout=EXIT_GRACE_S)
        if worker.proc.is_alive():  # a lingering thread keeps it from exiting
            worker.proc.kill()
            worker.proc.join()
        worker.results.close()

    def _record_lost(self, sweep_dir: Path, idx: int, lost: LostJob) -> JobReturn:
        from clipbench.results.failures import record_failure

        log.error(str(lost))
        record_failure(sweep_dir, self._first + idx, " ".join(self._overrides[idx]), f"{type(lost).__name__}: {lost}")
        return self._lost(self._overrides[idx], lost)

    def _lost(self, overrides: Sequence[str], error: Exception) -> JobReturn:
        """A lost job: failed for a hyper-parameter sweeper (as the app raises there), else an empty return."""
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        if self.config.get("optimized_metric"):
            ret.status, ret.return_value = JobStatus.FAILED, error
        return ret


@dataclass
class ProcessLauncherConf:
    _target_: str = "hydra_plugins.clipbench_sweeper.process_launcher.ProcessLauncher"
    n_jobs: int = -1  # jobs at once; -1 = one per CPU
    devices: list[str] | None = None  # GPUs, round robin over the workers; null = the visible ones


def register_as_joblib() -> None:
    """Make ``hydra/launcher=joblib`` this launcher (after plugin discovery has stored joblib's own entry)."""
    Plugins.instance()
    ConfigStore.instance().store(group="hydra/launcher", name="joblib", node=ProcessLauncherConf, provider="clipbench")

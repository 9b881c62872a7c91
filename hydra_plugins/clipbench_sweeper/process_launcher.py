"""A parallel Hydra launcher in which a dying job costs only itself: ``hydra/launcher=joblib`` in clipbench.

``clipbench`` registers it under joblib's name (:func:`register_as_joblib`), keeping joblib's
``n_jobs`` key. Each job runs in its own worker process, ``n_jobs`` at a time (joblib's meaning: -1 = one per CPU).
A worker killed mid-job (out of memory, ``kill -9``) is recorded in ``<sweep dir>/failures.csv`` and
the other jobs go on; with joblib's shared pool the whole sweep would end. Workers end with their
parent, so a killed sweep leaves no job running that could still append rows.
"""

import logging
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Sequence
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


def _worker(payload_conn, conn, parent_pid: int) -> None:
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    _exit_with_parent(parent_pid)
    payload = payload_conn.recv_bytes()
    payload_conn.close()
    ret = execute_job(*cloudpickle.loads(payload))
    conn.send_bytes(cloudpickle.dumps(ret))
    conn.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
    return f"exit code {exitcode}"


class ProcessLauncher(Launcher):
    def __init__(self, n_jobs: int = -1) -> None:
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from clipbench.results.failures import record_failure

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        workers = worker_count(self.n_jobs)
        log.info(f"Launching {len(job_overrides)} jobs, {workers} at a time, sweep output dir: {sweep_dir}")
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
        singleton_state = Singleton.get_state()
        ctx = mp.get_context("spawn")
        pending = list(enumerate(job_overrides))
        running: dict[Any, tuple[int, Any]] = {}  # receiving end -> (index, process)
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        while pending or running:
            while pending and len(running) < workers:
                idx, overrides = pending.pop(0)
                payload = cloudpickle.dumps((initial_job_idx + idx, list(overrides), self.hydra_context, self.config,
                                             self.task_function, singleton_state))
                # the job goes through its own pipe, not the spawn arguments: the parent holds no read end
                # of it, so a worker that dies before reading makes the write fail instead of blocking
                payload_receive, payload_send = ctx.Pipe(duplex=False)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(payload_receive, send, os.getpid()), daemon=True)
                proc.start()
                send.close()
                payload_receive.close()
                try:
                    payload_send.send_bytes(payload)
                except OSError:  # the worker died before reading its job; its result pipe's EOF records it
                    pass
                finally:
                    payload_send.close()
                running[receive] = (idx, proc)
            for receive in wait(list(running)):
                idx, proc = running.pop(receive)
                job = initial_job_idx + idx
                try:
                    returns[idx] = cloudpickle.loads(receive.recv_bytes())
                except EOFError:
                    proc.join(timeout=EXIT_GRACE_S)
                    lost = LostJob(f"job {job}'s worker process ended by {_death(proc.exitcode)} before it finished")
                except Exception as exc:  # a return value that does not unpickle
                    lost = LostJob(f"job {job}'s result could not be read back ({type(exc).__name__}: {exc})")
                else:
                    lost = None
                finally:
                    receive.close()
                proc.join(timeout=EXIT_GRACE_S)
                if proc.is_alive():  # returned, but a lingering thread keeps it from exiting
                    proc.kill()
                    proc.join()
                if lost is not None:
                    log.error(str(lost))
                    record_failure(sweep_dir, job, " ".join(job_overrides[idx]), f"{type(lost).__name__}: {lost}")
                    returns[idx] = self._lost(job_overrides[idx], lost)
        return returns

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


def register_as_joblib() -> None:
    """Make ``hydra/launcher=joblib`` this launcher (after plugin discovery has stored joblib's own entry)."""
    Plugins.instance()
    ConfigStore.instance().store(group="hydra/launcher", name="joblib", node=ProcessLauncherConf, provider="clipbench")

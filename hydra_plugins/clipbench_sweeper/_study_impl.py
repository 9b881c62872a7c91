"""The study sweeper's implementation (imports optuna; hydra_plugins/clipbench_sweeper/optuna_study.py says what it does)."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

log = logging.getLogger(__name__)
DEFAULT_STUDY = "clipbench"
STORAGE_FILE = "optuna.db"
# overrides that change where or how fast a trial runs, not what it measures: a study resumes across them
RUN_CONTROL = ("device", "batch_size", "num_workers", "progress", "cache_dir", "results_csv", "resume", "logger",
               "save_predictions")
JOB_LINE = re.compile(r"^\t#\d+ : ")  # a launcher's per-job override list (the trial line replaces it)


def startup_trials(sampler: Any) -> int:
    """How many first trials ``sampler`` draws without looking at results (0 when it has no such phase)."""
    return int(getattr(sampler, "_n_startup_trials", 0) or 0)


def trial_settings(params: dict[str, Any]) -> str:
    """A trial's parameters as short ``key=value`` pairs; per-head scales nested into one ``heads`` value."""
    from clipbench.results.settings import compact

    nested: dict[str, Any] = {}
    for name, value in params.items():
        *path, last = name.lstrip("+").removeprefix("method.").split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    ordered = sorted(nested.items(), key=lambda item: isinstance(item[1], dict))  # per-head scales last
    return ", ".join(f"{key}={compact(value)}" for key, value in ordered)


def trial_line(number: int, metric: str, params: dict[str, Any], ret) -> str:
    """``trial N: <metric>=<value> | <settings>``, or why the trial failed."""
    try:
        outcome = f"{metric}={float(ret.return_value):.4f}"
    except Exception as exc:  # a failed job raises its error here
        outcome = f"failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return f"trial {number}: {outcome} | {trial_settings(params)}"


def prepare_storage(url: str) -> None:
    """Stamp a new database with optuna's schema revision in a committed transaction. optuna 2.x (which the
    Hydra plugin needs) stamps it on a connection that SQLAlchemy 2 rolls back, and every later open of the
    study then fails on ``assert version is not None`` (optuna/storages/_rdb/storage.py, get_current_version)."""
    if int(optuna.__version__.split(".")[0]) >= 3:
        return
    import sqlalchemy
    from alembic.migration import MigrationContext
    from optuna.storages._rdb.storage import _VersionManager

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            context = MigrationContext.configure(connection)
            if context.get_current_revision() is None:
                versions = object.__new__(_VersionManager)  # only its alembic script, which needs the url
                versions.url = url
                script = versions._create_alembic_script()
                context.stamp(script, script.get_current_head())
    finally:
        engine.dispose()


SETTINGS_ATTR = "clipbench_settings"


def measured_settings(arguments: list[str]) -> list[str]:
    """The command's overrides that change what a trial measures (not ``RUN_CONTROL``), sorted."""
    return sorted(a for a in arguments if re.split(r"[.=/@]", a.lstrip("+~"), maxsplit=1)[0] not in RUN_CONTROL)


class _DropJobLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (JOB_LINE.match(str(record.msg)) or str(record.msg).startswith("Best parameters:"))


class _TrialLines:
    """The sweep's launcher, logging one line per trial once its batch returns."""

    def __init__(self, launcher, sweeper: StudySweeperImpl) -> None:
        self.launcher, self.sweeper = launcher, sweeper

    def launch(self, job_overrides, initial_job_idx: int):
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for trial, ret in zip(self.sweeper.batch, returns):
            log.info(trial_line(trial.number, self.sweeper.metric, trial.params, ret))
        return returns

    def __getattr__(self, name: str):
        return getattr(self.launcher, name)


class StudySweeperImpl(OptunaSweeperImpl):
    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.batch: list = []
        self.launcher = _TrialLines(self.launcher, self)
        self.metric = str(config.get("optimized_metric") or "value")

    def _configure_trials(self, trials, search_space_distributions, fixed_params):
        self.batch = list(trials)
        return super()._configure_trials(trials, search_space_distributions, fixed_params)

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.storage = self.storage or f"sqlite:///{(sweep_dir / STORAGE_FILE).resolve()}"
        self.study_name = self.study_name or DEFAULT_STUDY
        if isinstance(self.storage, str):
            prepare_storage(self.storage)
        self._resume(arguments)
        quiet = _DropJobLines()
        loggers = [logging.getLogger(type(self.launcher.launcher).__module__), logging.getLogger(OptunaSweeperImpl.__module__)]
        for logger in loggers:  # a logger's own filters see its records (Hydra re-creates the handlers per job)
            logger.addFilter(quiet)
        try:
            self._sweep_startup_together(arguments)
        finally:
            for logger in loggers:
                logger.removeFilter(quiet)
        self._finish(sweep_dir)

    def _sweep_startup_together(self, arguments: list[str]) -> None:
        """Hydra's sweep, with the sampler's remaining startup trials asked and launched as one batch: drawn
        without looking at results, they are the trials asked one by one, and a grouped launcher evaluates them in
        one pass over the data (docs/grouped_sweeps.md). The trials after them go in batches of ``n_jobs``."""
        startup = min(max(0, startup_trials(self.sampler) - self.completed), self.n_trials)
        if startup <= self.n_jobs:
            return super().sweep(arguments)
        n_trials, n_jobs = self.n_trials, self.n_jobs
        self.n_trials = self.n_jobs = startup
        try:
            super().sweep(arguments)  # the study is stored, so the second sweep below continues the same one
            self.n_trials, self.n_jobs = n_trials - startup, n_jobs
            if self.n_trials > 0:
                super().sweep(arguments)
        finally:
            self.n_trials, self.n_jobs = n_trials, n_jobs
        return None

    def _resume(self, arguments: list[str]) -> None:
        """Load an earlier study of this name made with the same settings (else stop with one line): mark its
        interrupted trials failed, continue its numbering and run only the trials missing to ``n_trials``
        completed ones. A new study records its settings."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        settings = measured_settings(arguments)
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:  # no such study yet
            study = optuna.create_study(study_name=self.study_name, storage=self.storage, directions=self._get_directions())
            study.set_user_attr(SETTINGS_ATTR, settings)
            self.completed = 0
            log.info(f"study {self.study_name!r} stored in {self.storage}")
            return
        earlier = study.user_attrs.get(SETTINGS_ATTR)
        if earlier is not None and earlier != settings:
            print(f"error: study {self.study_name!r} in {self.storage} was made with other settings "
                  f"({' '.join(sorted(set(earlier) - set(settings))) or 'none'} instead of "
                  f"{' '.join(sorted(set(settings) - set(earlier))) or 'none'}); run it with those to resume it, or start "
                  "another study with hydra.sweep.dir=<new dir> or hydra.sweeper.study_name=<new name>", file=sys.stderr)
            sys.exit(2)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        self.completed = done
        self.job_idx = len(trials)
        self._reseed(len(trials))
        requested, self.n_trials = self.n_trials, max(0, self.n_trials - done)
        log.info(f"study {self.study_name!r} resumed from {self.storage}: {done} of {requested} trials completed, "
                 f"{self.n_trials} to go")

    def _reseed(self, offset: int) -> None:
        """A seeded sampler restarted with ``seed + offset``: with its own seed it would draw the first trials'
        random settings again."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        sampler = self.config.hydra.sweeper.get("sampler")
        if sampler is not None and sampler.get("seed") is not None and not sampler.get("_partial_"):
            self.sampler = instantiate(OmegaConf.merge(sampler, {"seed": int(sampler.seed) + offset}))

    def _finish(self, sweep_dir: Path) -> None:
        study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete or len(study.directions) > 1:
            return
        best = study.best_trial
        log.info(f"best: trial {best.number}: {self.metric}={best.value:.4f} | {trial_settings(best.params)}")
        from clipbench.report.studies import study_plots

        written = study_plots(study, sweep_dir, self.metric)
        log.info(f"study plots: {', '.join(str(path) for path in written)}")

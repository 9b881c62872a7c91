"""The ``clipbench`` command: a Hydra app over conf/ and experiments/ (groups task, dataset, model, method, logger, experiment)."""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import clipbench.config  # noqa: F401  (registers the ${asset:} resolver and the experiment configs)
from clipbench.errors import ClipbenchError
from clipbench.paths import CONF_DIR as PACKAGE_CONF_DIR

CONF_DIR = str(PACKAGE_CONF_DIR)


def _record_failure(exc: BaseException) -> None:
    """A failed multirun job: one row in <sweep dir>/failures.csv; the sweep goes on."""
    from clipbench.results.failures import record_failure

    hc = HydraConfig.get()
    record_failure(hc.sweep.dir, hc.job.num, " ".join(hc.overrides.task), f"{type(exc).__name__}: {exc}")


def _clear_failure() -> None:
    """A multirun job that succeeded (or was already done) is no longer listed as failed."""
    from clipbench.results.failures import clear_failure

    hc = HydraConfig.get()
    clear_failure(hc.sweep.dir, " ".join(hc.overrides.task))


def optimized_value(metric: str | None, rows: list[dict]) -> float | None:
    """The value a hyper-parameter sweeper optimises (NaN for a job skipped by resume)."""
    if not metric:
        return None
    values = [r["value"] for r in rows if r["metric"] == metric]
    if rows and not values:
        raise ClipbenchError(f"optimized_metric={metric!r} is not among this run's metrics {sorted({r['metric'] for r in rows})}")
    return float(values[0]) if values else float("nan")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    quiet_third_party_output()  # again here: joblib and submitit jobs run in fresh processes
    from clipbench.distributed import launched_ranks
    from clipbench.runner import run

    hc = HydraConfig.get()
    experiment = hc.runtime.choices.get("experiment")
    multirun = hc.mode == RunMode.MULTIRUN
    ranks = launched_ranks()
    ends_on_error = not multirun or ranks.distributed  # the ranks of a failed run cannot go on together
    try:
        rows = run(cfg, Path(hc.runtime.output_dir), experiment, hc.runtime.choices.get("method"))
        value = optimized_value(cfg.get("optimized_metric"), rows)
    except ClipbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _log_to_files(f"error: {exc}")
        if ends_on_error:
            sys.exit(2)
        _record_failure(exc)
        if cfg.get("optimized_metric"):
            raise  # the hyper-parameter sweeper marks the trial failed
    except Exception as exc:
        _log_to_files(traceback.format_exc())
        if ends_on_error:
            raise
        traceback.print_exc()
        _record_failure(exc)
        if cfg.get("optimized_metric"):
            raise
    else:
        if multirun:
            _clear_failure()
        if ranks.is_main:  # the other ranks' run directory is a temporary folder
            print(f"run directory: {hc.runtime.output_dir}")
        return value
    return None


def _log_to_files(text: str) -> None:
    """The error also goes into the run directory's log file (the terminal already shows it)."""
    record = logging.LogRecord("clipbench", logging.ERROR, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


class _QuietOpenClip(logging.Filter):
    """open_clip reports every model build at INFO on the root logger; keep its warnings only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "open_clip" not in record.pathname


def quiet_third_party_output() -> None:
    """Silence what carries no information (open_clip INFO, PIL and alembic chatter); safe to call twice."""
    for name in ("PIL", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    root = logging.getLogger()
    if not any(isinstance(f, _QuietOpenClip) for f in root.filters):
        root.addFilter(_QuietOpenClip())
    warnings.filterwarnings("ignore", message=".*RANDOMLY INITIALISED.*")  # the runner prints one banner instead
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


GETTING_STARTED = """\
clipbench evaluates CLIP-family models; every setting is a Hydra override (key=value).

Offline, on the generated toy world and the bundled toy CLIP:
  clipbench-toy-world                     # writes data/toy (elsewhere: --out DIR and paths.toy=DIR)
  clipbench +toy=zeroshot                 # or +toy=rec, region_cls, pointcloud, clipscore, retrieval,
                                          #   linear_probe, compositionality, multilingual
  clipbench -m experiment=toy_default     # every task, with the methods that apply to each

On your own data and weights:
  clipbench task=zeroshot dataset=cifar100 dataset.root=DIR model.arch=ViT-B-32 model.pretrained=openai

What exists: clipbench-list (tasks, datasets, methods, experiments, architectures and tags)
Every option: clipbench --help
"""


SHELL_COMPLETION_FLAGS = ("-sc", "--shell-completion")
OTHER_CONFIG_FLAGS = ("-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name")  # Hydra's: the arguments after it (install=bash) are its own


def known_top_level_keys() -> set[str]:
    """Run keys, config groups and ``hydra``: what a ``key=value`` argument may start with."""
    from clipbench.config import GROUP_KEYS, RUN_KEYS

    return set(GROUP_KEYS + RUN_KEYS) | {"hydra"} | {p.name for p in PACKAGE_CONF_DIR.iterdir() if p.is_dir()}


def did_you_mean(typed: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, else nothing."""
    import difflib

    close = difflib.get_close_matches(typed.split(".")[0], sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files (experiments: the experiments folder)."""
    from clipbench.paths import experiments_dir

    folder = experiments_dir() if group == "experiment" else PACKAGE_CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def unknown_option(argv: list[str]) -> tuple[str, str] | None:
    """The first ``group=option`` argument (sweeps ``a,b`` included) naming an option the group lacks; none when
    more configs come from elsewhere (``--config-dir``, ``hydra.searchpath``) or for shell completion."""
    if any(a.split("=")[0] in OTHER_CONFIG_FLAGS + SHELL_COMPLETION_FLAGS or a.startswith("hydra.searchpath") for a in argv):
        return None
    groups = {p.name for p in PACKAGE_CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"} | {"experiment"}
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key not in groups or not value or "(" in value:  # range(...), glob(...): Hydra's own sweep syntax
            continue
        options = group_options(key)
        for option in value.split(","):
            if option not in options and option != "null":
                return key, option
    return None


def unknown_top_level_key(argv: list[str]) -> str | None:
    """The first ``key=value`` argument whose top-level key is neither a run key nor a config group, as typed."""
    if any(flag in argv for flag in SHELL_COMPLETION_FLAGS):
        return None
    known = known_top_level_keys()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key = arg.split("=", 1)[0].lstrip("+~")
        if re.split(r"[./@]", key)[0] not in known:  # task.x, hydra/launcher, group@package
            return key
    return None


def group_needing_plus(argv: list[str]) -> str | None:
    """A config group outside the primary defaults list (``toy``) chosen without the ``+`` Hydra needs to add it."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(PACKAGE_CONF_DIR / "config.yaml").defaults
    listed = {key.split("/")[-1] for item in defaults if not isinstance(item, str) for key in item}
    addable = {p.name for p in PACKAGE_CONF_DIR.iterdir() if p.is_dir()} - listed - {"hydra"}
    return next((arg for arg in argv if "=" in arg and arg.split("=", 1)[0] in addable), None)


def silent_rank_overrides() -> list[str]:
    """Hydra overrides for a rank other than 0 of a torchrun launch: its run directory is a temporary folder
    removed at exit, with no .hydra/ copy and no log file (rank 0 writes the run's files)."""
    from clipbench.distributed import launched_ranks

    if launched_ranks().is_main:
        return []
    import atexit
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix="clipbench-rank-")
    atexit.register(shutil.rmtree, scratch, True)
    return [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null",
            "hydra/job_logging=stdout"]


def main() -> None:
    if len(sys.argv) == 1:
        print(GETTING_STARTED, end="")
        return
    unknown = unknown_top_level_key(sys.argv[1:])
    if unknown:
        print(f"error: {unknown}: unknown key{did_you_mean(unknown, known_top_level_keys())}; allowed: "
              f"{sorted(known_top_level_keys() - {'hydra'})}", file=sys.stderr)
        sys.exit(2)
    bad_option = unknown_option(sys.argv[1:])
    if bad_option:
        group, option = bad_option
        print(f"error: {group}={option}: no such option{did_you_mean(option, group_options(group))}; "
              f"{group} options: {' '.join(group_options(group))}", file=sys.stderr)
        sys.exit(2)
    needs_plus = group_needing_plus(sys.argv[1:])
    if needs_plus:
        print(f"error: {needs_plus.split('=')[0]}: a preset added on top of the defaults; write +{needs_plus}", file=sys.stderr)
        sys.exit(2)
    from hydra_plugins.clipbench_sweeper.grouping_launcher import register_as_basic
    from hydra_plugins.clipbench_sweeper.optuna_study import register_as_optuna
    from hydra_plugins.clipbench_sweeper.process_launcher import register_as_joblib

    register_as_basic()
    register_as_joblib()
    register_as_optuna()
    quiet_third_party_output()
    sys.argv += silent_rank_overrides()
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted: rows already written are kept; rerun with resume=true to skip them", file=sys.stderr)
        sys.exit(130)  # the shell's code for SIGINT


if __name__ == "__main__":
    main()

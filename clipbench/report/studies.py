"""Plots of an Optuna study, written beside its sweep (hydra_plugins/clipbench_sweeper/optuna_study.py) and
picked up by ``clipbench-report`` for the experiments whose runs the sweep made.

* ``optuna_history.png``: each completed trial's value, and the best so far.
* ``optuna_importance.png``: each setting's importance for the value (Optuna's mean-decrease-impurity
  evaluator, a random forest with seed 0, over the completed trials); FALIP's per-head scales
  (``+method.heads.b<block>.h<head>``) as a block x head grid, a head of a block a trial did not mask
  counting as scale 0, which is what FALIP applies to it.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HISTORY_PLOT, IMPORTANCE_PLOT = "optuna_history.png", "optuna_importance.png"
STUDY_PLOTS = (HISTORY_PLOT, IMPORTANCE_PLOT)
HEAD_PARAM = re.compile(r"^\+?method\.heads\.(?P<block>[^.]+)\.h(?P<head>\d+)$")
UNSET = "(unset)"  # a categorical setting a trial's search space did not contain (e.g. layers on a probe trial)
DPI = 130


def study_plots(study, out: Path, metric: str) -> list[Path]:
    """The history and importance plots of ``study`` (single objective) in ``out``."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return []
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return [history_plot(complete, maximize, metric, out / HISTORY_PLOT),
            importance_plot(complete, metric, out / IMPORTANCE_PLOT)]


def history_plot(trials, maximize: bool, metric: str, path: Path) -> Path:
    numbers = np.array([t.number for t in trials])
    values = np.array([t.value for t in trials], dtype=float)
    best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    ax.plot(numbers, values, "o", color="#4c72b0", label=f"{metric} of a trial")
    ax.step(numbers, best, where="post", color="#dd8452", label="best so far")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"optimisation history: {len(trials)} completed trials ({'max' if maximize else 'min'}imising)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    return _save(fig, path)


def importances(trials) -> dict[str, float]:
    """Each parameter's importance (summing to 1, or all 0 when every trial scored the same); per-head scales
    missing from a trial count as 0."""
    import optuna
    from optuna.distributions import CategoricalDistribution, UniformDistribution

    names = list(dict.fromkeys(name for t in trials for name in t.params))
    distributions = {}
    for name in names:
        given = [t.distributions[name] for t in trials if name in t.params]
        if HEAD_PARAM.match(name):
            distributions[name] = UniformDistribution(0.0, 1.0)
        elif isinstance(given[0], CategoricalDistribution):
            choices = list(dict.fromkeys(c for d in given for c in d.choices))
            distributions[name] = CategoricalDistribution(choices + [UNSET] * any(name not in t.params for t in trials))
        elif all(name in t.params for t in trials):
            distributions[name] = given[0]
    filled = optuna.create_study(direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # create_trial, add_trial in optuna 2
        for t in trials:
            params = {name: t.params.get(name, 0.0 if HEAD_PARAM.match(name) else UNSET) for name in distributions}
            filled.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=t.value))
    if len({t.value for t in trials}) < 2:
        return dict.fromkeys(distributions, 0.0)
    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(filled, evaluator=evaluator))


def importance_plot(trials, metric: str, path: Path) -> Path:
    """Bars for the settings, a block x head grid for the per-head scales."""
    scores = importances(trials)
    heads = {name: HEAD_PARAM.match(name) for name in scores if HEAD_PARAM.match(name)}
    others = {name.lstrip("+").removeprefix("method."): v for name, v in scores.items() if name not in heads}
    blocks = sorted({m["block"] for m in heads.values()}, key=_block_order)
    width = 1 + max([int(m["head"]) for m in heads.values()], default=-1)
    fig, axes = plt.subplots(1, 2 if heads else 1, figsize=(11 if heads else 6, max(3.5, 1.5 + 0.4 * len(blocks))),
                             layout="constrained", squeeze=False)
    bars = axes[0, 0]
    bars.barh(list(others)[::-1], list(others.values())[::-1], color="#4c72b0")
    bars.set_xlim(0, 1.05 * max(others.values(), default=0) or 1)
    bars.set_xlabel("importance")
    bars.set_title("settings", fontsize=10)
    if heads:
        grid = np.zeros((len(blocks), width))
        for name, match in heads.items():
            grid[blocks.index(match["block"]), int(match["head"])] = scores[name]
        ax = axes[0, 1]
        im = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0, vmax=grid.max() or 1)
        ax.set_xticks(range(width), [str(h) for h in range(width)])
        ax.set_yticks(range(len(blocks)), [b.lstrip("b") for b in blocks])
        ax.set_xlabel("head")
        ax.set_ylabel("block")
        ax.set_title("per-head bias scales", fontsize=10)
        fig.colorbar(im, ax=ax, label="importance")
    same = len({t.value for t in trials}) < 2
    note = "every trial scored the same: nothing to attribute" if same else "mean decrease in impurity, random forest, seed 0"
    fig.suptitle(f"importance for {metric} over {len(trials)} completed trials\n({note})", fontsize=10)
    return _save(fig, path)


def _block_order(block: str) -> tuple[int, str]:
    digits = block.lstrip("b")
    return (int(digits), block) if digits.isdigit() else (10**6, block)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def copy_study_plots(run_dirs: list[Path], out: Path) -> list[Path]:
    """The study plots of the sweeps holding ``run_dirs`` (a trial's run directory sits in its sweep's folder),
    copied into ``out``; several sweeps' plots get the sweep folder's name as a prefix."""
    sweeps = sorted({d.parent for d in run_dirs if any((d.parent / name).is_file() for name in STUDY_PLOTS)})
    copied = []
    for sweep in sweeps:
        prefix = "" if len(sweeps) == 1 else f"{sweep.name}_"
        for name in STUDY_PLOTS:
            if (sweep / name).is_file():
                copied.append(Path(shutil.copyfile(sweep / name, out / f"{prefix}{name}")))
    return copied

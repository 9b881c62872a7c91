"""Sweeps you can read: short rounded settings, one line per Optuna trial, a stored and resumable study with its
history and importance plots, and alpha-curve legends that leave the points visible."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf

from clipbench.results.csv_store import RESULT_COLUMNS
from clipbench.results.settings import varying_labels
from clipbench.results.table import sweep_summary

LINE = 160  # the widest line a sweep may print (tests/test_falip_heads_search.py checks a real study)


def _heads(seed: int, blocks: int = 12, heads: int = 12) -> dict:
    import random

    rng = random.Random(seed)
    return {f"b{b}": {f"h{h}": rng.random() for h in range(heads)} for b in range(blocks)}


def _rows(run_id: str, params: dict, value: float) -> list[dict]:
    base = dict.fromkeys(RESULT_COLUMNS, "")
    base.update(run_id=run_id, task="rec", dataset="refcoco", split="val", model_arch="ViT-B-16", method="falip",
                method_params=json.dumps(params), task_params='{"name": "rec"}', dataset_params='{"split": "val"}')
    return [base | {"metric": "accuracy", "value": value}]


def test_sweep_summary_shows_rounded_settings_and_summarised_head_scales():
    trials = [{"alpha": 0.5713728287309585, "rows": "cls", "heads": _heads(0)},
              {"alpha": 0.8765115408344782, "rows": "cls", "heads": _heads(1)}]
    text = sweep_summary(pd.DataFrame([r for i, p in enumerate(trials) for r in _rows(str(i), p, 0.5)]))
    body = [line for line in text.splitlines() if line.startswith("| refcoco")]
    assert len(body) == 2 and max(map(len, text.splitlines())) <= LINE
    assert "alpha=0.571," in body[0] and "alpha=0.877," in body[1]
    assert "<144 values" in body[0] and body[0].split("#")[1][:6] != body[1].split("#")[1][:6]  # told apart


def test_rounding_never_makes_two_settings_read_alike():
    labels = varying_labels([{"alpha": 0.12341}, {"alpha": 0.12342}, {"alpha": 0.5}])
    assert labels == ["alpha=0.12341", "alpha=0.12342", "alpha=0.5"]
    assert varying_labels([{"alpha": 0.5713728, "sigma": 1.0}, {"alpha": 0.25, "sigma": 1.0}]) == ["alpha=0.571", "alpha=0.25"]


def test_alpha_curve_legend_is_short_and_beside_the_axes(tmp_path, monkeypatch):
    from clipbench.report import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    rows = [r | {"model": "ViT-B-16", "method_label": "falip", "ci_low": float("nan"), "ci_high": float("nan")}
            for i in range(20) for r in _rows(str(i), {"alpha": 0.05 * (i + 1), "heads": _heads(i, 3, 4)}, 0.5 + i / 100)]
    assert plots.alpha_curves(pd.DataFrame(rows), tmp_path)
    (fig,) = figures
    ax = fig.axes[0]
    legend = ax.get_legend()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # never over the points
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == plots.LEGEND_ENTRIES + 1 and labels[-1] == "... 8 more"
    assert max(map(len, labels)) <= 60 and all(label.startswith("heads=<12 values") for label in labels[:-1])


def test_importance_finds_the_head_that_decides_the_value():
    from clipbench.report.studies import importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(24):
        trial = study.ask()
        trial.suggest_float("method.alpha", 0.05, 1.0)
        layers = trial.suggest_categorical("method.layers", ["[2]", "[1,2]"])
        for block in json.loads(layers):
            for head in range(2):
                trial.suggest_float(f"+method.heads.b{block}.h{head}", 0.0, 1.0)
        study.tell(trial, trial.params["+method.heads.b2.h1"])
    scores = importances(study.trials)
    assert set(scores) == {"method.alpha", "method.layers", *(f"+method.heads.b{b}.h{h}" for b in (1, 2) for h in (0, 1))}
    assert max(scores, key=scores.get) == "+method.heads.b2.h1" and sum(scores.values()) == pytest.approx(1.0)


def _sweeper(storage: str, n_trials: int = 3):
    from hydra_plugins.clipbench_sweeper._study_impl import StudySweeperImpl

    sweeper = StudySweeperImpl(sampler=None, direction="maximize", storage=storage, study_name="s", n_trials=n_trials,
                               n_jobs=1, max_failure_rate=0.0, search_space=None, custom_search_space=None, params=None)
    sweeper.config = OmegaConf.create({"hydra": {"sweeper": {"sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 5}}}})
    return sweeper


def test_a_study_resumes_only_with_the_settings_it_was_made_with(tmp_path, capsys):
    from hydra_plugins.clipbench_sweeper._study_impl import prepare_storage

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    prepare_storage(storage)
    _sweeper(storage)._resume(["model=a", "limit=8", "device=cpu"])
    _sweeper(storage)._resume(["limit=8", "model=a", "device=cuda", "batch_size=4"])  # where it runs: the same study
    with pytest.raises(SystemExit) as stop:
        _sweeper(storage)._resume(["model=b", "limit=8"])
    assert stop.value.code == 2
    assert "made with other settings (model=a instead of model=b)" in capsys.readouterr().err


def test_an_interrupted_study_resumes_with_the_trials_still_missing(tmp_path):
    from hydra_plugins.clipbench_sweeper._study_impl import prepare_storage

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    prepare_storage(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for value in (0.1, 0.2):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, value)
    study.ask()  # left running by a killed sweep
    sweeper = _sweeper(storage)
    sweeper._resume([])
    assert (sweeper.n_trials, sweeper.job_idx) == (1, 3)
    reseeded = optuna.samplers.RandomSampler(seed=5 + 3)  # seed 5 would draw the first trials' settings again
    assert (sweeper.sampler._rng.get_state()[1] == reseeded._rng.get_state()[1]).all()
    assert optuna.load_study(study_name="s", storage=storage).trials[2].state == optuna.trial.TrialState.FAIL

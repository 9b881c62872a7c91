"""Grouped sweeps (clipbench/grouped.py): configs that differ only in FALIP's bias keys, evaluated in one pass,
give every config the rows, metrics, intervals, outcomes and predictions of the same config run alone."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, run_cli
from helpers import compose_config

import tests.tiny_towers  # noqa: F401  (registers the tiny SigLIP-style and EVA02-style timm towers)
from clipbench import grouped
from clipbench.runner import identify, run

ROW_KEYS = ["config_hash", "metric", "value", "n", "ci_low", "ci_high", "method_params", "weights_fingerprint"]
TIMING_KEYS = {"run_id", "items_per_s", "seconds", "loop_items_per_s", "forward_items_per_s", "peak_mem_mb", "ci",
               "grouped_configs", "group_memory_mb", "env"}

# alpha x layers, per-head scales, rows, shape and the full-forward path: prefixes of 0, 2 and 3 blocks
TOY_SWEEP = [
    ["method.alpha=0.1", "method.layers=[-1]"],
    ["method.alpha=0.8", "method.layers=[-1]"],
    ["method.alpha=0.8", "method.layers=[-2,-1]"],
    ["method.alpha=0.4", "method.layers=[-2,-1]", "method.heads=[0]"],
    ["method.alpha=0.4", "method.rows=all", "method.shape=uniform"],
    ["method.alpha=0.4", "method.fast=false", "method.layers=[-2,-1]"],
]


def _common(tmp_path, toy_root, *extra: str) -> list[str]:
    return [f"paths.toy={toy_root}", "device=cpu", "num_workers=0", "batch_size=8", "progress=false",
            "save_predictions=true", "ci.resamples=200", f"cache_dir={tmp_path / 'cache'}", *extra]


def _run_both(tmp_path, common: list[str], sweep: list[list[str]], spent=None):
    """Each config run alone, then all of them as one planned sweep; returns both CSVs. ``spent``: a dict whose
    ``count`` some probe increases, read into ``spent[mode]``."""
    for mode in ("alone", "grouped"):
        before = spent["count"] if spent else 0
        configs = [compose_config([*common, f"results_csv={tmp_path / mode}.csv", *job]) for job in sweep]
        groups = grouped.plan_sweep([lambda c=c: c for c in configs] if mode == "grouped" else [], identify)
        if mode == "grouped":
            assert groups == [list(range(len(sweep)))]
        for i, cfg in enumerate(configs):
            run(cfg, tmp_path / mode / str(i))
        if spent:
            spent[mode] = spent["count"] - before
    return pd.read_csv(tmp_path / "alone.csv"), pd.read_csv(tmp_path / "grouped.csv")


def _assert_same_outputs(tmp_path, alone: pd.DataFrame, together: pd.DataFrame, n: int) -> None:
    pd.testing.assert_frame_equal(alone[ROW_KEYS], together[ROW_KEYS])
    assert alone.config_hash.nunique() == n and set(together.run_id) & set(alone.run_id) == set()
    for i in range(n):
        a, g = tmp_path / "alone" / str(i), tmp_path / "grouped" / str(i)
        assert (a / "predictions.csv").read_bytes() == (g / "predictions.csv").read_bytes()
        ma, mg = (json.loads((d / "metrics.json").read_text()) for d in (a, g))
        assert ma["ci"]["intervals"] == mg["ci"]["intervals"] and mg["grouped_configs"] == n
        assert {k: v for k, v in ma.items() if k not in TIMING_KEYS} == {k: v for k, v in mg.items() if k not in TIMING_KEYS}
        with np.load(a / "outcomes.npz") as oa, np.load(g / "outcomes.npz") as og:
            assert set(oa.files) == set(og.files)
            for key in oa.files:
                if key != "run_id":
                    np.testing.assert_array_equal(oa[key], og[key])


def test_toy_rec_sweep_grouped_equals_each_config_alone(tmp_path, toy_root, monkeypatch):
    from clipbench.models.attention import OpenClipViT as Tower  # the toy model's tower

    blocks = {"count": 0}
    block = Tower.block

    def counted(self, *args, **kwargs):
        blocks["count"] += 1
        return block(self, *args, **kwargs)

    monkeypatch.setattr(Tower, "block", counted)
    common = _common(tmp_path, toy_root, "+toy=rec", "limit=16")
    alone, together = _run_both(tmp_path, common, TOY_SWEEP, blocks)
    _assert_same_outputs(tmp_path, alone, together, len(TOY_SWEEP))
    assert 0 < blocks["grouped"] < blocks["alone"]  # the unbiased prefix ran once for the group
    assert set(together.metric) == {"accuracy", "tied", "skipped"}
    assert len(set(alone[alone.metric == "accuracy"].value)) > 1  # the configs do differ


def test_toy_region_cls_sweep_grouped_equals_each_config_alone(tmp_path, toy_root):
    common = _common(tmp_path, toy_root, "+toy=region_cls", "method=falip", "limit=12")
    alone, together = _run_both(tmp_path, common, TOY_SWEEP[:4])
    _assert_same_outputs(tmp_path, alone, together, 4)


@pytest.mark.filterwarnings("ignore:model.pretrained is null")
@pytest.mark.parametrize("arch, sweep", [
    ("ViT-B-16", [["method.layers=[-1]"], ["method.layers=[-4,-3,-2,-1]", "method.alpha=0.8"], ["method.heads=[3,7]"]]),
    ("clipbench-test-map", [["method.alpha=0.2"], ["method.alpha=0.8"], ["method.rows=all", "method.layers=[-1]"]]),
    ("clipbench-test-eva", [["method.layers=[-1]"], ["method.layers=[-2,-1]", "method.alpha=0.8"], ["method.heads=[1]", "method.layers=[-2,-1]"]]),
])
def test_random_init_towers_grouped_equal_alone(tmp_path, toy_root, arch, sweep):
    common = _common(tmp_path, toy_root, "+toy=rec", f"model.arch={arch}", "model.pretrained=null", "limit=4")
    alone, together = _run_both(tmp_path, common, sweep)
    _assert_same_outputs(tmp_path, alone, together, len(sweep))


def test_a_config_failing_in_the_pass_fails_alone(tmp_path, toy_root, monkeypatch):
    from clipbench.errors import DataError
    from clipbench.methods.falip import FalipMethod

    weights = FalipMethod.patch_weights

    def failing(self, image, region):
        if self.cfg.alpha == 0.8:
            raise DataError("alpha 0.8 breaks here")
        return weights(self, image, region)

    monkeypatch.setattr(FalipMethod, "patch_weights", failing)
    common = _common(tmp_path, toy_root, "+toy=rec", "limit=8", f"results_csv={tmp_path / 'r.csv'}")
    configs = [compose_config([*common, *job]) for job in TOY_SWEEP[:3]]
    grouped.plan_sweep([lambda c=c: c for c in configs], identify)
    run(configs[0], tmp_path / "0")
    with pytest.raises(DataError, match="alpha 0.8"):
        run(configs[1], tmp_path / "1")
    with pytest.raises(DataError, match="alpha 0.8"):
        run(configs[2], tmp_path / "2")
    frame = pd.read_csv(tmp_path / "r.csv")
    assert frame.config_hash.nunique() == 1 and json.loads(frame.method_params[0])["alpha"] == 0.1


def test_multirun_groups_resumes_and_records_a_bad_config(tmp_path, toy_root):
    """An ordinary Hydra multirun: a done config is skipped, the others share a pass, a config error fails alone."""
    common = [*_common(tmp_path, toy_root, "+toy=rec", "limit=8"), f"results_csv={tmp_path / 'r.csv'}", "resume=true"]
    run(compose_config([*common, "method.alpha=0.1"]), tmp_path / "single")
    proc = run_cli("-m", *common, f"hydra.sweep.dir={tmp_path / 'sweep'}", "method.alpha=0.1,0.4,-1,0.8")
    frame = pd.read_csv(tmp_path / "r.csv")
    assert frame.config_hash.nunique() == 3 and frame.groupby("config_hash").run_id.nunique().eq(1).all()
    assert proc.stdout.count("skipping") == 1 and "evaluated 2 configs in one pass" in proc.stdout + proc.stderr
    failures = pd.read_csv(tmp_path / "sweep" / "failures.csv")
    assert len(failures) == 1 and "method.alpha=-1" in failures.overrides[0] and "method.alpha" in failures.error[0]
    for job in (1, 3):  # alpha 0.4 and 0.8
        assert json.loads((tmp_path / "sweep" / str(job) / "metrics.json").read_text())["grouped_configs"] == 2


def test_a_head_sensitivity_multirun_runs_grouped_with_the_rows_of_separate_jobs(tmp_path, toy_root):
    """One config per (block, head), written as an ordinary multirun: one pass, the rows of ungrouped jobs."""
    common = [*_common(tmp_path, toy_root, "+toy=rec", "limit=6"), "method.layers=[2],[3]", "method.heads=[0],[3]"]
    logs, frames = {}, {}
    for mode, switch, logger in (("grouped", "true", "both"), ("separate", "false", "csv")):
        proc = run_cli("-m", *common, f"results_csv={tmp_path / mode}.csv", f"hydra.sweep.dir={tmp_path / mode}",
                       f"hydra.launcher.group_configs={switch}", f"logger={logger}", check=True)
        logs[mode] = proc.stdout + proc.stderr
        frames[mode] = pd.read_csv(tmp_path / f"{mode}.csv").sort_values(["config_hash", "metric"], ignore_index=True)
    assert "evaluated 4 configs in one pass" in logs["grouped"] and "one pass" not in logs["separate"]
    pd.testing.assert_frame_equal(frames["grouped"][ROW_KEYS], frames["separate"][ROW_KEYS])
    assert frames["grouped"].config_hash.nunique() == 4
    assert {(p["layers"][0], p["heads"][0]) for p in map(json.loads, frames["grouped"].method_params)} == {
        (2, 0), (2, 3), (3, 0), (3, 3)}
    for job in range(4):
        metrics = json.loads((tmp_path / "grouped" / str(job) / "metrics.json").read_text())
        assert metrics["grouped_configs"] == 4
        assert len(list((tmp_path / "grouped" / str(job) / "wandb").glob("offline-run-*"))) == 1  # its own W&B run
        assert "grouped_configs" not in json.loads((tmp_path / "separate" / str(job) / "metrics.json").read_text())


@pytest.mark.filterwarnings("ignore:model.pretrained is null")
def test_configs_over_the_memory_budget_are_encoded_in_turns_with_the_same_features(monkeypatch):
    """``memory_mb`` bounds the attention biases one pass holds: the configs go through the blocks in turns of
    as many as fit (at least one), sorted by their first biased block, and every config's features are those of
    the config alone and of all configs at once."""
    from conftest import TINY_ARCH
    from test_falip import build, random_images, random_regions

    from clipbench.methods import falip
    from clipbench.models import load_model

    loaded = load_model(TINY_ARCH, None)
    methods = [build(loaded, alpha=0.1, layers=[-1]), build(loaded, alpha=0.8, layers=[-2, -1]),
               build(loaded, alpha=0.4, layers=[-1], heads=[0]), build(loaded, alpha=0.4, rows="all", shape="uniform", layers=[-2, -1]),
               build(loaded, alpha=0.4, fast=False, layers=[-2, -1])]
    images = random_images(3, seed=4)
    regions = random_regions(images, [2, 3, 1], seed=4)
    n_regions = sum(map(len, regions))
    one = falip.bias_bytes(methods[0], n_regions)
    assert one == 4 * n_regions * methods[0].tower.tokens ** 2  # a dense float32 (R, L, L) bias per config
    turns: list[int] = []
    encode = falip.encode_jobs_with_attention_bias

    def counted(model, batch, jobs):
        turns.append(len(jobs))
        return encode(model, batch, jobs)

    monkeypatch.setattr(falip, "encode_jobs_with_attention_bias", counted)
    every = falip.encode_regions_together(methods, images, regions)
    assert turns == [len(methods)]
    for budget, sizes in ((2.5 * one / 2**20, [2, 2, 1]), (0.5 * one / 2**20, [1] * 5), (100 * one / 2**20, [5])):
        turns.clear()
        in_turns = falip.encode_regions_together(methods, images, regions, memory_mb=budget)
        assert turns == sizes
        for a, b in zip(every, in_turns):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
    for method, feats in zip(methods, every):
        assert all(torch.equal(x, y) for x, y in zip(method.encode_regions(images, regions), feats))
    order = falip.configs_per_pass(methods, range(len(methods)), n_regions, 0.5 * one / 2**20)
    firsts = [falip.shared_blocks(methods[k]) for (k,) in order]
    assert firsts == sorted(firsts) and firsts[0] == 0  # fast=false shares no block: it goes first


def test_the_launcher_passes_its_memory_budget_to_the_pass(tmp_path, toy_root):
    """``hydra.launcher.group_memory_mb`` reaches the grouped pass (recorded in each run's metrics.json) and
    leaves the rows as they are with the default budget."""
    common = [*_common(tmp_path, toy_root, "+toy=rec", "limit=4"), "ci.resamples=0", "save_predictions=false"]
    for name, budget in (("default", None), ("tiny", "0.001")):
        extra = [f"hydra.launcher.group_memory_mb={budget}"] if budget else []
        run_cli("-m", *common, f"results_csv={tmp_path / name}.csv", f"hydra.sweep.dir={tmp_path / name}",
                "method.alpha=0.1,0.8", *extra, check=True)
        recorded = [json.loads((tmp_path / name / str(j) / "metrics.json").read_text()) for j in (0, 1)]
        assert [m["grouped_configs"] for m in recorded] == [2, 2]
        assert [m["group_memory_mb"] for m in recorded] == [float(budget or 1024)] * 2
    default, tiny = (pd.read_csv(tmp_path / f"{name}.csv") for name in ("default", "tiny"))
    pd.testing.assert_frame_equal(default[ROW_KEYS], tiny[ROW_KEYS])


def test_falip_sweep_benchmark_quick(toy_root, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("falip_sweep", ROOT / "benchmarks" / "falip_sweep.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "falip_sweep", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    rows = module.main(["--quick", "--toy-root", str(toy_root)])
    assert [r["sweep"] for r in rows] == ["heads 16", "alpha x layers 20"] and all(r["same"] for r in rows)
    assert all(r["configs"] == 4 and r["grouped_s"] > 0 and 0 <= r["prefix"] <= 1 for r in rows)
    assert "ratio" in capsys.readouterr().out


def test_startup_trials_asked_together_are_the_trials_asked_one_by_one():
    """Why the startup batch changes no search: TPE draws its startup trials without looking at results."""
    import optuna

    from hydra_plugins.clipbench_sweeper._study_impl import startup_trials

    def params(together: bool) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=4), direction="maximize")
        trials = []
        for _ in range(4):
            trial = study.ask()
            trial.suggest_float("alpha", 0.0, 1.0)
            trial.suggest_int("k", 1, 4)
            trials.append(trial)
            if not together:
                study.tell(trial, trial.params["alpha"])
        return [t.params for t in trials]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert params(True) == params(False)
    assert startup_trials(optuna.samplers.TPESampler(n_startup_trials=4)) == 4
    assert startup_trials(optuna.samplers.GridSampler({"a": [1]})) == 0

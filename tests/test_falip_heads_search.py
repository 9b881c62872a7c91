"""hparams_search=falip_heads: a search space derived from the model's depth and heads, per-head scales."""

from __future__ import annotations

import json
import warnings

import optuna
import pytest
import torch
import yaml
from omegaconf import OmegaConf

import tests.tiny_towers  # noqa: F401  (registers the tiny timm towers)
from clipbench.errors import ConfigError
from clipbench.models.attention import head_scale_matrix
from clipbench.search_spaces import falip_heads, tower_layout
from tests.conftest import ROOT, run_cli
from tests.test_readable_sweeps import LINE


def sampled(arch: str, n: int = 12) -> list[dict]:
    return sampled_with({"model": {"arch": arch}}, n)


def as_heads(params: dict) -> dict:
    heads: dict = {}
    for key, value in params.items():
        if key.startswith("+method.heads."):
            block, head = key.split(".")[2:]
            heads.setdefault(block, {})[head] = value
    return heads


@pytest.mark.parametrize("arch", ["toyclip", "clipbench-test-vit"])
def test_space_follows_the_models_depth_and_heads(arch):
    depth, heads, _, _ = tower_layout("open_clip", arch)
    seen = set()
    for params in sampled(arch):
        layers = json.loads(params["method.layers"])
        seen.add(len(layers))
        assert layers == list(range(depth - len(layers), depth))
        spec = as_heads(params)
        assert sorted(spec) == [f"b{b}" for b in layers]
        assert all(sorted(row) == sorted(f"h{h}" for h in range(heads)) for row in spec.values())
        scale = head_scale_matrix(spec, layers, heads)
        assert scale.shape == (len(layers), heads) and 0 <= float(scale.min()) and float(scale.max()) <= 1
    assert max(seen) <= depth and len(seen) > 1


def test_map_tower_trials_scale_the_probe_heads():
    depth, heads, has_cls, probe = tower_layout("open_clip", "clipbench-test-map")
    assert (depth, has_cls, probe) == (3, False, 2)
    trials = sampled("clipbench-test-map", 16)
    on_probe = [p for p in trials if p["method.rows"] == "cls"]
    assert on_probe and all("method.layers" not in p and sorted(as_heads(p)) == ["probe"] for p in on_probe)
    assert all(len(as_heads(p)["probe"]) == probe for p in on_probe)


def test_block_scales_form_of_heads():
    scale = head_scale_matrix({"b2": {"h0": 0.5}, "b3": {"h1": 1.0, "h3": 0.25}}, (2, 3), 4)
    assert torch.equal(scale, torch.tensor([[0.5, 0, 0, 0], [0, 1.0, 0, 0.25]]))
    for bad, match in (({"b2": {"h0": 1.0}}, "have no entry"), ({"b1": {"h0": 1}, "b2": {}, "b3": {}}, "not masked"),
                       ({"b2": {"h9": 1}, "b3": {}}, "out of range"), ({"x2": {"h0": 1}}, "not allowed")):
        with pytest.raises(ConfigError, match=f"method.heads.*{match}"):
            head_scale_matrix(bad, (2, 3), 4)


def test_toy_study_is_stored_resumed_plotted_and_printed_one_line_per_trial(tmp_path, toy_root):
    """A study resumed from its SQLite file runs every missing trial, one short line each, the startup trials it
    still lacks launched together and evaluated in one pass, and leaves its plots beside the sweep for the report
    (tests/test_readable_sweeps.py covers the pieces)."""
    import pandas as pd

    from clipbench.report.build import build_report
    from hydra_plugins.clipbench_sweeper._study_impl import prepare_storage

    sweep = tmp_path / "multirun" / "study"
    sweep.mkdir(parents=True)
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    prepare_storage(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    earlier = optuna.create_study(study_name="falip_heads", storage=storage, direction="maximize")
    trial = earlier.ask()  # an earlier sweep's completed trial, then one it left running when it was killed
    trial.suggest_float("method.alpha", 0.05, 1.0)
    earlier.tell(trial, 0.25)
    earlier.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = run_cli("-m", "experiment=toy_falip_head_sensitivity", "hparams_search=falip_heads", f"paths.toy={toy_root}",
                       "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.n_startup_trials=3", "limit=3", "device=cpu",
                       "progress=false",
                       f"results_csv={tmp_path / 'r.csv'}", f"hydra.sweep.dir={sweep}", check=True)
    out = (proc.stdout + proc.stderr).replace(str(tmp_path), "TMP").replace(str(ROOT), "ROOT")  # paths vary
    assert not [line for line in out.splitlines() if len(line) > LINE and ("[HYDRA]" in line or line.startswith("|"))]
    assert "1 of 4 trials completed, 3 to go" in out
    lines = [line.split("] ", 1)[1] for line in out.splitlines() if "] trial " in line]
    assert [line.split(":")[0] for line in lines] == ["trial 2", "trial 3", "trial 4"]
    # the 2 startup trials still missing (drawn without results) are evaluated in one pass, the last one alone
    assert "evaluated 2 configs in one pass" in out
    grouped = [json.loads((sweep / str(j) / "metrics.json").read_text()).get("grouped_configs") for j in (2, 3, 4)]
    assert grouped == [2, 2, None]
    assert all(line.split(": ")[1].startswith("accuracy=") and "alpha=" in line and "heads=" in line for line in lines)
    study = optuna.load_study(study_name="falip_heads", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]  # no trial failed
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["2", "3", "4"]  # numbering goes on: nothing overwritten
    runs = pd.read_csv(tmp_path / "r.csv").query("metric == 'accuracy'")
    assert runs.value.tolist() == [t.value for t in study.trials[2:]]
    assert all(json.loads(p)["heads"] and isinstance(json.loads(p)["heads"], dict) for p in runs.method_params)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(t.value for t in study.trials if t.value is not None)
    index = build_report(tmp_path / "r.csv", tmp_path / "report", runs=[tmp_path / "multirun"]).read_text()
    for name in ("optuna_history.png", "optuna_importance.png"):
        assert (sweep / name).stat().st_size > 0 and f"/{name})" in index


def test_hf_source_layout(tmp_path):
    from tests.tiny_towers import save_tiny_hf_clip

    folder = save_tiny_hf_clip(tmp_path / "clip")
    assert tower_layout("hf", folder) == (3, 2, True, None)
    params = sampled_with({"model": {"arch": folder, "source": "hf"}})
    assert all(len(as_heads(p)) == len(json.loads(p["method.layers"])) for p in params if "method.layers" in p)


def sampled_with(model_cfg: dict, n: int = 4) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        falip_heads(OmegaConf.create(model_cfg), trial)
        out.append(trial.params)
        study.tell(trial, 0.0)
    return out

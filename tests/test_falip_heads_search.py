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
from tests.conftest import run_cli


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


def test_toy_study_runs_every_trial(tmp_path, toy_root, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = run_cli("-m", "experiment=toy_falip_head_sensitivity", "hparams_search=falip_heads", "hydra.sweeper.n_trials=4",
                       f"paths.toy={toy_root}", "hydra.sweeper.sampler.n_startup_trials=3", "limit=4", "device=cpu",
                       "progress=false", f"results_csv={tmp_path / 'r.csv'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", check=True)
    # the 3 startup trials (drawn without results) are launched together and evaluated in one pass, the 4th alone
    assert "evaluated 3 configs in one pass" in proc.stdout + proc.stderr
    grouped = [json.loads((tmp_path / "sweep" / str(j) / "metrics.json").read_text()).get("grouped_configs") for j in range(4)]
    assert grouped == [3, 3, 3, None]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    import pandas as pd

    frame = pd.read_csv(tmp_path / "r.csv")
    runs = frame[frame.metric == "accuracy"]
    assert len(runs) == 4  # no trial failed
    assert all(json.loads(p)["heads"] and isinstance(json.loads(p)["heads"], dict) for p in runs.method_params)
    assert best["best_value"] == runs.value.max()


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

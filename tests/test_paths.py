"""The paths group: one data root, per-dataset roots derived from it, the deprecated variables still read."""

import pytest
from hydra import compose, initialize_config_dir

from clipbench.errors import ConfigError
from clipbench.paths import CONF_DIR, DEPRECATED_ENV
from clipbench.runner import validate


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_data_root_moves_every_derived_root(monkeypatch):
    for var in DEPRECATED_ENV:
        monkeypatch.delenv(var, raising=False)
    cfg = _compose("paths.data=/x")
    for key in DEPRECATED_ENV.values():
        assert str(cfg.paths[key]).startswith("/x"), key
    assert cfg.paths.toy == "/x/toy"


def test_default_toy_root_is_what_the_toy_world_writes(monkeypatch):
    monkeypatch.delenv("CLIPBENCH_TOY_ROOT", raising=False)
    assert _compose("+toy=zeroshot").dataset.root == "data/toy/cifar"


def test_one_dataset_override_wins(monkeypatch):
    monkeypatch.delenv("CLIPBENCH_CUB_ROOT", raising=False)
    cfg = _compose("task=region_cls", "dataset=cub", "paths.data=/x", "paths.cub=/elsewhere/cub")
    assert cfg.dataset.root == "/elsewhere/cub"
    assert cfg.paths.stanford_dogs == "/x/stanford_dogs"


def test_deprecated_env_var_still_works_and_warns(monkeypatch, capsys):
    import clipbench.paths

    monkeypatch.setattr(clipbench.paths, "_WARNED", set())
    monkeypatch.setenv("CLIPBENCH_REFER_ROOT", "/old/refer")
    cfg = _compose("task=rec", "dataset=refcocog", "paths.data=/x")
    assert cfg.dataset.root == "/old/refer"
    assert cfg.dataset.images == "/x/coco/train2014"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: CLIPBENCH_REFER_ROOT is deprecated; pass paths.refer=/old/refer instead"]


def test_missing_data_root_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.delenv("CLIPBENCH_CUB_ROOT", raising=False)
    cfg = _compose("task=region_cls", "dataset=cub", "method=clip", f"paths.data={tmp_path}")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    msg = str(info.value)
    assert "\n" not in msg and f"{tmp_path}/CUB_200_2011 does not exist" in msg

"""What a row stands for: the architecture's content, the weights' content, precision and interval settings,
and the code that wrote it."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import TEST_CONFIGS, TINY_ARCH
from helpers import compose_config, tmp_overrides

from clipbench import runner
from clipbench.models.factory import load_model
from clipbench.models.text_cache import text_features

EDITED_ARCH = "clipbench-test-edited"


@pytest.fixture
def edited_arch(tmp_path, monkeypatch):
    """A copy of the tiny test architecture under its own name, in a folder of its own; returns a function that
    rewrites its JSON with some keys changed."""
    folder = tmp_path / "model_configs"
    folder.mkdir()
    base = json.loads((TEST_CONFIGS / f"{TINY_ARCH}.json").read_text())
    monkeypatch.setenv("CLIPBENCH_MODEL_CONFIGS", os.pathsep.join([str(TEST_CONFIGS), str(folder)]))

    def write(**changes):
        (folder / f"{EDITED_ARCH}.json").write_text(json.dumps(base | changes))

    write()
    return write


def _checkpoint(path: Path, arch: str = TINY_ARCH, seed: int = 0) -> Path:
    """Seeded random weights for ``arch`` saved as a checkpoint file (a fresh mtime, so no stale fingerprint)."""
    torch.manual_seed(seed)
    model = load_model(arch, None, reuse=False)
    torch.save(model.model.state_dict(), path)
    stamp = path.stat().st_mtime_ns + seed * 10**9
    os.utime(path, ns=(stamp, stamp))
    return path


def _config(tmp_path, cifar_root, *extra):
    data = (f"dataset.root={cifar_root}", "dataset.check_integrity=false", "ci.resamples=0")
    return compose_config(tmp_overrides(tmp_path, *data, *extra))


def _run(tmp_path, cifar_root, *extra) -> list[dict]:
    return runner.run(_config(tmp_path, cifar_root, *extra), tmp_path / "run")


# -- an edited model config JSON: same name, same checkpoint, another architecture --


def test_an_edited_model_json_changes_the_hash_and_the_cached_text_embeddings(tmp_path, edited_arch, cifar_root):
    weights = _checkpoint(tmp_path / "w.pt", EDITED_ARCH)
    cache = str(tmp_path / "cache")
    arch = (f"model.arch={EDITED_ARCH}", f"model.pretrained={weights}")
    texts = ["a photo of a red thing", "a photo of a blue thing"]

    before_hash = runner.config_hash(runner.validate(_config(tmp_path, cifar_root, *arch)))
    before = text_features(load_model(EDITED_ARCH, str(weights)), texts, cache)
    edited_arch(quick_gelu=True)
    after_hash = runner.config_hash(runner.validate(_config(tmp_path, cifar_root, *arch)))
    after = text_features(load_model(EDITED_ARCH, str(weights)), texts, cache)

    assert before_hash != after_hash
    fresh = load_model(EDITED_ARCH, str(weights), reuse=False).encode_text(texts)
    assert torch.allclose(after, fresh, atol=1e-6)  # the edited architecture, not the cache of the old one
    assert not torch.allclose(before, after, atol=1e-4)


"""What a row stands for: the architecture's content, the weights' content, precision and interval settings,
and the code that wrote it."""

import csv
import json
import os
from pathlib import Path

import open_clip
import pytest
import torch
from conftest import TEST_CONFIGS, TINY_ARCH
from helpers import compose_config, git_commit_all, tmp_overrides

from clipbench import runner
from clipbench.models.factory import load_model
from clipbench.models.text_cache import text_features
from clipbench.results.csv_store import OLDER_HEADERS, RESULT_COLUMNS, read_results

EDITED_ARCH = "clipbench-test-edited"


@pytest.fixture
def edited_arch(tmp_path, monkeypatch):
    """A copy of the tiny test architecture under its own name, in a folder of its own; yields a function that
    rewrites its JSON with some keys changed."""
    folder = tmp_path / "model_configs"
    folder.mkdir()
    base = json.loads((TEST_CONFIGS / f"{TINY_ARCH}.json").read_text())
    monkeypatch.setenv("CLIPBENCH_MODEL_CONFIGS", os.pathsep.join([str(TEST_CONFIGS), str(folder)]))

    def write(**changes):
        (folder / f"{EDITED_ARCH}.json").write_text(json.dumps(base | changes))

    write()
    yield write
    (folder / f"{EDITED_ARCH}.json").unlink()  # open_clip keeps the JSONs it read: later tests see no test arch
    open_clip.factory._MODEL_CONFIGS.pop(EDITED_ARCH, None)


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


# -- a checkpoint replaced at the same path --


def test_a_replaced_checkpoint_is_rerun_by_resume_and_its_rows_say_which_weights(tmp_path, cifar_root):
    weights = tmp_path / "w.pt"
    args = (f"model.pretrained={weights}", "resume=true")
    _checkpoint(weights, seed=1)
    first = _run(tmp_path, cifar_root, *args)
    _checkpoint(weights, seed=2)
    second = _run(tmp_path, cifar_root, *args)
    assert first and second, "resume skipped the replaced checkpoint"
    assert first[0]["config_hash"] == second[0]["config_hash"]
    assert first[0]["weights_fingerprint"] != second[0]["weights_fingerprint"]
    assert _run(tmp_path, cifar_root, *args) == []  # the same weights again: done
    frame = read_results(tmp_path / "results.csv")
    assert set(frame["weights_fingerprint"]) == {first[0]["weights_fingerprint"], second[0]["weights_fingerprint"]}


@pytest.mark.parametrize("older", OLDER_HEADERS, ids=lambda header: f"{len(header)}-columns")
def test_resume_on_a_csv_with_an_older_header_runs_and_upgrades_it(tmp_path, cifar_root, older):
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(older)
        writer.writerow(["old" if c == "run_id" else "h" if c == "config_hash" else "" for c in older])
    rows = _run(tmp_path, cifar_root, "resume=true")
    assert rows
    frame = read_results(path)
    assert list(frame.columns) == RESULT_COLUMNS
    assert frame["run_id"].tolist()[0] == "old" and len(frame) == 1 + len(rows)


# -- settings that change the numbers --


def test_precision_is_in_the_rows_and_interval_settings_in_the_hash(tmp_path, cifar_root):
    fp32 = _run(tmp_path, cifar_root, "model.precision=fp32")
    bf16 = _run(tmp_path, cifar_root, "model.precision=bf16")
    assert {r["model_precision"] for r in fp32} == {"fp32"} and {r["model_precision"] for r in bf16} == {"bf16"}
    assert set(read_results(tmp_path / "results.csv")["model_precision"]) == {"fp32", "bf16"}

    def chash(*extra):
        return runner.config_hash(runner.validate(_config(tmp_path, cifar_root, *extra)))

    intervals = chash("ci.resamples=100")
    assert len({intervals, chash("ci.resamples=100", "ci.level=0.9"), chash("ci.resamples=200")}) == 3
    assert chash() == chash("ci.level=0.9") != intervals  # no intervals: their level changes nothing


def test_the_rows_state_the_interval_they_carry(tmp_path, cifar_root):
    rows = _run(tmp_path, cifar_root, "ci.resamples=50", "ci.level=0.8")
    top1 = next(r for r in rows if r["metric"] == "top1")
    assert (top1["ci_level"], top1["ci_resamples"]) == (0.8, 50)
    assert top1["ci_low"] <= top1["value"] <= top1["ci_high"]


# -- provenance --


def _code_at(monkeypatch, root: Path) -> str:
    monkeypatch.setattr(runner, "PROJECT_ROOT", root)
    runner.git_sha.cache_clear()
    try:
        return runner.git_sha()
    finally:
        runner.git_sha.cache_clear()


def test_an_install_inside_another_git_repository_records_the_package_version(tmp_path, monkeypatch):
    from clipbench import __version__

    site = ".venv/lib/site-packages"
    head = git_commit_all(tmp_path, {"README.md": "a user's project\n", f"{site}/clipbench/__init__.py": ""})
    recorded = _code_at(monkeypatch, tmp_path / site)
    assert head not in recorded
    assert recorded == f"v{__version__}"


def test_a_checkout_of_the_package_records_its_commit(tmp_path, monkeypatch):
    head = git_commit_all(tmp_path, {"pyproject.toml": "", "clipbench/__init__.py": ""})
    assert _code_at(monkeypatch, tmp_path) == head

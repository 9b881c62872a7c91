"""What a row can be cited by: the environment record, the data and weights fingerprints, honest model labels."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_config, tmp_overrides
from PIL import Image

from clipbench.report.build import build_report
from clipbench.results.csv_store import RESULT_COLUMNS, append_rows, read_results
from clipbench.runner import run
from tests.tiny_towers import save_tiny_hf_clip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cifar_root) -> Path:
    """One results CSV: a random-init open_clip model run twice (two run directories; the second also to W&B,
    its config kept in wandb_config.json), a tiny HF CLIP once."""
    from clipbench.results import wandb_logger

    out = tmp_path_factory.mktemp("provenance")
    data = (f"dataset.root={cifar_root}", "dataset.check_integrity=false", "experiment_name=models")
    run(compose_config(tmp_overrides(out, *data)), out / "first")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wandb_logger, "log_run", lambda wcfg, name, config, *rest: (out / "wandb_config.json").write_text(
            json.dumps(config, default=str)))
        run(compose_config(tmp_overrides(out, *data, "logger=both")), out / "second")
    hf = save_tiny_hf_clip(out / "tiny-hf-clip")
    run(compose_config(tmp_overrides(out, *data, "model.source=hf", f"model.arch={hf}")), out / "hf")
    return out


def _rows(out: Path):
    return read_results(out / "results.csv", numeric=False)


def test_metrics_json_records_the_environment(runs):
    payload = json.loads((runs / "first" / "metrics.json").read_text())
    env = payload["env"]
    assert {"python", "cuda", "cudnn", "cpu", "cpu_count", "gpu", "gpu_count", "determinism"} <= set(env)
    assert {"torch", "torchvision", "open_clip_torch", "timm", "transformers", "clip-benchmark", "numpy",
            "pillow"} == set(env["libraries"])
    assert env["libraries"]["torch"] and env["cpu"] and env["cpu_count"] > 0
    assert "deterministic_algorithms" in env["determinism"]
    assert payload["env_key"] and payload["data_fingerprint"] and payload["weights_fingerprint"]
    logged = json.loads((runs / "wandb_config.json").read_text())
    assert logged["env"] == env and logged["env_key"] == payload["env_key"]
    assert logged["data_fingerprint"] == payload["data_fingerprint"] and logged["weights_fingerprint"]
    assert logged["model_label"].endswith(" (random init)")


def test_env_and_fingerprints_are_the_same_across_reruns(runs):
    rows = _rows(runs)
    open_clip = rows[rows["model_source"] == "open_clip"]
    assert list(RESULT_COLUMNS[-4:]) == ["model_source", "env", "data_fingerprint", "world_size"]
    assert open_clip["run_id"].nunique() == 2
    for column in ("env", "data_fingerprint", "weights_fingerprint"):
        assert open_clip[column].nunique() == 1 and open_clip[column].iloc[0], column
    assert rows["env"].nunique() == 1 and rows["data_fingerprint"].nunique() == 1


def test_random_init_fingerprint_names_arch_and_seed(runs):
    from conftest import TINY_ARCH

    from clipbench.models.factory import weights_fingerprint

    rows = _rows(runs)
    fingerprint = rows.loc[rows["model_source"] == "open_clip", "weights_fingerprint"].iloc[0]
    assert TINY_ARCH in fingerprint and fingerprint.endswith(":seed=0")
    assert weights_fingerprint(TINY_ARCH, None, "open_clip", 1) != fingerprint  # another seed, other weights
    hf = rows.loc[rows["model_source"] == "hf", "weights_fingerprint"].iloc[0]
    assert hf and not hf.startswith("random:")


def test_hub_id_fingerprint_is_its_cached_revision(tmp_path):
    from clipbench.models.factory import weights_fingerprint

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny-clip"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert weights_fingerprint("org/tiny-clip", None, "hf", cache_dir=str(tmp_path)) == f"hf:org/tiny-clip@{commit}"
    assert weights_fingerprint("org/not-cached", None, "hf", cache_dir=str(tmp_path)) == ""


def test_hf_model_is_not_labelled_random_init(runs, tmp_path):
    build_report(runs / "results.csv", tmp_path / "report", runs=[runs])
    table = (tmp_path / "report" / "models" / "table.md").read_text()
    tex = (tmp_path / "report" / "models" / "table.tex").read_text()
    assert "tiny-hf-clip (hf)" in table and "tiny-hf-clip (hf)" in tex
    header, _, *body = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]
    models = [dict(zip(header, cells))["model"] for cells in body]
    assert sorted(models) == ["clipbench-test-vit (random init)", "tiny-hf-clip (hf)"]  # the open_clip row only


def test_model_label_names_source_architecture_and_weights():
    from clipbench.models.weights import model_label

    assert model_label("ViT-B-16", "openai") == "ViT-B-16 openai"
    assert model_label("ViT-B-16", "/ckpt/ft.safetensors") == "ViT-B-16 ft.safetensors"
    assert model_label("ViT-B-16", None) == model_label("ViT-B-16", float("nan")) == "ViT-B-16 (random init)"
    assert model_label("openai/clip-vit-base-patch16", None, "hf") == "openai/clip-vit-base-patch16 (hf)"
    assert model_label("/models/my-clip", "", "hf") == "my-clip (hf)"


def _image(path: Path, size: int) -> None:
    Image.fromarray(np.random.default_rng(size).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "annotations.json").write_text(json.dumps({"a.png": "a red square"}))
    _image(root / "images" / "a.png", 8)
    _image(root / "images" / "b.png", 8)
    return root


def test_data_fingerprint_follows_annotations_and_images_only(dataset, tmp_path, monkeypatch):
    from clipbench.fingerprints import data_fingerprint

    def fingerprint(root: Path) -> str:
        return data_fingerprint({"name": "captions", "root": str(root), "split": "test"})

    before = fingerprint(dataset)
    assert before and fingerprint(dataset) == before
    copy = shutil.copytree(dataset, tmp_path / "copy")  # another root, other mtimes, same files
    (copy / "images" / "a.png").touch()
    assert fingerprint(copy) == before
    (copy / "annotations.json").write_text(json.dumps({"a.png": "a blue square"}))
    assert fingerprint(copy) != before
    copy = shutil.copytree(dataset, tmp_path / "copy2")
    _image(copy / "images" / "b.png", 9)  # a replaced image
    assert fingerprint(copy) != before
    copy = shutil.copytree(dataset, tmp_path / "copy3")
    (copy / "images" / "b.png").unlink()  # a removed image
    assert fingerprint(copy) != before
    assert data_fingerprint({"name": "hub", "path": "org/dataset-on-the-hub"}) == ""
    monkeypatch.chdir(dataset)  # a split named like a folder in the working directory is no path
    assert data_fingerprint({"name": "captions", "root": str(dataset), "split": "images"}) == fingerprint(dataset)


def _row(run_id, env, data):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(run_id=run_id, timestamp="2026-01-01T00:00:00+00:00", split="test", n=10, seed=0, device="cpu",
               config_hash=f"h{run_id}", experiment="mixed", task="zeroshot", dataset="cifar100", model_arch="toyclip",
               method="clip", method_params="{}", metric="top1", value=0.5, model_source="open_clip", env=env,
               data_fingerprint=data)
    return row


def test_report_warns_when_it_compares_rows_from_different_environments_or_data(tmp_path, capsys):
    csv = tmp_path / "results.csv"
    append_rows(csv, [_row("a", "env1", "data1"), _row("b", "env1", "data1")])
    build_report(csv, tmp_path / "same", runs=[])
    assert "warning" not in capsys.readouterr().err
    append_rows(csv, [_row("c", "env2", "data2")])
    build_report(csv, tmp_path / "mixed", runs=[])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert "2 environments" in err[0] and "env1" in err[0] and "env2" in err[0] and "mixed" in err[0]
    assert "2 data fingerprints" in err[1] and "data1" in err[1] and "data2" in err[1]

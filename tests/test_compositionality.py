"""task=compositionality: SugarCrepe's subsets and Winoground through clip_benchmark's datasets, scored per
instance exactly as ``clip_benchmark.metrics.image_caption_selection.evaluate`` scores them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clip_benchmark.datasets.builder import build_dataset as cb_build_dataset
from clip_benchmark.datasets.builder import image_captions_collate_fn
from clip_benchmark.metrics import image_caption_selection
from helpers import compose_config
from torch.utils.data import DataLoader, Subset

from clipbench.config import ASSETS_DIR
from clipbench.config.tasks import CompositionalityConfig
from clipbench.data.caption_selection import _saved_winoground
from clipbench.data.catalogue import ClipBenchmarkConfig, build_clip_benchmark
from clipbench.errors import ConfigError
from clipbench.metrics.uncertainty import OUTCOMES_FILE
from clipbench.models import load_model
from clipbench.runner import run
from clipbench.tasks import RunContext
from clipbench.tasks.compositionality import evaluate


@pytest.fixture(scope="module")
def toy_model():
    return load_model("toyclip", str(ASSETS_DIR / "toyclip.safetensors"), device="cpu")


def _package_dataset(name: str, root, preprocess):
    """clip_benchmark's own dataset with the model's transform, as its cli builds it."""
    if name == "winoground":  # the package's WinoGround class over the toy world's save_to_disk copy
        ds = _saved_winoground(root)
        ds.transform = preprocess
        return ds
    return cb_build_dataset(name, root=str(root), transform=preprocess, split="test", download=False,
                            task="image_caption_selection")


def _package_outcomes(model, ds) -> dict[str, list[float]]:
    """clip_benchmark's evaluate on each instance alone: its per-instance text, image and group outcomes."""
    out = {"text_acc": [], "image_acc": [], "acc": []}
    for i in range(len(ds)):
        loader = DataLoader(Subset(ds, [i]), batch_size=1, collate_fn=image_captions_collate_fn)
        metrics = image_caption_selection.evaluate(model.model, loader, model.tokenizer, "cpu", amp=False)
        for key in out:
            out[key].append(metrics[key])
    return out


N = 10  # instances compared one by one


@pytest.mark.parametrize("name", ["sugar_crepe/swap_att", "winoground"])
def test_identical_outcomes_to_clip_benchmark(toy_root, toy_model, name):
    root = toy_root / "compositionality"
    ctx = RunContext(device=torch.device("cpu"), batch_size=4, limit=N, progress=False)  # batches of 4: 4 + 4 + 2
    ours = evaluate(toy_model, build_clip_benchmark(ClipBenchmarkConfig(name=name, root=str(root))), None,
                    CompositionalityConfig(), ctx)
    package_ds = Subset(_package_dataset(name, root, toy_model.preprocess), range(N))
    theirs = _package_outcomes(toy_model, package_ds)
    assert ours.n == len(package_ds) > 0
    np.testing.assert_array_equal(ours.outcomes["text_score"].values, theirs["text_acc"])
    if name == "winoground":
        np.testing.assert_array_equal(ours.outcomes["image_score"].values, theirs["image_acc"])
        np.testing.assert_array_equal(ours.outcomes["group_score"].values, theirs["acc"])
    else:  # one image: the image side cannot fail, the group score is the text score; only text_score is reported
        assert set(ours.metrics) == {"text_score"} and all(theirs["image_acc"])
    assert 0 < sum(theirs["text_acc"]) < len(package_ds)  # the toy model gets some right, some wrong
    # the package batched as its cli does (several instances per batch) gives the same means
    batched = image_caption_selection.evaluate(
        toy_model.model, DataLoader(package_ds, batch_size=4, collate_fn=image_captions_collate_fn),
        toy_model.tokenizer, "cpu", amp=False)
    assert batched["text_acc"] == pytest.approx(ours.metrics["text_score"])
    assert list(ours.outcomes["text_score"].sample_id[:2]) == ["0", "1"]


def test_run_writes_outcomes_predictions_and_rows(tmp_path, toy_root):
    cfg = compose_config([
        f"paths.toy={toy_root}", "+toy=compositionality", "model=toyclip", "dataset.name=winoground", "device=cpu",
        "num_workers=0", "progress=false", "save_predictions=true", "limit=6", f"results_csv={tmp_path / 'r.csv'}",
    ])
    rows = run(cfg, tmp_path / "run")
    values = {r["metric"]: r for r in rows}
    assert {"text_score", "image_score", "group_score", "skipped"} <= set(values)
    assert values["group_score"]["value"] <= min(values["text_score"]["value"], values["image_score"]["value"])
    assert values["text_score"]["n"] == 6 and values["text_score"]["ci_low"] <= values["text_score"]["value"]
    with np.load(tmp_path / "run" / OUTCOMES_FILE, allow_pickle=False) as saved:
        assert any("group_score" in key for key in saved.files)
    lines = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert len(lines) == 7 and lines[0] == "sample_id,target,pred,scores"
    assert np.asarray(json.loads(lines[1].split('"')[-2])).shape == (2, 2)  # images x captions logits


def test_bad_input_is_one_clear_line(tmp_path, toy_root):
    root = toy_root / "compositionality"
    with pytest.raises(ConfigError, match="subsets are add_att"):
        ClipBenchmarkConfig(name="sugar_crepe/swap_colour", root=str(root)).validate()
    with pytest.raises(ConfigError, match="does not exist; dataset.root holds COCO's val2017"):
        ClipBenchmarkConfig(name="sugar_crepe/add_obj", root=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match="dataset.language.*ships no 'de' for sugar_crepe/add_obj; it has: en"):
        ClipBenchmarkConfig(name="sugar_crepe/add_obj", root=str(root), language="de").validate()


def test_unreadable_image_is_a_counted_skip(tmp_path, toy_root, toy_model):
    import shutil

    root = tmp_path / "sc"
    shutil.copytree(toy_root / "compositionality" / "val2017", root / "val2017")
    shutil.copy(toy_root / "compositionality" / "add_obj.json", root)
    first = json.loads((root / "add_obj.json").read_text())["0"]["filename"]
    (root / "val2017" / first).write_bytes(b"not an image")
    ds = build_clip_benchmark(ClipBenchmarkConfig(name="sugar_crepe/add_obj", root=str(root)))
    result = evaluate(toy_model, ds, None, CompositionalityConfig(), RunContext(device=torch.device("cpu"), progress=False))
    assert result.skipped == 1 and result.n == len(ds) - 1 and "0" not in result.outcomes["text_score"].sample_id

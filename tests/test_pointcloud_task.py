"""task=pointcloud end to end, checked against an independent recomputation; view weights and their search."""

from __future__ import annotations

import itertools
import json
import math

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_ARCH, base_args, run_cli
from helpers import compose_config, tmp_overrides
from test_projection import numpy_reference_v1

from clipbench.errors import ConfigError
from clipbench.models import load_model
from clipbench.runner import run, validate
from clipbench.tasks.pointcloud import search_view_weights, view_logits
from clipbench.toy.writers.pointclouds import write_modelnet40, write_scanobjectnn

CLASSES = ["airplane", "flower_pot", "night_stand"]


def _shapes(n: int, seed: int, points: int = 48) -> tuple[np.ndarray, list[int]]:
    """Class 0: a flat disc, 1: a tall stick, 2: a ball -- distinguishable depth maps."""
    rng = np.random.default_rng(seed)
    labels = [i % 3 for i in range(n)]
    clouds = rng.normal(0, 0.4, (n, points, 3)).astype(np.float32)
    clouds[np.array(labels) == 0, :, 2] *= 0.05
    clouds[np.array(labels) == 1, :, :2] *= 0.05
    return clouds, labels


@pytest.fixture(scope="module")
def modelnet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("modelnet")
    test, test_labels = _shapes(9, seed=0)
    test[4] = np.nan  # an all-NaN cloud: skipped and counted
    test[5, :10] = np.inf  # non-finite points: dropped
    write_modelnet40(root, "test", test, test_labels, CLASSES, files=2)
    write_modelnet40(root, "train", *_shapes(15, seed=1), CLASSES)
    return root


def _run(tmp_path, *extra):
    cfg = compose_config(tmp_overrides(tmp_path, "task=pointcloud", "dataset=modelnet40", *extra))
    return run(cfg, tmp_path / "run")


def test_scores_match_an_independent_v1_computation(tmp_path, modelnet_root):
    rows = _run(tmp_path, f"dataset.root={modelnet_root}", "dataset.num_points=32", "save_predictions=true")
    model = load_model(TINY_ARCH, None)  # the cached instance the run used
    prompts = [f"point cloud depth map of a {c.replace('_', ' ')}." for c in CLASSES]
    with torch.no_grad():
        text = F.normalize(model.model.encode_text(model.tokenizer(prompts)), dim=-1)
    with h5py.File(modelnet_root / "modelnet40_ply_hdf5_2048" / "ply_data_test0.h5") as f:
        clouds = f["data"][:]
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert sorted(preds.sample_id) == [0, 1, 2, 3, 5, 6, 7, 8]  # cloud 4 (all NaN) skipped
    for i in (0, 2, 3):
        maps = torch.from_numpy(numpy_reference_v1(clouds[i][:32]))[:, None]
        images = F.interpolate(maps, size=(32, 32), mode="bilinear", align_corners=True).repeat(1, 3, 1, 1)
        with torch.no_grad():
            views = F.normalize(model.model.encode_image(images), dim=-1)  # (6, D)
        # PointCLIP: concatenated view features . (text repeated 6 times, re-normalised)
        concat = views.reshape(-1)
        repeated = F.normalize(text.repeat(1, 6), dim=-1)
        expected = model.model.logit_scale.exp() * repeated @ concat
        got = torch.tensor(json.loads(preds.loc[preds.sample_id == i, "scores"].item()))
        torch.testing.assert_close(got, expected.float(), atol=2e-4, rtol=1e-4)
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["top1"]["n"] == 8 and by_metric["skipped"]["value"] == 1 and by_metric["skipped"]["n"] == 9
    assert abs(by_metric["top1"]["value"] - (preds.target == preds.pred).mean()) < 1e-6
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skip_reasons"] == {"empty or non-finite cloud": 1}
    assert metrics["view_weights"] == [1.0] * 6 and "searched_view_weights" not in metrics


def test_view_logits_equal_pointclip_concatenation_form():
    torch.manual_seed(0)
    views = F.normalize(torch.randn(4, 6, 16), dim=-1)
    text = F.normalize(torch.randn(5, 16), dim=-1)
    weights = torch.tensor([1.0, 0.5, 0.25, 1.0, 0.75, 0.5])
    concat = (views * weights[None, :, None]).reshape(4, -1)  # PointCLIP weights the view features
    expected = 100.0 * concat @ F.normalize(text.repeat(1, 6), dim=-1).T
    got = view_logits(views @ text.T, weights, 100.0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _toy_cosines():
    # 4 samples, 2 views, 2 classes. View 0 is right on every sample by a small margin,
    # view 1 is wrong on samples 0-1 by a large margin and right on 2-3.
    cos = torch.tensor([
        [[0.6, 0.5], [0.0, 0.3]],
        [[0.6, 0.5], [0.0, 0.3]],
        [[0.5, 0.6], [0.0, 0.3]],
        [[0.5, 0.6], [0.0, 0.3]],
    ])
    return cos, torch.tensor([0, 0, 1, 1])


def test_weight_search_finds_the_hand_computed_best():
    cos, targets = _toy_cosines()
    # uniform: samples 0-1 score class 0: 0.6 vs 0.8 -> wrong; top-1 = 0.5.
    # w = (1, 0.25): 0.6 vs 0.5 + 0.075 = 0.575 -> right; w = (1, 0.5): 0.6 vs 0.65 -> wrong.
    weights, acc, mode = search_view_weights(cos, targets, [0.25, 0.5, 0.75, 1.0])
    assert (weights, acc, mode) == ([1.0, 0.25], 1.0, "exhaustive")
    # with few combinations allowed the same grid is walked by coordinate ascent
    weights, acc, mode = search_view_weights(cos, targets, [0.25, 0.5, 0.75, 1.0], max_combinations=4)
    assert (weights, acc, mode) == ([1.0, 0.25], 1.0, "coordinate_ascent")


def test_weight_search_keeps_uniform_on_ties():
    cos = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])
    assert search_view_weights(cos, torch.tensor([0]), [0.25, 0.5, 1.0])[0] == [1.0, 1.0]


def test_searched_weights_reported_beside_uniform_and_searched_on_train(tmp_path, modelnet_root):
    rows = _run(tmp_path, f"dataset.root={modelnet_root}", "dataset.num_points=32", "task.view_weights=search",
                "task.search_samples=10")
    metrics = {r["metric"] for r in rows}
    assert {"top1", "top1_searched_weights"} <= metrics and not any(m.startswith("top5") for m in metrics)  # 3 classes
    extra = json.loads((tmp_path / "run" / "metrics.json").read_text())
    search = extra["view_weight_search"]
    assert search["split"] == "train" and search["n"] == 10 and search["mode"] == "exhaustive"  # 10 of 15 train clouds
    assert len(extra["searched_view_weights"]) == 6
    assert set(extra["searched_view_weights"]) <= {0.25, 0.5, 0.75, 1.0}


def test_configured_weights_change_the_scores(tmp_path, modelnet_root):
    weights = "[1.0,0.0,0.0,0.0,0.0,0.0]"
    _run(tmp_path, f"dataset.root={modelnet_root}", "dataset.num_points=32", "save_predictions=true",
         f"task.view_weights={weights}")
    only_view0 = pd.read_csv(tmp_path / "run" / "predictions.csv")
    _run(tmp_path, f"dataset.root={modelnet_root}", "dataset.num_points=32", "save_predictions=true", "limit=3")
    uniform = pd.read_csv(tmp_path / "run" / "predictions.csv")
    a, b = json.loads(only_view0.scores[0]), json.loads(uniform.scores[0])
    assert len(uniform) == 3 and a != b
    # with one view weighted 1, the score is logit_scale / sqrt(6) * cos(view 0, text)
    model = load_model(TINY_ARCH, None)
    assert max(abs(v) for v in a) <= model.logit_scale / math.sqrt(6) + 1e-4


def test_cli_end_to_end_v2_on_scanobjectnn(tmp_path):
    clouds, labels = _shapes(4, seed=3, points=40)
    write_scanobjectnn(tmp_path / "so", "pb_t50_rs", "test", clouds, [label + 4 for label in labels])
    proc = run_cli(*base_args(tmp_path, "task=pointcloud", "dataset=scanobjectnn", f"dataset.root={tmp_path / 'so'}",
                              "dataset.variant=pb_t50_rs", "dataset.sampling=fps", "dataset.num_points=16",
                              "task.projection=pointclip_v2", "task.normalize=true"))
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(tmp_path / "results.csv")
    assert set(frame.metric) == {"top1", "top5", "mean_per_class_recall", "skipped"}
    assert (frame.dataset == "scanobjectnn").all() and (frame.n[frame.metric == "top1"] == 4).all()
    extra = json.loads(next((tmp_path / "run").glob("**/metrics.json")).read_text())
    assert extra["num_views"] == 10 and extra["projection"] == "pointclip_v2"


def test_bad_task_keys_fail_validation_naming_the_key(tmp_path, modelnet_root):
    for override, key in [("task.projection=pointclip_v3", "task.projection"), ("task.view_weights=[1,1]", "task.view_weights"),
                          ("task.views=[[0,0]]", "task.views"), ("task.search_split=test", "task.search_split"),
                          ("task.tilts=[[0,0,0]]", "task.tilts")]:
        cfg = compose_config(tmp_overrides(tmp_path, "task=pointcloud", "dataset=modelnet40", f"dataset.root={modelnet_root}", override))
        with pytest.raises(ConfigError) as err:
            validate(cfg)
        assert str(err.value).startswith(key), override


def test_cli_list_file_naming_a_missing_h5_is_one_error_line(tmp_path):
    broken = tmp_path / "broken"
    folder = write_modelnet40(broken, "test", *_shapes(3, seed=4), CLASSES)
    (folder / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test7.h5\n")
    proc = run_cli(*base_args(tmp_path, "task=pointcloud", "dataset=modelnet40", f"dataset.root={broken}"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    error_lines = [line for line in (proc.stderr + proc.stdout).splitlines() if "ply_data_test7.h5" in line]
    assert len(error_lines) == 1 and "test_files.txt" in error_lines[0]


def test_foreground_patch_weights_hand_case():
    from clipbench.tasks.pointcloud import foreground_patch_weights

    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 1, 2] = mask[0, 2, 1] = True  # bounding box rows 1-2, cols 1-2; (2, 2) empty
    weights = foreground_patch_weights(mask, alpha=0.3, sigma=100.0, shape="uniform")
    expected = torch.zeros(4, 4)
    expected[1, 1] = expected[1, 2] = expected[2, 1] = 0.3
    torch.testing.assert_close(weights[0], expected)
    assert weights[1].abs().sum().item() == 0.0  # no foreground: no bias


def test_falip_with_zero_alpha_equals_clip_and_positive_alpha_changes_scores(tmp_path, modelnet_root, monkeypatch):
    common = (f"dataset.root={modelnet_root}", "dataset.num_points=32", "save_predictions=true", "limit=4")
    _run(tmp_path, *common)
    clip = pd.read_csv(tmp_path / "run" / "predictions.csv")
    _run(tmp_path, *common, "method=falip", "method.alpha=0.0", "method.layers=[1,2]")
    falip_zero = pd.read_csv(tmp_path / "run" / "predictions.csv")
    for a, b in zip(clip.scores, falip_zero.scores):
        np.testing.assert_allclose(json.loads(a), json.loads(b), atol=2e-4)

    from clipbench.methods import falip as falip_module

    seen = []
    original = falip_module.encode_with_attention_bias
    monkeypatch.setattr(falip_module, "encode_with_attention_bias", lambda m, im, bias, *a, **k: seen.append(bias) or original(m, im, bias, *a, **k))
    _run(tmp_path, *common, "method=falip", "method.alpha=5.0", "method.shape=uniform", "method.layers=[1,2]")
    falip = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert any(json.loads(a) != json.loads(b) for a, b in zip(clip.scores, falip.scores))
    bias = torch.cat(seen)  # (clouds * 6 views, 17, 17): the CLS row over the 4x4 patches
    assert bias.shape[1:] == (17, 17) and set(bias[:, 0, 1:].unique().tolist()) <= {0.0, 5.0}
    assert (bias[:, 0, 1:] > 0).any(dim=1).all()  # every view of these clouds has foreground
    assert (bias[:, 0, 1:] == 0).any()  # ... and background patches stay unbiased
    assert bias[:, 1:].abs().sum().item() == 0.0


@pytest.mark.parametrize("experiment", ["pointclip", "falip_pointcloud"])
def test_experiment_sweeps_compose_and_validate(tmp_path, monkeypatch, experiment):
    from hydra import compose, initialize_config_dir

    from clipbench.cli import CONF_DIR

    write_modelnet40(tmp_path / "mn", "test", *_shapes(3, seed=5), CLASSES)
    write_scanobjectnn(tmp_path / "so", "obj_only", "test", *_shapes(3, seed=6))
    roots = [f"paths.modelnet40={tmp_path / 'mn'}", f"paths.scanobjectnn={tmp_path / 'so'}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        base = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        params = {k: str(v).split(",") for k, v in base.hydra.sweeper.params.items()}
        jobs = 0
        for combo in itertools.product(*params.values()):
            overrides = [f"experiment={experiment}", *roots, *(f"{k}={v}" for k, v in zip(params, combo))]
            cfg = compose("config", overrides=overrides)
            checked = validate(cfg)
            assert checked.task.name == "pointcloud"
            jobs += 1
    assert jobs == (8 if experiment == "pointclip" else 4)
    if experiment == "pointclip":
        assert checked.task.view_weights == "search"


def test_custom_views_resolution_and_weights(tmp_path, modelnet_root):
    rows = _run(tmp_path, f"dataset.root={modelnet_root}", "dataset.num_points=32", "limit=3",
                "task.views=[[0,0,1.5707963],[0,1.5707963,1.5707963]]", "task.resolution=64",
                "task.view_weights=[1.0,0.5]", "save_predictions=true")
    extra = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert extra["num_views"] == 2 and extra["view_weights"] == [1.0, 0.5]
    assert {r["metric"] for r in rows} == {"top1", "mean_per_class_recall", "skipped"}
    scores = json.loads(pd.read_csv(tmp_path / "run" / "predictions.csv").scores[0])
    # |sum_v w_v cos| <= 1.5, times logit_scale / sqrt(2)
    assert max(abs(v) for v in scores) <= 1.5 * load_model(TINY_ARCH, None).logit_scale / math.sqrt(2) + 1e-4

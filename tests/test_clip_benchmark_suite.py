"""The clip_benchmark catalogue: predictions equal clip_benchmark's own evaluation on generated data in its
published formats (wds shards, an ImageNet-R-style folder), retrieval, missing-data lines, and the suite
experiments end to end."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_ARCH, base_args, run_cli
from PIL import Image

from clipbench.config.methods import MethodConfig
from clipbench.config.tasks import RetrievalConfig, ZeroShotConfig
from clipbench.data.catalogue import ClipBenchmarkConfig, build_clip_benchmark, hf_repo
from clipbench.errors import ConfigError
from clipbench.methods.clip import ClipMethod
from clipbench.models import load_model
from clipbench.tasks.base import RunContext
from clipbench.tasks.retrieval import evaluate as evaluate_retrieval
from clipbench.tasks.zeroshot import evaluate as evaluate_zeroshot
from clipbench.toy.writers.catalogue import write_generated_suite

SUITE = {"cars": 7, "vtab/pcam": 2, "voc2007_multilabel": 5, "flickr30k": 0}


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory) -> Path:
    return write_generated_suite(tmp_path_factory.mktemp("suite"), SUITE, n=20, seed=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(TINY_ARCH, None, device=torch.device("cpu"), reuse=False)


@pytest.fixture(scope="module")
def imagenet_r_root(tmp_path_factory) -> Path:
    """ImageNet-R's release layout: one folder per wnid (the 200 clip_benchmark masks the class names with)."""
    from clip_benchmark.datasets import builder

    wnids = re.findall(r"'(n\d{8})'", re.search(r"imagenet_r_wnids = \{(.*?)\}", inspect.getsource(builder.build_dataset)).group(1))
    assert len(wnids) == 200
    root = tmp_path_factory.mktemp("imagenet-r")
    rng = np.random.default_rng(1)
    for i, wnid in enumerate(sorted(wnids)):
        (root / wnid).mkdir()
        pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 30, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / wnid / f"art_{i}.jpg")
    return root


def ours(model, dataset, **ctx):
    ctx = RunContext(device=torch.device("cpu"), batch_size=8, num_workers=0, save_predictions=True, progress=False, **ctx)
    return evaluate_zeroshot(model, dataset, ClipMethod(MethodConfig(), model), ZeroShotConfig(), ctx)


def clip_benchmark_logits(model, name: str, root: Path):
    """clip_benchmark's own pipeline: its dataset builder, zero_shot_classifier and run_classification."""
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier

    ds = build_dataset(name, root=str(root), transform=model.preprocess, split="test", download=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0)
    classifier = zero_shot_classifier(model.model, model.tokenizer, ds.classes, ds.templates, "cpu", amp=False)
    logits, target = run_classification(model.model, classifier, loader, "cpu", amp=False)
    return ds, logits, target


@pytest.mark.parametrize("name", ["wds/cars", "wds/vtab/pcam"])
def test_wds_predictions_equal_clip_benchmark(model, suite_root, name):
    from sklearn.metrics import balanced_accuracy_score

    folder = suite_root / f"wds_{name[4:].replace('/', '-')}"
    dataset = build_clip_benchmark(ClipBenchmarkConfig(name=name, root=str(suite_root)))
    result = ours(model, dataset)
    cb_ds, logits, target = clip_benchmark_logits(model, name, folder)
    assert dataset.classnames == cb_ds.classes
    assert dataset.templates == [t.replace("{c}", "{}") for t in cb_ds.templates]
    preds = [r["pred"] for r in result.predictions]
    assert [r["target"] for r in result.predictions] == target.tolist()
    assert preds == logits.argmax(1).tolist()
    # clip_benchmark's float64 values, to float64 rounding
    exact = {"rel": 0, "abs": 1e-12}
    assert result.metrics["top1"] == pytest.approx((logits.argmax(1) == target).sum().item() / len(target), **exact)
    assert result.metrics["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(target, logits.argmax(1)), **exact)
    if len(cb_ds.classes) > 5:
        top5 = (logits.topk(5, 1).indices == target[:, None]).any(1).float().mean().item()
        assert result.metrics["top5"] == pytest.approx(top5)
    else:  # top-5 over five classes or fewer is 1.0 whatever the model (clip_benchmark reports it at five)
        assert "top5" not in result.metrics
    scores = torch.tensor([json.loads(r["scores"]) for r in result.predictions]) / model.logit_scale
    assert torch.allclose(scores, logits / 100.0, atol=1e-4)


def test_multilabel_map_equals_clip_benchmark(model, suite_root):
    from clip_benchmark.metrics.zeroshot_classification import average_precision_per_class

    dataset = build_clip_benchmark(ClipBenchmarkConfig(name="wds/voc2007_multilabel", root=str(suite_root)))
    result = ours(model, dataset)
    _, logits, target = clip_benchmark_logits(model, "wds/voc2007_multilabel", suite_root / "wds_voc2007_multilabel")
    assert target.shape == (20, 5)
    assert [json.loads(r["target"]) for r in result.predictions] == target.tolist()
    expected = average_precision_per_class(logits, target).mean().item()
    assert set(result.metrics) == {"mean_average_precision"}
    assert result.metrics["mean_average_precision"] == pytest.approx(expected, abs=1e-6)


def test_imagenet_r_folder_equals_clip_benchmark(model, imagenet_r_root):
    dataset = build_clip_benchmark(ClipBenchmarkConfig(name="imagenet-r", root=str(imagenet_r_root)))
    assert len(dataset.classnames) == 200 and len(dataset.templates) > 18  # clip_benchmark's ImageNet templates
    result = ours(model, dataset)
    _, logits, target = clip_benchmark_logits(model, "imagenet-r", imagenet_r_root)
    assert [r["target"] for r in result.predictions] == target.tolist()
    assert [r["pred"] for r in result.predictions] == logits.argmax(1).tolist()


def test_retrieval_equals_clip_benchmark(model, suite_root):
    from clip_benchmark.datasets.builder import build_dataset, get_dataset_collate_fn
    from clip_benchmark.metrics.zeroshot_retrieval import evaluate

    dataset = build_clip_benchmark(ClipBenchmarkConfig(name="wds/flickr30k", root=str(suite_root)))
    ctx = RunContext(device=torch.device("cpu"), batch_size=8, num_workers=0, progress=False)
    result = evaluate_retrieval(model, dataset, ClipMethod(MethodConfig(), model), RetrievalConfig(recall_k=[1, 5]), ctx)
    ds = build_dataset("wds/flickr30k", root=str(suite_root / "wds_flickr30k"), transform=model.preprocess, split="test", task="zeroshot_retrieval")
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=get_dataset_collate_fn("flickr30k"))
    expected = evaluate(model.model, loader, model.tokenizer, "cpu", amp=False, recall_k_list=[1, 5])
    assert result.n == 20 and len(dataset.captions) == 40
    for metric, value in expected.items():
        assert result.metrics[metric] == pytest.approx(value), metric


def test_classname_and_template_overrides(model, suite_root):
    names = [f"thing {i}" for i in range(7)]
    dataset = build_clip_benchmark(ClipBenchmarkConfig(name="wds/cars", root=str(suite_root), classnames=names))
    assert dataset.classnames == names
    custom = suite_root / "names.json"
    custom.write_text(json.dumps({"cars": [f"car {i}" for i in range(7)]}))
    assert build_clip_benchmark(ClipBenchmarkConfig(name="wds/cars", root=str(suite_root), classnames=str(custom))).classnames[0] == "car 0"
    with pytest.raises(ConfigError, match="3 names for 7 classes"):
        build_clip_benchmark(ClipBenchmarkConfig(name="wds/cars", root=str(suite_root), classnames=names[:3]))
    ctx = RunContext(device=torch.device("cpu"), batch_size=8, num_workers=0, save_predictions=True, progress=False)
    default = evaluate_zeroshot(model, dataset, ClipMethod(MethodConfig(), model), ZeroShotConfig(), ctx)
    simple = evaluate_zeroshot(model, dataset, ClipMethod(MethodConfig(), model), ZeroShotConfig(templates="simple"), ctx)
    assert default.predictions[0]["scores"] != simple.predictions[0]["scores"]


@pytest.mark.parametrize(
    "name, root, expected",
    [
        ("wds/sun397", "missing", hf_repo("sun397")),
        ("wds/vtab/svhn", "missing", "clip-benchmark/wds_vtab-svhn"),
        ("imagenet1k", "missing", "ILSVRC2012_img_val.tar"),
        ("mnist", "missing", "dataset.download=true"),
        ("mnist", None, "is not set"),
        ("imagenet99", "missing", "not in clip_benchmark's catalogue"),
    ],
)
def test_missing_dataset_says_how_to_get_it(tmp_path, name, root, expected):
    cfg = ClipBenchmarkConfig(name=name, root=None if root is None else str(tmp_path / root))
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_retrieval_name_on_zeroshot_is_refused(model, suite_root):
    dataset = build_clip_benchmark(ClipBenchmarkConfig(name="wds/flickr30k", root=str(suite_root)))
    with pytest.raises(ConfigError, match="use task=retrieval"):
        ours(model, dataset)


def _suite_for(experiment: str, root: Path, n: int = 6) -> list[str]:
    """The dataset names an experiment sweeps, generated small under root."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "experiments" / f"{experiment}.yaml")
    swept = (cfg.hydra.sweeper.get("params") or {}).get("dataset.name")
    names = swept.split(",") if swept else []
    names += [o.split("=", 1)[1] for job in cfg.hydra.sweeper.jobs for o in job if o.startswith("dataset.name=")]
    names += [cfg.dataset.name] if "dataset" in cfg else []
    names = [name.removeprefix("wds/") for name in names]
    sizes = {name: 0 if name in ("flickr30k", "mscoco_captions") else 3 + i % 4 for i, name in enumerate(names)}
    write_generated_suite(root, sizes, n=n, seed=5)
    return names


def test_model_variants_runs_end_to_end(tmp_path):
    names = _suite_for("model_variants", tmp_path / "data")
    jobs = '[["model.arch=clipbench-test-vit","model.pretrained=null"],["model.arch=toyclip","model.pretrained=${asset:toyclip.safetensors}"]]'
    args = [a for a in base_args(tmp_path) if not a.startswith("model.")]
    proc = run_cli("-m", "experiment=model_variants", f"dataset.root={tmp_path / 'data'}", f"hydra.sweeper.jobs={jobs}", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "results.csv")
    top1 = rows[rows["metric"] == "top1"]
    assert len(names) == 7
    assert sorted(top1["dataset"].unique()) == sorted(f"wds/{n}" for n in names)
    assert set(top1["model_arch"]) == {TINY_ARCH, "toyclip"} and len(top1) == 14
    assert set(rows["experiment"]) == {"model_variants"}


@pytest.mark.slow
def test_datacomp38_runs_end_to_end(tmp_path):
    names = _suite_for("datacomp38", tmp_path / "data", n=4)
    proc = run_cli("-m", "experiment=datacomp38", f"dataset.root={tmp_path / 'data'}", *base_args(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(names) == 37 and rows["dataset"].nunique() == 37
    retrieval = rows[rows["task"] == "retrieval"]
    assert set(retrieval["dataset"]) == {"wds/flickr30k", "wds/mscoco_captions"}
    assert (rows[rows["task"] == "zeroshot"].groupby("dataset")["metric"].apply(lambda m: "top1" in set(m))).all()


def test_region_prior_experiment_composes_and_runs(tmp_path):
    _suite_for("imagenet1k_region_prior", tmp_path / "data")
    jobs = '[["method=clip"],["method=falip","method.region=center:0.5","method.layers=[-1]"],["method=red_circle","method.region=center:0.75"]]'
    proc = run_cli("-m", "experiment=imagenet1k_region_prior", f"dataset.root={tmp_path / 'data'}", f"hydra.sweeper.jobs={jobs}",
                   *base_args(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "results.csv")
    top1 = rows[rows["metric"] == "top1"]
    assert list(top1["method"]) == ["clip", "falip", "red_circle"]
    assert set(top1["dataset"]) == {"wds/imagenet1k"} and set(top1["n"]) == {6}

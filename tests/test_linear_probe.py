"""task=linear_probe: identical predictions to clip_benchmark's own linear probe, the feature cache's key, the
seeded shot subset and validation split, OpenAI's protocol, the reported rows."""

from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pytest
import torch
from conftest import ROOT, colour_images
from helpers import compose_config, load_module
from torch.utils.data import DataLoader

from clipbench.config import ASSETS_DIR
from clipbench.runner import run

TOY_WEIGHTS = ASSETS_DIR / "toyclip.safetensors"
BENCHMARK = load_module(ROOT / "benchmarks" / "linear_probe.py")
BATCH = 64  # extraction and fit batches on both sides (clip_benchmark's --batch_size default)
EPOCHS = 10  # clip_benchmark's --fewshot_epochs default, clipbench's task.epochs default


def run_probe(tmp_path, toy_root, *overrides, name="run"):
    """clipbench's probe on the toy probe set (image folders train/val/test) with the bundled toy model."""
    cfg = compose_config([
        "+toy=linear_probe", f"paths.toy={toy_root}", "device=cpu", "num_workers=0", "progress=false",
        f"batch_size={BATCH}", f"results_csv={tmp_path / 'results.csv'}", f"cache_dir={tmp_path / 'cache'}",
        "save_predictions=true", *overrides,
    ])
    rows = run(cfg, tmp_path / name)
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    with open(tmp_path / name / "predictions.csv") as f:
        predictions = list(csv.DictReader(f))
    return {r["metric"]: r for r in rows}, metrics, predictions


@pytest.fixture
def on_cpu_as_cuda():
    """clip_benchmark's linear probe run on the CPU: its .cuda() moves kept there, its accuracy() fixed for numpy
    >= 2.3 (benchmarks/linear_probe.py cpu_as_cuda says how); amp=False below, so it computes in fp32."""
    with BENCHMARK.cpu_as_cuda():
        yield


@pytest.fixture(scope="module")
def cb_features(toy_root):
    """weights -> each toy probe split through clip_benchmark's own Featurizer: the bundled toy weights, or
    random-init toyclip (seed 0) as the runner builds it (load_model returns the same instance to both)."""
    from clip_benchmark.metrics import linear_probe
    from torchvision.datasets import ImageFolder

    from clipbench.models import load_model

    cache = {}

    def of(weights: str | None):
        if weights not in cache:
            model = load_model("toyclip", weights, device="cpu", seed=0)
            featurizer = linear_probe.Featurizer(model.model, normalize=True)
            out = {}
            with torch.no_grad():
                for split in ("train", "val", "test"):
                    data = ImageFolder(str(toy_root / "linprobe" / split), transform=model.preprocess, allow_empty=True)
                    batches = [(featurizer(x), y) for x, y in DataLoader(data, batch_size=BATCH)]
                    out[split] = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
            cache[weights] = model, out
        return cache[weights]

    return of


def clip_benchmark_probe(tmp_path, monkeypatch, cb_features, fewshot_k, seed, val_indices=None, val_split=True):
    """clip_benchmark.metrics.linear_probe.evaluate on the same features.

    Its feature cache (features_<split>.pt, what its first pass writes) is written beforehand, so its
    global-RNG draw of the shot subset (``torch.randperm`` after ``torch.manual_seed(seed)``) is the first
    draw, as clipbench's own seeded generator makes it. ``val_indices``: the (train, val) indices of a
    validation share of the train split that clipbench drew, as the CLI's random_split passes them. Returns
    its metrics and the test logits of its final fit's head, in test-set order."""
    from clip_benchmark.metrics import linear_probe

    model, features = cb_features
    sets = {"train": features["train"], "test": features["test"], "val": features["val"] if val_split else None}
    if val_indices is not None:
        train_x, train_y = features["train"]
        sets["train"], sets["val"] = [(train_x[i], train_y[i]) for i in map(torch.as_tensor, val_indices)]
    feature_dir = tmp_path / "cb_features" / "toyclip"
    feature_dir.mkdir(parents=True)
    for split, data in sets.items():
        if data is not None:
            torch.save(data[0], feature_dir / f"features_{split}.pt")
            torch.save(data[1], feature_dir / f"targets_{split}.pt")
    heads = []
    original_train = linear_probe.train
    monkeypatch.setattr(linear_probe, "train", lambda *a, **k: heads.append(original_train(*a, **k)) or heads[-1])
    torch.manual_seed(seed)
    metrics = linear_probe.evaluate(
        model.model, None, None, fewshot_k, BATCH, 0, 0.1, EPOCHS, "toyclip", seed, str(tmp_path / "cb_features"),
        device="cuda", val_dataloader=object() if sets["val"] is not None else None, normalize=True, amp=False,
    )
    with torch.no_grad():
        logits = heads[-1](features["test"][0])
    return metrics, logits


def assert_same_predictions(ours, logits):
    assert [int(p["pred"]) for p in ours] == logits.argmax(dim=1).tolist()
    scores = np.array([json.loads(p["scores"]) for p in ours])
    np.testing.assert_allclose(scores, logits.numpy(), atol=1e-4)


@pytest.mark.parametrize("weights,fewshot_k,overrides", [
    (None, -1, []),  # weight decay searched on the named val split, final fit on train + val (random init: the
                     # validation scores differ along the grid; the toy weights score every point alike)
    (None, 1, ["task.val_split=null", "task.val_proportion=0.3", "task.seeds=[3]"]),  # a seeded share; shots only
    ("toy", -1, ["task.val_split=null", "task.seeds=[5]"]),  # no validation: weight decay 0
])
def test_identical_predictions_to_clip_benchmark(tmp_path, toy_root, monkeypatch, on_cpu_as_cuda, cb_features,
                                                 weights, fewshot_k, overrides):
    weights = str(TOY_WEIGHTS) if weights == "toy" else None
    rows, metrics, ours = run_probe(tmp_path, toy_root, f"model.pretrained={weights or 'null'}",
                                    f"task.fewshot_k={fewshot_k}", *overrides)
    seed = metrics["linear_probe"]["seeds"][0]
    split = None
    if "task.val_proportion=0.3" in overrides:
        from clipbench.probe.splits import validation_split

        split = validation_split(metrics["linear_probe"]["samples"]["train"], 0.3, seed)
    cb, logits = clip_benchmark_probe(tmp_path, monkeypatch, cb_features(weights), fewshot_k, seed, split,
                                      val_split="task.val_split=null" not in overrides)
    assert_same_predictions(ours, logits)
    if weights is None:  # validation scores that differ along the grid: the search's comparisons are compared too
        assert len(set(metrics["linear_probe"]["per_seed"][0]["search"].values())) > 2
    assert rows["lp_weight_decay"]["value"] == cb["weight_decay"]
    assert rows["lp_top1"]["value"] == pytest.approx(cb["lp_acc1"], abs=1e-12)
    assert rows["lp_top5"]["value"] == pytest.approx(cb["lp_acc5"], abs=1e-12)
    assert rows["lp_mean_per_class_recall"]["value"] == pytest.approx(cb["lp_mean_per_class_recall"], abs=1e-12)


def test_feature_cache_key_covers_split_transform_normalisation_and_data(tmp_path, toy_root):
    """Each input of the features misses the cache when it changes (clip_benchmark keys by model and dataset
    name only, so it would reuse them); the same inputs hit it, also from disk in a new process."""
    import dataclasses

    import torchvision.transforms as T

    from clipbench.data.classification import ImageFolder
    from clipbench.models import load_model
    from clipbench.probe import features as pf
    from clipbench.runtime import Throughput
    from clipbench.tasks.base import RunContext

    model = load_model("toyclip", str(TOY_WEIGHTS), device="cpu")
    ctx = RunContext(device=torch.device("cpu"), batch_size=BATCH, cache_dir=str(tmp_path), progress=False)
    dataset = ImageFolder(toy_root / "linprobe", "val")
    params = {"name": "imagefolder", "root": str(toy_root / "linprobe"), "split": "val"}

    def features(model=model, params=params, data="d0", normalize=True):
        return pf.split_features(model, dataset, params, data, normalize, ctx, Throughput(ctx.device), "val")

    first, hit = features()
    assert not hit and torch.allclose(first.features.norm(dim=1), torch.ones(len(first.targets)))
    pf._MEMORY.clear()  # a new process: from the safetensors file
    again, hit = features()
    assert hit and torch.equal(again.features, first.features) and torch.equal(again.targets, first.targets)
    assert list((tmp_path / "features").glob("*.safetensors"))
    raw, hit = features(normalize=False)
    assert not hit and not torch.allclose(raw.features.norm(dim=1), torch.ones(len(raw.targets)))
    flipped = dataclasses.replace(model, preprocess=T.Compose([T.RandomHorizontalFlip(p=1.0), model.preprocess]))
    other_transform, hit = features(model=flipped)
    assert not hit and not torch.equal(other_transform.features, first.features)
    assert not features(params={**params, "split": "train"})[1]  # another split of the same name and root
    assert not features(data="d1")[1]  # the files changed on disk


def test_a_later_run_adds_a_validation_split(tmp_path, toy_root, on_cpu_as_cuda, caplog):
    """Train and test features come from the first run's cache; the validation split is extracted. Extraction
    and fit times are reported apart. (clip_benchmark finds its cache by targets_train.pt and then fails to
    load features_val.pt, shown last.)"""
    import logging

    caplog.set_level(logging.INFO, logger="clipbench.tasks.linear_probe")
    run_probe(tmp_path, toy_root, "task.val_split=null", "task.epochs=2", name="first")
    caplog.clear()
    rows, metrics, _ = run_probe(tmp_path, toy_root, "task.val_split=val", "task.epochs=2", name="second")
    assert "features of split(s) test, train from the cache" in caplog.text
    assert "linear probe: extraction" in caplog.text and ", fit " in caplog.text
    probe = metrics["linear_probe"]
    assert probe["samples"]["val"] > 0 and len(probe["per_seed"][0]["search"]) >= 7
    assert probe["fit_seconds"] > 0 and probe["extraction_seconds"] > 0 and rows["lp_weight_decay"]["value"] > 0

    from clip_benchmark.metrics import linear_probe

    feature_dir = tmp_path / "cb" / "toyclip"
    feature_dir.mkdir(parents=True)
    for split in ("train", "test"):
        torch.save(torch.zeros(4, 2), feature_dir / f"features_{split}.pt")
        torch.save(torch.arange(4) % 2, feature_dir / f"targets_{split}.pt")
    with pytest.raises(FileNotFoundError, match="features_val"):
        linear_probe.evaluate(None, None, None, -1, 4, 0, 0.1, 1, "toyclip", 0, str(tmp_path / "cb"), device="cuda",
                              val_dataloader=object(), amp=False)


def test_few_shot_subsets_are_seeded_apart_from_the_model_and_reported_per_seed(tmp_path, toy_root):
    """Two architectures (random init consumes the global RNG differently) fit on the same shots per seed,
    all from the train split; rows are the mean over seeds with a t interval across them."""
    from conftest import TINY_ARCH

    from clipbench.metrics.uncertainty import seed_interval

    shots, per_seed = {}, {}
    for arch in (TINY_ARCH, "toyclip"):
        rows, metrics, _ = run_probe(tmp_path / arch, toy_root, f"model.arch={arch}", "model.pretrained=null", "limit=40",
                                     "task.fewshot_k=1", "task.seeds=[0,1]", "task.epochs=2", "task.val_split=null")
        shots[arch] = [s["shots"] for s in metrics["linear_probe"]["per_seed"]]
        per_seed[arch] = [s["lp_top1"] for s in metrics["linear_probe"]["per_seed"]]
    assert shots[TINY_ARCH] == shots["toyclip"]
    assert shots["toyclip"][0] != shots["toyclip"][1]
    n_train = metrics["linear_probe"]["samples"]["train"]  # the first 40 (limit) of the train split
    assert all(len(set(s)) == len(s) >= n_train // 3 and max(s) < n_train for s in shots["toyclip"])
    top1 = rows["lp_top1"]
    assert top1["value"] == pytest.approx(np.mean(per_seed["toyclip"]))
    assert (top1["ci_low"], top1["ci_high"]) == pytest.approx(seed_interval(per_seed["toyclip"]))


def test_openai_protocol_follows_the_clip_papers_search(tmp_path):
    """C chosen as in CLIP's appendix A.3 (transcribed here): the 7 points 10^-6, 10^-4, ..., 10^6, then the
    best of (left, peak, right) at spans of 8, 4, 2, 1 grid steps (8 per decade); the final fit on train + val."""
    from sklearn.linear_model import LogisticRegression

    from clipbench.config.tasks import LinearProbeConfig
    from clipbench.probe.fit import Split, fit_openai

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 8))

    def split(n):
        y = np.arange(n) % 4
        return Split(torch.tensor(centres[y] + rng.normal(0, 1.2, (n, 8)), dtype=torch.float32), torch.tensor(y))

    train, val, test = split(40), split(24), split(24)
    fit = fit_openai(train, val, test.features, LinearProbeConfig(protocol="openai", val_proportion=0.2), 0, False,
                     torch.device("cpu"))
    grid = np.logspace(-6, 6, 97)

    def model(c, data):
        return LogisticRegression(C=c, max_iter=1000, random_state=0).fit(data.features.double().numpy(), data.targets.numpy())

    @functools.cache
    def score(i):
        return model(grid[i], train).score(val.features.double().numpy(), val.targets.numpy())

    peak = max(range(0, 97, 16), key=score)
    for span in (8, 4, 2, 1):
        peak = max([max(peak - span, 0), peak, min(peak + span, 96)], key=score)
    assert fit.value == grid[peak]
    final = model(grid[peak], train + val)
    np.testing.assert_allclose(fit.logits.numpy(), final.decision_function(test.features.double().numpy()), rtol=1e-5, atol=1e-5)


def test_benchmark_runs_quick(capsys):
    BENCHMARK.main(["--quick"])
    out = capsys.readouterr().out
    assert "predictions identical" in out and "fit_speedup_vs_clip_benchmark=" in out and "extraction_vs_zero_shot=" in out


@pytest.mark.parametrize("values,key", [
    ({"val_split": "val", "val_proportion": 0.2}, "task.val_split"),
    ({"val_proportion": 1.0}, "task.val_proportion"),
    ({"protocol": "openai"}, "task.protocol"),  # OpenAI's search needs a validation split
    ({"protocol": "sgd"}, "task.protocol"),
    ({"fewshot_k": 0}, "task.fewshot_k"),
    ({"seeds": [1, 1]}, "task.seeds"),
    ({"val_split": "train"}, "task.val_split"),
])
def test_bad_probe_settings_stop_with_one_line(values, key):
    from clipbench.config.tasks import LinearProbeConfig
    from clipbench.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        LinearProbeConfig(**values).validate()
    assert info.value.key == key and "\n" not in str(info.value)


def test_too_few_shots_is_one_line_naming_the_class():
    from clipbench.errors import DataError
    from clipbench.probe.splits import shot_subset

    with pytest.raises(DataError, match="class 2: 1"):
        shot_subset(torch.tensor([0, 0, 1, 1, 2]), 2, seed=0)


def test_report_reads_probe_accuracies_as_fractions_and_plots_top1():
    from clipbench.report.plots import HEADLINE
    from clipbench.report.tables import format_value

    assert format_value("lp_top1", 0.5) == "50.0" and format_value("lp_mean_per_class_recall", 0.25) == "25.0"
    assert format_value("lp_weight_decay", 0.001) == "0.001" and "lp_top1" in HEADLINE


def _hf_root(tmp_path, names):
    import datasets
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=names)})
    parts = {}
    for split, seed in (("train", 1), ("test", 2)):
        images, labels, _ = colour_images(16, seed=seed)
        parts[split] = datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in images], "fine": labels}, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.mark.parametrize("layout", ["cifar100", "wds", "hf"])
def test_each_classification_layout_serves_train_and_test(tmp_path, toy_root, layout):
    """The probe reads its train split through the same loader as the test split: CIFAR-100's release, a
    clip_benchmark wds copy, a Hugging Face save_to_disk folder."""
    from conftest import COLOURS, TINY_ARCH

    from clipbench.toy.writers.catalogue import write_generated_suite

    if layout == "cifar100":
        dataset = ["dataset=cifar100", f"dataset.root={toy_root / 'cifar'}", "dataset.check_integrity=false"]
    elif layout == "wds":
        for split in ("train", "test"):
            write_generated_suite(tmp_path / "suite", {"toyset": 4}, n=16, split=split)
        dataset = ["dataset=clip_benchmark", "dataset.name=wds/toyset", f"dataset.root={tmp_path / 'suite'}"]
    else:
        dataset = ["dataset=hf", f"dataset.path={_hf_root(tmp_path, list(COLOURS))}", "dataset.image_column=img",
                   "dataset.label_column=fine"]
    cfg = compose_config([
        "task=linear_probe", *dataset, "dataset.split=test", f"model.arch={TINY_ARCH}", "model.pretrained=null",
        "device=cpu", "num_workers=0", "progress=false", "limit=16", "task.epochs=1",
        f"results_csv={tmp_path / 'results.csv'}",
    ])
    rows = {r["metric"]: r for r in run(cfg, tmp_path / "run")}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rows["lp_top1"]["n"] == 16 and metrics["linear_probe"]["samples"]["train"] == 16

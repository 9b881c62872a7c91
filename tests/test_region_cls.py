"""task=region_cls: the COCO-style, CUB-200-2011 and Stanford Dogs loaders, and the task end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COLOURS, TINY_ARCH, base_args, run_cli
from PIL import Image

from clipbench.config import to_schema
from clipbench.data import DATASETS
from clipbench.errors import ConfigError, DataError
from clipbench.toy.writers.regions import write_coco_regions, write_cub, write_dogs_list, write_voc_annotation

NAMES = list(COLOURS)


def scene(path: Path, size: tuple[int, int], boxes, colour: str, seed: int) -> None:
    """Grey noise with the object's boxes filled in its colour."""
    w, h = size
    pixels = np.random.default_rng(seed).integers(90, 160, (h, w, 3)).astype(np.uint8)
    for x0, y0, x1, y1 in boxes:
        pixels[int(y0) : int(y1), int(x0) : int(x1)] = COLOURS[colour]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def build(name: str, **cfg):
    spec = DATASETS.get(name)
    return spec.build(to_schema(spec.config, {"name": name, **cfg}, "dataset"))


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cub")
    folders = [f"{i + 1:03d}.{n.title()}_Bird" for i, n in enumerate(NAMES)]
    items = []
    for k in range(10):
        label = k % len(NAMES)
        rel = f"{folders[label]}/{folders[label].split('.')[1]}_{k:04d}_1.jpg"
        box = [4 + k % 3, 5, 16, 14]  # x, y, w, h
        scene(root / "CUB_200_2011" / "images" / rel, (40, 32), [(box[0], box[1], box[0] + box[2], box[1] + box[3])], NAMES[label], k)
        items.append((rel, box, label, k < 4))
    write_cub(root, items, folders)
    return root


def test_cub_loader(cub_root):
    test = build("cub", root=str(cub_root), split="test")
    assert test.classnames == ["Red Bird", "Green Bird", "Blue Bird", "Yellow Bird"]
    assert len(test) == 6 and [test.label(i) for i in range(6)] == [0, 1, 2, 3, 0, 1]  # images 5..10
    assert test.boxes(0) == [(4 + 4 % 3, 5, 4 + 4 % 3 + 16, 19)]
    assert test.sample_id(0) == "5" and test.image(0).size == (40, 32)
    assert len(build("cub", root=str(cub_root / "CUB_200_2011"), split="train")) == 4
    assert len(build("cub", root=str(cub_root), split="all")) == 10
    with pytest.raises(ConfigError, match="dataset.root.*CUB_200_2011"):
        build("cub", root=str(cub_root / "CUB_200_2011" / "images"))


def test_cub_malformed_file_is_a_data_error(tmp_path):
    write_cub(tmp_path, [("a/x.jpg", [1, 2, 3, 4], 0, False)], ["001.A"])
    (tmp_path / "CUB_200_2011" / "image_class_labels.txt").write_text("1\n")
    with pytest.raises(DataError, match="image_class_labels.txt, line 1"):
        build("cub", root=str(tmp_path))


@pytest.mark.parametrize("suffix", [".mat", ".txt"])
def test_stanford_dogs_loader(tmp_path, suffix):
    folders = ["n02085620-Chihuahua", "n02086646-Blenheim_spaniel"]
    rels, labels = [], []
    for k in range(4):
        label = k % 2
        rel = f"{folders[label]}/{folders[label].split('-')[0]}_{k}.jpg"
        boxes = [(2, 3, 20, 18)] if k != 3 else [(2, 3, 20, 18), (22, 10, 38, 28)]
        scene(tmp_path / "Images" / rel, (40, 30), boxes, NAMES[label], k)
        write_voc_annotation(tmp_path / "Annotation" / rel[: -len(".jpg")], Path(rel).stem, (40, 30), [(folders[label].split("-")[1], b) for b in boxes])
        rels.append(rel)
        labels.append(label)
    write_dogs_list(tmp_path / f"test_list{suffix}", rels, labels)
    ds = build("stanford_dogs", root=str(tmp_path), split="test")
    assert ds.classnames == ["Chihuahua", "Blenheim spaniel"]
    assert [ds.label(i) for i in range(4)] == labels
    assert ds.boxes(3) == [(2, 3, 20, 18), (22, 10, 38, 28)]
    assert ds.sample_id(1) == rels[1] and ds.image(1).size == (40, 30)
    with pytest.raises(ConfigError, match="train_list"):
        build("stanford_dogs", root=str(tmp_path), split="train")


def test_coco_regions_loader_groups_boxes_by_category(tmp_path):
    scene(tmp_path / "img" / "a.jpg", (40, 30), [(1, 1, 11, 11), (20, 5, 30, 15)], "red", 0)
    images = [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30}]
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 10, 10], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [20, 5, 10, 10], "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 20, 5, 5], "iscrowd": 0},
        {"id": 4, "image_id": 7, "category_id": 1, "bbox": [0, 0, 40, 30], "iscrowd": 1},  # crowd: ignored
    ]
    categories = [{"id": 3, "name": "traffic_light"}, {"id": 1, "name": "person"}]
    path = write_coco_regions(tmp_path / "ann.json", images, annotations, categories)
    ds = build("coco_regions", annotations=str(path), images=str(tmp_path / "img"))
    assert ds.classnames == ["person", "traffic light"]  # sorted by category id
    assert len(ds) == 2
    assert (ds.sample_id(0), ds.label(0), ds.boxes(0)) == ("7:3", 1, [(1, 1, 11, 11), (20, 5, 30, 15)])
    assert (ds.sample_id(1), ds.label(1), ds.boxes(1)) == ("7:1", 0, [(0, 20, 5, 25)])
    path.write_text('{"images": []}')
    with pytest.raises(DataError, match="ann.json"):
        build("coco_regions", annotations=str(path), images=str(tmp_path / "img"))


def test_region_cls_end_to_end(tmp_path, cub_root):
    args = base_args(tmp_path, "task=region_cls", "dataset=cub", f"dataset.root={cub_root}", "method=red_circle", "save_predictions=true")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "run" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["sample_id"] for r in rows] == [str(i) for i in range(5, 11)]
    assert [int(r["target"]) for r in rows] == [0, 1, 2, 3, 0, 1]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"top1", "mean_per_class_recall", "skipped"}  # no top5 over 4 classes
    top1 = sum(r["pred"] == r["target"] for r in rows) / 6
    assert metrics["metrics"]["top1"] == pytest.approx(top1)


def test_region_cls_scores_are_logits_and_bad_boxes_are_skipped(tmp_path):
    from clipbench.config.tasks import RegionClsConfig
    from clipbench.methods import METHODS
    from clipbench.models import load_model
    from clipbench.tasks import TASKS, RunContext

    folders = ["001.Red", "002.Blue"]
    scene(tmp_path / "CUB_200_2011" / "images" / "001.Red" / "a.jpg", (40, 32), [(2, 2, 20, 20)], "red", 0)
    scene(tmp_path / "CUB_200_2011" / "images" / "002.Blue" / "b.jpg", (40, 32), [(2, 2, 20, 20)], "blue", 1)
    items = [("001.Red/a.jpg", [2, 2, 18, 18], 0, False), ("002.Blue/b.jpg", [50, 50, 5, 5], 1, False),
             ("002.Blue/missing.jpg", [1, 1, 5, 5], 1, False)]
    write_cub(tmp_path, items, folders)
    model = load_model(TINY_ARCH, None, "fp32", "cpu")
    method = METHODS.get("crop").build(to_schema(METHODS.get("crop").config, {"name": "crop"}, "method"), model)
    ctx = RunContext(device=torch.device("cpu"), batch_size=8, save_predictions=True, progress=False)
    dataset = build("cub", root=str(tmp_path))
    result = TASKS.get("region_cls").evaluate(model, dataset, method, RegionClsConfig(), ctx)
    assert result.n == 1 and result.skipped == 2
    assert result.skip_reasons == {"invalid box (dropped, not a sample)": 1, "no valid box": 1, "unreadable image": 1}
    # the one kept sample: logit_scale * cos(crop, "a photo of a <class>.") per class
    image = Image.open(tmp_path / "CUB_200_2011" / "images" / "001.Red" / "a.jpg").convert("RGB").crop((2, 2, 20, 20))
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.model.encode_image(model.preprocess(image).unsqueeze(0)), dim=-1)
        txt = torch.nn.functional.normalize(model.model.encode_text(model.tokenizer(["a photo of a Red.", "a photo of a Blue."])), dim=-1)
        expected = (model.model.logit_scale.exp() * img @ txt.T)[0].tolist()
    assert json.loads(result.predictions[0]["scores"]) == pytest.approx(expected, abs=2e-4)


def test_all_boxes_of_a_sample_form_one_region(tmp_path):
    """The task hands the method one region per sample holding every (clipped) box."""
    from clipbench.config.methods import MethodConfig
    from clipbench.config.tasks import RegionClsConfig
    from clipbench.methods.base import Method
    from clipbench.tasks import TASKS, RunContext

    class Recorder(Method):
        seen: list = []

        def encode_regions(self, images, regions):
            self.seen.extend(regions)
            return [torch.nn.functional.normalize(torch.ones(len(r), 32), dim=-1) for r in regions]

    class Model:
        logit_scale, fingerprint, precision, device = 100.0, "recorder", "fp32", torch.device("cpu")

        def encode_text(self, texts):
            return torch.nn.functional.normalize(torch.randn(len(texts), 32), dim=-1)

    scene(tmp_path / "img" / "a.jpg", (40, 30), [(1, 1, 11, 11)], "red", 0)
    images = [{"id": 1, "file_name": "a.jpg"}]
    annotations = [{"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate([[1, 1, 10, 10], [30, 20, 20, 20], [0, 0, 5, 5]])]
    path = write_coco_regions(tmp_path / "ann.json", images, annotations, [{"id": 1, "name": "red"}])
    method = Recorder(MethodConfig(), Model())
    ctx = RunContext(device=torch.device("cpu"), progress=False)
    TASKS.get("region_cls").evaluate(Model(), build("coco_regions", annotations=str(path), images=str(tmp_path / "img")), method, RegionClsConfig(), ctx)
    assert method.seen == [[[(1, 1, 11, 11), (30, 20, 40, 30), (0, 0, 5, 5)]]]  # the second box clipped to the image


def test_ensemble_classifier_sums_model_logits(cub_root):
    """An ensemble of the run's model with itself doubles every logit."""
    from clipbench.config.tasks import RegionClsConfig
    from clipbench.methods import METHODS
    from clipbench.models import load_model
    from clipbench.tasks import TASKS, RunContext

    model = load_model(TINY_ARCH, None, "fp32", "cpu")
    ctx = RunContext(device=torch.device("cpu"), batch_size=8, save_predictions=True, progress=False)
    dataset = build("cub", root=str(cub_root))

    def scores(name, **params):
        spec = METHODS.get(name)
        method = spec.build(to_schema(spec.config, {"name": name, **params}, "method"), model)
        result = TASKS.get("region_cls").evaluate(model, dataset, method, RegionClsConfig(), ctx)
        return [json.loads(r["scores"]) for r in result.predictions]

    single = scores("blur")
    double = scores("ensemble", models=[{"arch": TINY_ARCH, "pretrained": None}], method="blur")
    assert np.allclose(np.array(double), 2 * np.array(single), atol=1e-4)


def test_subtract_is_refused_for_region_cls():
    from clipbench.config.methods import ClipConfig
    from clipbench.tasks import TASKS

    with pytest.raises(ConfigError, match="method.subtract"):  # checked while validating (runner.validate)
        TASKS.get("region_cls").check_method(ClipConfig(subtract=True))

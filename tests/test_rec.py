"""task=rec end to end on a generated refer release, the subtract math and IoU."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_ARCH, base_args, run_cli
from PIL import Image
from rec_fixtures import REFS, SCENES, ann_box, file_name, refer_records, write_images
from torchvision import transforms

from clipbench.cli import CONF_DIR
from clipbench.metrics.boxes import clip_box, expand_box, union_box, xywh_to_xyxy
from clipbench.metrics.iou import box_iou
from clipbench.tasks.rec import caption_bank, subtract_bank
from clipbench.toy.writers.refer import write_refer


def test_iou_by_hand():
    iou = box_iou([(0, 0, 10, 10), (0, 0, 4, 4), (0, 0, 0, 10)], [(0, 0, 10, 10), (5, 0, 15, 10), (10, 10, 20, 20), (1, 1, 3, 3), (0, 0, 0, 10)])
    assert iou.shape == (3, 5) and iou.dtype == torch.float64
    assert iou[0, 0] == 1.0
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0.0  # touching corners
    assert iou[1, 3] == pytest.approx(4 / 16)
    assert iou[2, 4] == 0.0 and iou[2].eq(0).all()  # no area


def _one_pair_iou(a, b) -> float:
    """IoU as ReCLIP computes it for one pair (areas w * h, no +1), 0 when a box has no area."""
    def area(box):
        return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])

    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def test_iou_of_all_pairs_equals_the_one_pair_formula_exactly():
    import random

    rng = random.Random(0)

    def box():
        x0, y0 = rng.uniform(-5, 60), rng.uniform(-5, 60)
        kind = rng.random()
        if kind < 0.1:
            return (x0, y0, x0, y0 + 5)  # zero width
        if kind < 0.2:
            return (x0, y0, x0 - 4, y0 - 3)  # wrong order: empty
        if kind < 0.3:
            return tuple(float(rng.randint(0, 40)) for _ in range(2)) * 2  # a point
        return (x0, y0, x0 + rng.uniform(0.1, 40), y0 + rng.uniform(0.1, 40))

    proposals = [box() for _ in range(60)] + [(0.0, 0.0, 10.0, 10.0)] * 3  # ties
    golds = [box() for _ in range(40)] + [(0.0, 0.0, 10.0, 10.0)]
    iou = box_iou(proposals, golds)
    assert iou.tolist() == [[_one_pair_iou(p, g) for g in golds] for p in proposals]  # same float64 operations
    # the first of tied proposals wins, as max() over the proposals in order
    column = [_one_pair_iou(p, golds[-1]) for p in proposals]
    assert iou.argmax(dim=0).tolist()[-1] == max(range(len(proposals)), key=column.__getitem__) == 60


def test_box_iou_example_in_its_docstring():
    import doctest

    import clipbench.metrics.iou

    result = doctest.testmod(clipbench.metrics.iou)
    assert result.attempted == 1 and result.failed == 0


def test_dataset_loaders_and_box_geometry_import_no_torch():
    import subprocess
    import sys

    code = "import sys, clipbench.config, clipbench.data, clipbench.metrics.boxes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_box_clipping_union_and_margin():
    assert xywh_to_xyxy([2, 3, 10, 5]) == (2, 3, 12, 8)
    assert clip_box((-5, -5, 10, 10), 8, 6) == (0, 0, 8, 6)
    assert clip_box((20, 20, 30, 30), 8, 6) is None  # outside
    assert clip_box((3, 3, 3, 9), 8, 6) is None  # zero width
    assert clip_box((5, 5, 2, 2), 8, 6) is None  # negative size
    assert union_box([(1, 2, 3, 4), (0, 3, 5, 6)]) == (0, 2, 5, 6)
    assert expand_box((10, 10, 20, 30), 0.5, 100, 100) == (5, 0, 25, 40)


def test_subtract_by_hand():
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])  # 3 proposals x 2 sentences
    bank = torch.tensor([[0.0, 2.0, 4.0], [1.0, 1.0, 1.0], [-3.0, 0.0, 0.0]])  # 3 proposals x 3 bank captions
    expected = torch.tensor([[-1.0, 0.0], [2.0, 3.0], [1.0, 1.0]])
    assert torch.equal(subtract_bank(logits, bank), expected)


def test_caption_bank_is_seeded_and_capped():
    expressions = [f"e{i}" for i in range(800)]
    a, b, c = caption_bank(expressions, 500, 0), caption_bank(expressions, 500, 0), caption_bank(expressions, 500, 1)
    assert a == b and a != c and len(a) == 500 and len(set(a)) == 500
    assert sorted(caption_bank(expressions[:7], 500, 0)) == sorted(expressions[:7])


@pytest.fixture(scope="module")
def refer_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("refer")
    images = write_images(root / "images")
    refs, image_records, annotations = refer_records()
    write_refer(root / "refcoco", refs, image_records, annotations)
    return root, images


def rec_args(tmp_path, root, images, *extra):
    return base_args(
        tmp_path, "task=rec", "dataset=refcoco", f"dataset.root={root}", f"dataset.images={images}",
        "dataset.split=val", "save_predictions=true", *extra,
    )


def read_predictions(tmp_path) -> list[dict]:
    with open(tmp_path / "run" / "predictions.csv") as f:
        return list(csv.DictReader(f))


def independent_model():
    """The runner's model: seed 0, then a fresh random init of the tiny ViT."""
    from clipbench.models import load_model
    from clipbench.runtime import seed_everything

    seed_everything(0)
    return load_model(TINY_ARCH, None, "fp32", "cpu", reuse=False)


def logit(model, image: Image.Image, text: str, square: bool = False) -> float:
    """logit_scale * cos, straight from open_clip; ``square``: ReCLIP's input (``transforms[0] = Resize((S, S))``)."""
    preprocess = copy.deepcopy(model.preprocess)
    size = model.geometry.image_size
    if square:
        preprocess.transforms[0] = transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC)
    with torch.no_grad():
        img = model.model.encode_image(preprocess(image).unsqueeze(0))
        txt = model.model.encode_text(model.tokenizer([text]))
    return float(model.model.logit_scale.exp().detach() * torch.nn.functional.cosine_similarity(img, txt))


def test_rec_end_to_end_with_crop(tmp_path, refer_data):
    root, images = refer_data
    proc = run_cli(*rec_args(tmp_path, root, images, "method=crop"))
    assert proc.returncode == 0, proc.stderr
    rows = read_predictions(tmp_path)
    assert list(rows[0])[:4] == ["sample_id", "target", "pred", "scores"]
    assert [r["sample_id"] for r in rows] == ["11:1000", "11:1001", "12:1002", "13:1003", "14:1004", "14:1005"]
    # target: the gold annotation's index among the image's proposals, in dataset order
    assert [int(r["target"]) for r in rows] == [0, 0, 1, 1, 1, 1]
    for r in rows:
        scores = json.loads(r["scores"])
        assert int(r["pred"]) == max(range(len(scores)), key=scores.__getitem__)
    # the scores are raw logits: recompute the crop of every proposal of one sentence
    model = independent_model()
    row = rows[2]  # 12:1002, "blue box", image 101
    image = Image.open(images / file_name(101)).convert("RGB")
    expected = [logit(model, image.crop(xywh_to_xyxy(box)), "a photo of blue box", square=True) for _, _, box in SCENES[101][1]]
    assert json.loads(row["scores"]) == pytest.approx(expected, abs=2e-4)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    correct = sum(r["pred"] == r["target"] for r in rows)
    assert metrics["metrics"]["accuracy"] == pytest.approx(correct / 6) and metrics["n"] == 6
    with open(tmp_path / "results.csv") as f:
        results = {r["metric"]: r for r in csv.DictReader(f)}
    assert results["accuracy"]["n"] == "6" and results["accuracy"]["split"] == "val"


def evaluate(model, root, images, name: str, limit=None, **params):
    """task=rec in process (the CLI path is covered above): returns (rows, result)."""
    from clipbench.config import to_schema
    from clipbench.config.tasks import RecConfig
    from clipbench.data import DATASETS
    from clipbench.methods import METHODS
    from clipbench.tasks import TASKS, RunContext

    dataset_params = {k: params.pop(k) for k in ("detections",) if k in params}
    spec = DATASETS.get("refcoco")
    dataset = spec.build(to_schema(spec.config, {"name": "refcoco", "root": str(root), "images": str(images), **dataset_params}, "dataset"))
    mspec = METHODS.get(name)
    built = mspec.build(to_schema(mspec.config, {"name": name, **params}, "method"), model)
    ctx = RunContext(device=torch.device("cpu"), batch_size=4, limit=limit, save_predictions=True, progress=False)
    result = TASKS.get("rec").evaluate(model, dataset, built, RecConfig(), ctx)
    return result.predictions, result


@pytest.fixture(scope="module")
def model():
    return independent_model()


def test_rec_text_is_lower_cased_in_the_template(model, refer_data):
    root, images = refer_data
    rows, _ = evaluate(model, root, images, "clip", limit=1)
    assert [r["sample_id"] for r in rows] == ["11:1000"]  # "The RED box": plain CLIP scores every proposal alike
    image = Image.open(images / file_name(101)).convert("RGB")
    assert json.loads(rows[0]["scores"]) == pytest.approx([logit(model, image, "a photo of the red box")] * 3, abs=2e-4)


def test_subtract_end_to_end(model, refer_data):
    """With a bank larger than the split, the bank is the whole split: subtracting shifts every proposal's
    logit by minus its mean logit over all the split's expressions."""
    root, images = refer_data
    plain, _ = evaluate(model, root, images, "crop")
    sub, _ = evaluate(model, root, images, "crop", subtract=True)
    image = Image.open(images / file_name(103)).convert("RGB")
    bank = [f"a photo of {t.lower()}" for _, _, split, sents in REFS.values() if split == "val" for t in sents]
    for k, (_, _, box) in enumerate(SCENES[103][1]):
        mean_bank = sum(logit(model, image.crop(xywh_to_xyxy(box)), t, square=True) for t in bank) / len(bank)
        shift = json.loads(sub[4]["scores"])[k] - json.loads(plain[4]["scores"])[k]
        assert shift == pytest.approx(-mean_bank, abs=5e-4)


def test_combine_and_baselines_run(model, refer_data):
    root, images = refer_data
    combined, _ = evaluate(model, root, images, "combine")
    crop, _ = evaluate(model, root, images, "crop")
    blur, _ = evaluate(model, root, images, "blur")
    for c, a, b in zip(combined, crop, blur):
        summed = [x + y for x, y in zip(json.loads(a["scores"]), json.loads(b["scores"]))]
        assert json.loads(c["scores"]) == pytest.approx(summed, abs=1e-3)
    for name in ("red_circle", "shade", "grayscale_circle"):
        rows, result = evaluate(model, root, images, name)
        assert len(rows) == 6 and result.n == 6


def test_detections_are_judged_by_iou(model, refer_data, tmp_path):
    root, images = refer_data
    # image 101: a box overlapping the gold red box (IoU 0.8) and one far away; 102, 103: none
    dets = {"101": [{"box": [2, 3, 20, 16], "score": 1.0}, {"box": [40, 0, 20, 10], "score": 1.0}]}
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    rows, result = evaluate(model, root, images, "crop", detections=str(path))
    assert [r["sample_id"] for r in rows] == ["11:1000", "11:1001", "12:1002"]
    assert [r["target"] for r in rows] == [0, 0, -1]  # the blue box has no detection with IoU > 0.5
    for r in rows:
        assert r["correct"] == int(r["pred"] == r["target"])
    assert result.skip_reasons == {"no valid proposals": 3} and result.skipped == 3


def test_bad_boxes_and_unreadable_images_are_counted(model, tmp_path):
    images = write_images(tmp_path / "images")
    (images / file_name(102)).write_bytes(b"not a jpeg")  # 1 val sentence
    refs, image_records, annotations = refer_records()
    for ann in annotations:
        if ann["id"] == 3:
            ann["bbox"] = [100, 100, 5, 5]  # outside image 101: dropped
        if ann["id"] == 7:
            ann["bbox"] = [10, 10, 0, 5]  # zero width, and the gold box of ref 14 (2 sentences)
    write_refer(tmp_path / "refcoco", refs, image_records, annotations)
    rows, result = evaluate(model, tmp_path, images, "red_circle")
    assert [r["sample_id"] for r in rows] == ["11:1000", "11:1001", "12:1002"]
    assert json.loads(rows[0]["scores"])[2] is None  # the dropped proposal keeps its place
    assert result.skipped == 3 and result.n == 3
    assert result.skip_reasons == {
        "invalid box (proposal dropped, not a sentence)": 2, "unreadable image": 1, "gold box missing or outside the image": 2,
    }


def test_forbidden_pickle_stops_the_cli_with_one_line(tmp_path, refer_data):
    _, images = refer_data
    refs, image_records, annotations = refer_records()
    write_refer(tmp_path / "bad", refs, image_records, annotations)
    (tmp_path / "bad" / "refs(unc).p").write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    proc = run_cli(*rec_args(tmp_path, tmp_path / "bad", images, "method=crop"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "refs(unc).p" in proc.stderr + proc.stdout and "forbidden global os.system" in proc.stderr + proc.stdout


def test_gold_box_helper_matches_fixture():
    assert ann_box(5) == [8, 32, 20, 24]


def test_falip_through_the_method_interface(model, refer_data):
    """FALIP plugs in through encode_regions: one feature per proposal, plain subtract on top."""
    root, images = refer_data
    rows, result = evaluate(model, root, images, "falip", layers=[-1], alpha=5.0)
    assert result.n == 6 and len({tuple(json.loads(r["scores"])) for r in rows}) == 6
    assert all(len(set(json.loads(r["scores"]))) == len(json.loads(r["scores"])) for r in rows)  # boxes differ
    flat, _ = evaluate(model, root, images, "falip", layers=[-1], alpha=0.0)  # no bias: every box scores alike
    assert all(len(set(json.loads(r["scores"]))) == 1 for r in flat)
    sub, _ = evaluate(model, root, images, "falip", layers=[-1], alpha=5.0, subtract=True)
    assert [r["sample_id"] for r in sub] == [r["sample_id"] for r in rows]


def test_experiment_configs_compose():
    from hydra import compose, initialize_config_dir

    from clipbench.runner import validate

    with initialize_config_dir(CONF_DIR, version_base=None):
        cfg = compose("config", overrides=["experiment=falip_rec", "dataset=refcoco+", "method=falip_subtract"], return_hydra_config=True)
        assert cfg.hydra.sweeper.params.dataset == "refcoco,refcoco+,refcocog"
        assert cfg.task.name == "rec" and cfg.model.arch == "ViT-B-16"
        assert cfg.method.name == "falip" and cfg.method.subtract is True and cfg.dataset.name == "refcoco+"
        red = compose("config", overrides=["experiment=falip_rec", "method=red_circle_falip"])
        assert red.method.name == "red_circle" and red.method.variant == "falip"
        cls = compose("config", overrides=["experiment=falip_region_cls", "dataset=stanford_dogs", "method=blur"])
        assert cls.task.name == "region_cls" and cls.dataset.name == "stanford_dogs"
        with pytest.raises(Exception, match="dataset.root"):
            validate(cls)  # no root given: the error says so before any work


def test_model_ensemble_sums_the_models_logits(model, refer_data, tmp_path):
    from clipbench.models import load_model

    other = load_model(TINY_ARCH, None, "fp32", "cpu", reuse=False)  # another random init
    with torch.no_grad():
        other.model.logit_scale.fill_(2.0)  # a different temperature, so the weights matter
    checkpoint = tmp_path / "other.pt"
    torch.save(other.model.state_dict(), checkpoint)
    root, images = refer_data
    rows, _ = evaluate(model, root, images, "ensemble", models=[{"arch": TINY_ARCH, "pretrained": str(checkpoint)}], method="crop")
    image = Image.open(images / file_name(103)).convert("RGB")
    row = rows[4]  # 14:1004 "blue square"
    expected = [
        logit(model, image.crop(xywh_to_xyxy(box)), "a photo of blue square", square=True)
        + logit(other, image.crop(xywh_to_xyxy(box)), "a photo of blue square", square=True)
        for _, _, box in SCENES[103][1]
    ]
    assert json.loads(row["scores"]) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_prefetched_keeps_order(workers):
    from clipbench.data.loading import prefetched

    assert list(prefetched(lambda x: x * x, range(10), workers)) == [(i, i * i) for i in range(10)]
    assert list(prefetched(lambda x: x, [], workers)) == []

"""scripts/head_sensitivity.py on generated images+boxes with the tiny random-init ViT."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from clipbench.methods.foveal_bias import image_transform
from clipbench.methods.visual_prompts import RED, draw_ellipses
from clipbench.models import load_model
from clipbench.models.attention import cls_attention, head_scale_matrix, resolve_layers
from tests.conftest import ROOT, TINY_ARCH


def write_fixture(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    boxes = {}
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"im{i}.png")
        boxes[f"im{i}.png"] = [[0, 0, 32, 32]]  # square resize to 32: input box (0,0,16,16) -> patches (0..1, 0..1)
    boxes["im0.png"].append([16, 16, 64, 64])
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    return images, tmp_path / "boxes.json"


@pytest.mark.filterwarnings("ignore:model.pretrained is null")
def test_head_sensitivity_script(tmp_path):
    images, boxes = write_fixture(tmp_path)
    out = tmp_path / "out"
    loaded = load_model(TINY_ARCH, None)
    checkpoint = tmp_path / "tiny.pt"  # the script's process must see the same random weights
    torch.save(loaded.model.state_dict(), checkpoint)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "head_sensitivity.py"), f"model.arch={TINY_ARCH}", f"model.pretrained={checkpoint}",
         "--images", str(images), "--boxes", str(boxes), "--out", str(out), "--top-k", "4"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out / "head_sensitivity.csv")
    assert len(table) == 3 * 3 and set(table["n"]) == {4}
    assert (out / "head_sensitivity.png").read_bytes()[:4] == b"\x89PNG"

    # independent: mean CLS mass over tokens of patches (0..1, 0..1) for the three [0,0,32,32] boxes,
    # plus, for im0's [16,16,64,64] -> (8,8,32,32): ceil(8/8)-1 = 0 .. ceil(32/8)-1 = 3, so rows and cols 0..3
    transform = image_transform(loaded, "square")
    masses = {"plain": [], "prompt": []}
    for name, box_list in json.loads(boxes.read_text()).items():
        image = Image.open(images / name).convert("RGB")
        for box in box_list:
            tokens = [1, 2, 5, 6] if box == [0, 0, 32, 32] else [1 + r * 4 + c for r in range(4) for c in range(4)]
            batch = torch.stack([transform(image), transform(draw_ellipses(image, [box], RED, 1))])
            maps = cls_attention(loaded, batch)[..., tokens].sum(-1)
            masses["plain"].append(maps[0])
            masses["prompt"].append(maps[1])
    plain, prompt = torch.stack(masses["plain"]).mean(0), torch.stack(masses["prompt"]).mean(0)
    got = table.sort_values(["layer", "head"])
    assert np.allclose(got["mass_plain"], plain.flatten().numpy(), atol=1e-5)
    assert np.allclose(got["delta"], (prompt - plain).flatten().numpy(), atol=1e-5)
    assert got["delta"].abs().max() > 0

    config = yaml.safe_load((out / "falip_top4.yaml").read_text())
    assert config["defaults"] == ["falip", "_self_"]
    assert sum(len(h) for h in config["heads"]) == 4
    top4 = table.sort_values("delta", ascending=False).head(4)
    assert {(int(r.layer), int(r.head)) for r in top4.itertuples()} == {
        (layer, head) for layer, heads in zip(config["layers"], config["heads"]) for head in heads
    }
    layers = resolve_layers(config["layers"], 3)
    assert head_scale_matrix(config["heads"], layers, 3).sum() == 4
    assert "method.heads=" in proc.stdout


def test_bad_box_file_is_one_line(tmp_path):
    (tmp_path / "boxes.json").write_text('{"a.png": [[1, 2, 3]]}')
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "head_sensitivity.py"), f"model.arch={TINY_ARCH}", "model.pretrained=null",
         "--images", str(tmp_path), "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'boxes.json'}: box [1, 2, 3] of a.png is not [x0, y0, x1, y1]"
    ]


def test_boxes_from_a_dataset_config_toy_world(toy_root, monkeypatch, tmp_path):
    """clipbench-heads experiment=toy_falip_head_sensitivity: the toy REC split's gold boxes, the toy CLIP."""
    from clipbench.heads import compose_config, dataset_samples, main
    from clipbench.metrics.boxes import xywh_to_xyxy

    samples = dataset_samples(compose_config(["experiment=toy_falip_head_sensitivity", f"paths.toy={toy_root}"]))
    refs = json.loads((toy_root / "refcoco" / "instances.json").read_text())
    by_id = {a["id"]: a for a in refs["annotations"]}
    files = {i["id"]: i["file_name"] for i in refs["images"]}
    import pickle

    with open(toy_root / "refcoco" / "refs(unc).p", "rb") as f:
        val = [r for r in pickle.load(f) if r["split"] == "val"]
    expected = {(files[r["image_id"]], tuple(float(v) for v in xywh_to_xyxy(by_id[r["ann_id"]]["bbox"]))) for r in val}
    assert {(p.name, box) for p, box in samples} == expected and len(samples) == len(expected)
    out = tmp_path / "out"
    assert main(["experiment=toy_falip_head_sensitivity", f"paths.toy={toy_root}", "--limit", "6", "--out", str(out), "--top-k", "2"]) == 0
    table = pd.read_csv(out / "head_sensitivity.csv")
    assert set(table["n"]) == {6} and sorted(set(table["layer"])) == [0, 1, 2, 3]


@pytest.mark.filterwarnings("ignore:model.pretrained is null")
def test_map_tower_reports_the_pooling_probe(tmp_path, capsys):
    import tests.tiny_towers  # noqa: F401
    from clipbench.heads import main

    images, boxes = write_fixture(tmp_path)
    out = tmp_path / "out"
    assert main(["model.arch=clipbench-test-map", "model.pretrained=null", "--images", str(images), "--boxes", str(boxes),
                 "--out", str(out), "--top-k", "1"]) == 0
    table = pd.read_csv(out / "head_sensitivity.csv")
    assert list(table["layer"]) == ["probe", "probe"] and np.allclose(table["mass_plain"], table["mass_plain"].clip(0, 1))
    config = yaml.safe_load((out / "falip_top1.yaml").read_text())
    assert "layers" not in config and len(config["heads"]) == 1
    assert "method.heads=[" in capsys.readouterr().out


def test_dataset_without_boxes_is_one_line(capsys):
    from clipbench.heads import main

    assert main(["dataset=cifar100"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: dataset: 'cifar100' has no boxes; use a REC or region dataset (e.g. dataset=refcoco, coco_regions, "
        "or experiment=toy_falip_head_sensitivity)"
    ]

"""REC loaders on generated fixtures in each release format, and their bad-input errors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from rec_fixtures import REFS, SCENES, ann_box, file_name, refer_records, write_images

from clipbench.config import to_schema
from clipbench.data import DATASETS
from clipbench.data.refer import coco_file_name, load_detections
from clipbench.errors import ConfigError, DataError
from clipbench.toy.writers.refer import write_reclip_jsonl, write_refcoco_hf, write_refer


def xyxy(box):
    x, y, w, h = box
    return (x, y, x + w, y + h)


def build(name: str, **cfg):
    spec = DATASETS.get(name)
    return spec.build(to_schema(spec.config, {"name": name, **cfg}, "dataset"))


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def refer_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refer")
    refs, images, annotations = refer_records()
    write_refer(root / "refcoco", refs, images, annotations)
    return root


def test_refer_release_val_split(refer_root, images_dir):
    ds = build("refcoco", root=str(refer_root), images=str(images_dir), split="val")
    assert ds.gold_proposals and ds.split == "val"
    assert [e.image_id for e in ds.images] == [101, 102, 103]
    assert [s.sample_id for s in ds.sentences()] == ["11:1000", "11:1001", "12:1002", "13:1003", "14:1004", "14:1005"]
    first = ds.images[0]
    assert first.path == images_dir / file_name(101) and first.path.is_file()
    # gold proposals: every annotation of the image, in instances.json order, as x0, y0, x1, y1
    assert [p.ann_id for p in first.proposals] == [1, 2, 3]
    assert first.proposals[1].box == (30, 20, 55, 40)
    s = first.sentences[0]
    assert (s.text, s.gold_ann_id, s.gold_box) == ("The RED box", 1, (2, 3, 22, 21))
    assert len(ds) == 6


def test_refer_release_splits_and_layouts(refer_root, images_dir):
    test_a = build("refcoco", root=str(refer_root / "refcoco"), images=str(images_dir), split="testA")  # root holds refs(unc).p
    assert [s.sample_id for s in test_a.sentences()] == ["15:1006"]
    test_b = build("refcoco", root=str(refer_root), images=str(images_dir), split="testB")
    assert [s.text for s in test_b.sentences()] == ["green corner"]
    sent = build("refcoco", root=str(refer_root), images=str(images_dir), split="testB", sentence_field="sent")
    assert [s.text for s in sent.sentences()] == ["green corner"]


def test_refer_split_and_root_errors(refer_root, images_dir, tmp_path):
    with pytest.raises(ConfigError, match="dataset.split.*val.*test"):
        build("refcocog", root=str(refer_root), images=str(images_dir), split="testA")
    with pytest.raises(ConfigError, match="dataset.root.*refer project"):
        build("refcoco", root=str(tmp_path / "missing"), images=str(images_dir))
    with pytest.raises(ConfigError, match=r"refs\(umd\).p"):
        build("refcocog", root=str(refer_root), images=str(images_dir))
    with pytest.raises(ConfigError, match="dataset.images.*train2014"):
        build("refcoco", root=str(refer_root), images=None)


def test_file_name_falls_back_to_the_ref_file_name(tmp_path, images_dir):
    refs, _, annotations = refer_records()
    write_refer(tmp_path, refs, [], annotations)  # no image records
    ds = build("refcoco", root=str(tmp_path), images=str(images_dir))
    assert ds.images[0].path == images_dir / file_name(101)
    assert coco_file_name("COCO_train2014_000000581857_16.jpg") == "COCO_train2014_000000581857.jpg"


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_forbidden_globals_is_refused(tmp_path, images_dir):
    marker = tmp_path / "pwned"
    payload = _RunsCode()
    payload.marker = marker
    refs, images, annotations = refer_records()
    write_refer(tmp_path, refs, images, annotations)
    with open(tmp_path / "refs(unc).p", "wb") as f:
        pickle.dump([payload], f, protocol=2)
    with pytest.raises(DataError) as err:
        build("refcoco", root=str(tmp_path), images=str(images_dir))
    assert str(tmp_path / "refs(unc).p") in str(err.value) and "forbidden global" in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"not a pickle at all", pickle.dumps({"refs": 1}, protocol=2), pickle.dumps([{"ref_id": 1}], protocol=2)])
def test_malformed_refs_file_is_one_data_error(tmp_path, images_dir, content):
    refs, images, annotations = refer_records()
    write_refer(tmp_path, refs, images, annotations)
    (tmp_path / "refs(unc).p").write_bytes(content)
    with pytest.raises(DataError, match=r"refs\(unc\)\.p"):
        build("refcoco", root=str(tmp_path), images=str(images_dir))


def test_malformed_instances_is_one_data_error(tmp_path, images_dir):
    refs, images, annotations = refer_records()
    write_refer(tmp_path, refs, images, annotations)
    (tmp_path / "instances.json").write_text("{broken")
    with pytest.raises(DataError, match="instances.json"):
        build("refcoco", root=str(tmp_path), images=str(images_dir))


def test_detections_replace_gold_proposals(refer_root, images_dir, tmp_path):
    dets = {"101": [{"box": [3, 3, 20, 18], "score": 0.9, "category_id": 1}, {"box": [31, 21, 24, 19], "score": 0.8}],
            "102": [{"box": [0, 0, 10, 10], "score": 0.5}]}
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    ds = build("refcoco", root=str(refer_root), images=str(images_dir), detections=str(path))
    assert not ds.gold_proposals
    assert [p.box for p in ds.images[0].proposals] == [(3, 3, 23, 21), (31, 21, 55, 40)]
    assert all(p.ann_id is None for p in ds.images[0].proposals)
    assert ds.images[2].proposals == []  # image 103 has no detections
    mattnet = tmp_path / "mattnet.json"
    mattnet.write_text(json.dumps({"dets": [{"image_id": 101, "box": [1, 2, 3, 4], "det_id": 0}]}))
    assert [p.box for p in load_detections(mattnet)["101"]] == [(1, 2, 4, 6)]


def hf_rows(split: str):
    refs, _, _ = refer_records()
    return [
        {
            "ref_id": r["ref_id"], "ann_id": r["ann_id"], "image_id": r["image_id"], "split": r["split"],
            "file_name": r["file_name"], "sent_ids": r["sent_ids"], "sentences": r["sentences"], "category_id": 1,
            "bbox": [float(v) for v in ann_box(r["ann_id"])], "raw_anns": json.dumps({"id": r["ann_id"], "bbox": ann_box(r["ann_id"])}),
            "image_path": f"coco/train2014/{file_name(r['image_id'])}", "captions": [s["raw"] for s in r["sentences"]],
            "global_image_id": f"coco.{r['image_id']}",
        }
        for r in refs if r["split"] == split
    ]


def test_hf_rows_saved_to_disk(tmp_path, images_dir, refer_root):
    path = write_refcoco_hf(tmp_path / "hf", {"val": hf_rows("val"), "testA": hf_rows("testA"), "testB": hf_rows("testB")})
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == ["test", "testB", "validation"]
    ds = build("refcoco_hf", path=str(path), images=str(images_dir), split="val")
    assert [s.sample_id for s in ds.sentences()] == ["11:1000", "11:1001", "12:1002", "13:1003", "14:1004", "14:1005"]
    assert ds.images[0].path == images_dir / file_name(101)
    # without instances.json the proposals are the split's referred objects of the image
    assert [p.ann_id for p in ds.images[0].proposals] == [1, 2]
    full = build("refcoco_hf", path=str(path), images=str(images_dir), split="val",
                 instances=str(refer_root / "refcoco" / "instances.json"))
    assert [p.ann_id for p in full.images[0].proposals] == [1, 2, 3]
    test_a = build("refcoco_hf", path=str(path), images=str(images_dir), split="testA")  # the hub's "test"
    assert [s.text for s in test_a.sentences()] == ["yellow box"]
    with pytest.raises(ConfigError, match="dataset.split"):
        build("refcoco_hf", path=str(path), images=str(images_dir), split="train")


def reclip_rows(split: str):
    refs, _, _ = refer_records()
    return [
        {"file_name": file_name(r["image_id"]), "image_id": r["image_id"], "ann_id": r["ann_id"],
         "anns": [{"id": a, "bbox": box} for a, _, box in SCENES[r["image_id"]][1]],
         "sentences": [{"raw": s["raw"]} for s in r["sentences"]]}
        for r in refs if r["split"] == split
    ]


def test_reclip_jsonl(tmp_path, images_dir):
    write_reclip_jsonl(tmp_path / "refcoco_val.jsonl", reclip_rows("val"))
    ds = build("reclip_jsonl", path=str(tmp_path / "refcoco_{split}.jsonl"), images=str(images_dir), split="val")
    # no ref ids in ReCLIP's rows: the line number and the sentence's position stand in
    assert [s.sample_id for s in ds.sentences()] == ["0:0", "0:1", "1:0", "2:0", "3:0", "3:1"]
    assert [p.ann_id for p in ds.images[2].proposals] == [6, 7, 8]
    assert ds.images[2].sentences[0].gold_box == xyxy(ann_box(7))
    (tmp_path / "refcoco_testA.jsonl").write_text('{"file_name": "x.jpg", "anns": []}\n')
    with pytest.raises(DataError, match="refcoco_testA.jsonl, line 1"):
        build("reclip_jsonl", path=str(tmp_path / "refcoco_{split}.jsonl"), images=str(images_dir), split="testA")


def test_fixture_scenes_are_consistent():
    assert set(r[0] for r in REFS.values()) == set(SCENES)


def test_missing_instances_is_a_config_error(tmp_path, images_dir):
    refs, images, annotations = refer_records()
    write_refer(tmp_path, refs, images, annotations)
    (tmp_path / "instances.json").unlink()
    with pytest.raises(ConfigError, match="instances.json does not exist"):
        build("refcoco", root=str(tmp_path), images=str(images_dir))

"""Results are never silently stale, and bad input is skipped and counted: each case on the toy world
(``--scale 0.25``) or a corrupted copy of it, through the real runner."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import compose_config
from PIL import Image

from clipbench.errors import DataError
from clipbench.models import text_cache
from clipbench.runner import run


def _run(out: Path, toy_root: Path, monkeypatch, *overrides: str, cache: Path | None = None) -> dict:
    """metric -> (value, n) of one run; ``cache`` defaults to a fresh folder under ``out``."""
    cfg = compose_config([
        f"paths.toy={toy_root}", "device=cpu", "num_workers=0", "progress=false", f"results_csv={out / 'results.csv'}",
        f"cache_dir={cache or out / 'cache'}", *overrides,
    ])
    return {r["metric"]: (r["value"], r["n"]) for r in run(cfg, out / "run")}


def _metrics_json(out: Path) -> dict:
    return json.loads((out / "run" / "metrics.json").read_text())


def _gallery_copy(toy_root: Path, dest: Path, edit=None) -> tuple[Path, Path, list[str]]:
    """The toy retrieval gallery copied to ``dest`` (annotation folder, image folder, file names), with
    ``edit(data)`` applied to the Karpathy JSON."""
    data = json.loads((toy_root / "flickr30k" / "dataset_flickr30k.json").read_text())
    if edit is not None:
        edit(data)
    (dest / "ann").mkdir(parents=True)
    (dest / "ann" / "dataset_flickr30k.json").write_text(json.dumps(data))
    images = dest / "images"
    images.mkdir()
    names = [im["filename"] for im in json.loads((toy_root / "flickr30k" / "dataset_flickr30k.json").read_text())["images"]]
    for name in names:
        shutil.copy(toy_root / "images" / name, images / name)
    return dest / "ann", images, names


def _retrieval(out, toy_root, monkeypatch, ann: Path, images: Path, *extra, cache=None) -> dict:
    return _run(out, toy_root, monkeypatch, "+toy=retrieval", f"dataset.root={ann}", f"dataset.images={images}",
                *extra, cache=cache)


def _refer_copy(toy_root: Path, dest: Path) -> tuple[Path, list[dict], dict]:
    """A copy of the toy refer release (refs, instances) to corrupt; the images stay where they are."""
    shutil.copytree(toy_root / "refcoco", dest)
    with open(dest / "refs(unc).p", "rb") as f:
        refs = pickle.load(f)
    return dest, refs, json.loads((dest / "instances.json").read_text())


# ---------------------------------------------------------------- stale caches


def test_gallery_cache_follows_the_image_files(tmp_path, toy_root, monkeypatch):
    ann, images_a, names = _gallery_copy(toy_root, tmp_path / "a")
    images_b = tmp_path / "b"
    images_b.mkdir()
    for name, other in zip(names, names[1:] + names[:1]):  # the same names, every image moved to another
        shutil.copy(images_a / other, images_b / name)
    shared = tmp_path / "shared_cache"
    first = _retrieval(tmp_path / "r1", toy_root, monkeypatch, ann, images_a, cache=shared)
    text_cache._MEMORY.clear()  # as a new process would start
    again = _retrieval(tmp_path / "r2", toy_root, monkeypatch, ann, images_b, cache=shared)
    text_cache._MEMORY.clear()
    fresh = _retrieval(tmp_path / "r3", toy_root, monkeypatch, ann, images_b)
    key = "image_retrieval_recall@1"
    assert fresh[key][0] < first[key][0] - 0.3  # the shuffle matters
    assert again[key] == fresh[key]


def test_fingerprint_reads_the_whole_file(tmp_path):
    from clipbench.models.checkpoints import file_fingerprint

    path = tmp_path / "weights.safetensors"
    data = bytearray(np.random.default_rng(0).bytes(3 << 20))
    path.write_bytes(bytes(data))
    before = file_fingerprint(path)
    data[len(data) // 2] ^= 0xFF  # one byte of a weight in the middle
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert path.stat().st_size == stat.st_size
    assert file_fingerprint(path) != before


def test_wrong_shape_cache_files_are_recomputed(tmp_path, toy_root, monkeypatch):
    ann, images, _ = _gallery_copy(toy_root, tmp_path / "g")
    cache = tmp_path / "cache"
    text_cache._MEMORY.clear()
    first = _retrieval(tmp_path / "r1", toy_root, monkeypatch, ann, images, cache=cache)
    files = list(cache.rglob("*.pt"))
    assert {p.parent.name for p in files} == {"images", "text"}
    for p in files:
        torch.save(torch.zeros(3, 2), p)
    text_cache._MEMORY.clear()
    assert _retrieval(tmp_path / "r2", toy_root, monkeypatch, ann, images, cache=cache) == first


# ---------------------------------------------------------------- methods' features come from the method


def _zeroshot_setup(toy_root, monkeypatch):
    from clipbench.models import load_model
    from clipbench.runner import build_dataset, validate
    from clipbench.tasks import RunContext

    v = validate(compose_config([f"paths.toy={toy_root}", "device=cpu", "+toy=zeroshot"]))
    model = load_model(v.model.arch, v.model.pretrained, "fp32", "cpu")
    ctx = RunContext(device=torch.device("cpu"), batch_size=32, progress=False, limit=60)
    return model, build_dataset(v.dataset), v.task, ctx


def test_a_method_built_on_clip_is_evaluated_through_its_own_features(toy_root, monkeypatch):
    from clipbench.config.methods import MethodConfig
    from clipbench.methods.base import prior_box
    from clipbench.methods.clip import ClipMethod
    from clipbench.tasks.zeroshot import evaluate

    class Grayscale(ClipMethod):
        def encode_regions(self, images, regions):
            return super().encode_regions([im.convert("L").convert("RGB") for im in images], regions)

    model, dataset, task, ctx = _zeroshot_setup(toy_root, monkeypatch)
    gray, plain = Grayscale(MethodConfig(), model), ClipMethod(MethodConfig(), model)
    assert plain.region_free and not gray.region_free
    top1 = evaluate(model, dataset, gray, task, ctx).metrics["top1"]
    # the grayscale features, scored directly
    images = [dataset.image(i) for i in range(60)]
    feats = torch.cat(gray.encode_regions(images, [[[prior_box(im.width, im.height, "full")]] for im in images]))
    from clipbench.data.templates import resolve_templates

    classifier = gray.classifier(dataset.classnames, resolve_templates(task.templates))
    expected = (feats @ classifier).argmax(dim=1).eq(torch.tensor([dataset.label(i) for i in range(60)])).float().mean()
    assert top1 == pytest.approx(float(expected))
    assert top1 < evaluate(model, dataset, plain, task, ctx).metrics["top1"] - 0.2


def test_region_free_cannot_be_declared():
    from clipbench.methods.clip import ClipMethod

    with pytest.raises(TypeError, match="region_free is derived"):
        type("Declared", (ClipMethod,), {"region_free": True})


def test_every_region_free_method_matches_its_own_features(toy_root, monkeypatch):
    from clipbench.config import to_schema
    from clipbench.errors import ConfigError
    from clipbench.methods import METHODS

    model, dataset, _, _ = _zeroshot_setup(toy_root, monkeypatch)
    images = [dataset.image(i) for i in range(4)]
    regions = [[[(0.0, 0.0, im.width / 2, im.height / 2)]] for im in images]
    fast = model.encode_image(torch.stack([model.preprocess(im) for im in images]))
    region_free = []
    for name in METHODS.names():
        try:
            method = METHODS.get(name).build(to_schema(METHODS.get(name).config, {"name": name}, "method"), model)
        except ConfigError:  # needs members or models to be named
            continue
        if method.region_free:
            region_free.append(name)
            torch.testing.assert_close(torch.cat(method.encode_regions(images, regions)), fast)
    assert region_free == ["clip"]


# ---------------------------------------------------------------- provenance


def test_git_sha_marks_a_dirty_tree(tmp_path, monkeypatch):
    from helpers import git_commit_all

    import clipbench.runner as runner

    git_commit_all(tmp_path, {"pyproject.toml": "", "code.py": "x = 1\n"})  # a checkout of the package
    monkeypatch.setattr(runner, "PROJECT_ROOT", tmp_path)
    runner.git_sha.cache_clear()
    try:
        clean = runner.git_sha()
        (tmp_path / "notes.txt").write_text("untracked files do not count\n")
        runner.git_sha.cache_clear()
        assert runner.git_sha() == clean and len(clean) == 12
        (tmp_path / "code.py").write_text("x = 2\n")
        runner.git_sha.cache_clear()
        assert runner.git_sha() == f"{clean}-dirty"
    finally:
        runner.git_sha.cache_clear()


# ---------------------------------------------------------------- empty evaluations


def test_an_empty_split_is_an_error_naming_split_and_file(tmp_path, toy_root, monkeypatch):
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: split 'testA' has no refs"):
        _run(tmp_path, toy_root, monkeypatch, "+toy=rec", "method=crop", "dataset.split=testA")
    assert not (tmp_path / "results.csv").exists()


def test_nothing_evaluated_is_an_error(tmp_path, toy_root, monkeypatch):
    ann, _, _ = _gallery_copy(toy_root, tmp_path / "g")
    (tmp_path / "no_images").mkdir()
    with pytest.raises(DataError, match=r"no sample was evaluated: split 'test' of flickr30k .*missing or unreadable image: 30"):
        _retrieval(tmp_path, toy_root, monkeypatch, ann, tmp_path / "no_images")
    assert not (tmp_path / "results.csv").exists()


def test_toy_world_writes_a_crowdflower_file(tmp_path, toy_root, monkeypatch):
    lines = (toy_root / "flickr8k" / "CrowdFlowerAnnotations.txt").read_text().splitlines()
    assert len(lines) > 30
    for line in lines:  # image, caption id, yes fraction, n yes, n no (three workers)
        image, caption_id, fraction, n_yes, n_no = line.split("\t")
        assert (toy_root / "images" / image).is_file() and "#" in caption_id
        assert int(n_yes) + int(n_no) == 3 and float(fraction) == pytest.approx(int(n_yes) / 3, abs=1e-5)
    assert len({line.split("\t")[2] for line in lines}) > 1
    res = _run(tmp_path, toy_root, monkeypatch, "+toy=clipscore", "dataset=flickr8k_cf")
    tau, n = res["kendall_tau_b"]
    assert n == len(lines) and tau > 0.2


def test_an_empty_judgment_file_is_an_error(tmp_path, toy_root, monkeypatch):
    root = tmp_path / "flickr8k"
    shutil.copytree(toy_root / "flickr8k", root)
    (root / "CrowdFlowerAnnotations.txt").write_text("")
    with pytest.raises(DataError, match="CrowdFlowerAnnotations.txt: no judgments"):
        _run(tmp_path, toy_root, monkeypatch, "+toy=clipscore", "dataset=flickr8k_cf", f"dataset.root={root}")


# ---------------------------------------------------------------- samples that cannot count


def test_a_retrieval_image_without_captions_is_skipped(tmp_path, toy_root, monkeypatch):
    ann, images, names = _gallery_copy(toy_root, tmp_path / "g", edit=lambda d: d["images"][3].update(sentences=[]))
    res = _retrieval(tmp_path, toy_root, monkeypatch, ann, images)
    assert res["skipped"] == (1, 30)
    assert res["text_retrieval_recall@10"][1] == 29
    assert _metrics_json(tmp_path)["skip_reasons"] == {"image without captions": 1}


def test_a_point_cloud_with_extreme_coordinates_is_skipped(tmp_path, toy_root, monkeypatch):
    shutil.copytree(toy_root / "modelnet40_ply_hdf5_2048", tmp_path / "modelnet40_ply_hdf5_2048")
    with h5py.File(tmp_path / "modelnet40_ply_hdf5_2048" / "ply_data_test0.h5", "r+") as f:
        n = len(f["data"])
        f["data"][2] = f["data"][2] * 1e30
    res = _run(tmp_path / "out", toy_root, monkeypatch, "+toy=pointcloud", f"dataset.root={tmp_path}")
    assert res["skipped"] == (1, n)
    assert res["top1"][1] == n - 1
    assert _metrics_json(tmp_path / "out")["skip_reasons"] == {"non-finite features (extreme coordinates)": 1}


def test_a_decompression_bomb_is_skipped(tmp_path, toy_root, monkeypatch):
    ann, images, names = _gallery_copy(toy_root, tmp_path / "g")
    Image.new("L", (13400, 13400)).save(images / names[5])  # 180 MP, over PIL's bomb limit; a small PNG
    res = _retrieval(tmp_path, toy_root, monkeypatch, ann, images)
    assert res["skipped"] == (1, 30)


def test_a_fifo_named_as_an_image_is_skipped(tmp_path):
    from clipbench.data.base import open_rgb

    fifo = tmp_path / "image.jpg"
    os.mkfifo(fifo)
    result = []
    reader = threading.Thread(target=lambda: result.append(open_rgb(fifo)), daemon=True)
    reader.start()
    reader.join(120)  # a hang guard: opening a FIFO without a writer blocks forever
    assert not reader.is_alive() and result == [None]


def test_malformed_bboxes_are_skipped_and_counted(tmp_path, toy_root, monkeypatch, capsys):
    root, refs, instances = _refer_copy(toy_root, tmp_path / "refcoco")
    val = [r for r in refs if r["split"] == "val"]
    images = list(dict.fromkeys(r["image_id"] for r in val))[:3]
    anns = {a["id"]: a for a in instances["annotations"]}
    bad = [next(a["id"] for a in instances["annotations"] if a["image_id"] == i) for i in images]
    anns[bad[0]]["bbox"] = ["a", "b", "c", "d"]
    anns[bad[1]]["bbox"] = [1, 2, 3]
    del anns[bad[2]]["bbox"]
    (root / "instances.json").write_text(json.dumps(instances))
    _run(tmp_path / "out", toy_root, monkeypatch, "+toy=rec", "method=crop", f"dataset.root={root}")
    assert "3 annotation(s) with a malformed bbox (first: id" in capsys.readouterr().out
    reasons = _metrics_json(tmp_path / "out")["skip_reasons"]
    assert reasons["malformed gold box"] == sum(len(r["sentences"]) for r in val if r["ann_id"] in bad)
    assert reasons["invalid box (proposal dropped, not a sentence)"] == 3


def _rec_images_copy(toy_root: Path, dest: Path, instances: dict) -> Path:
    dest.mkdir()
    for im in instances["images"]:
        shutil.copy(toy_root / "images" / im["file_name"], dest / im["file_name"])
    return dest


def test_image_names_that_leave_the_image_root_are_refused(tmp_path, toy_root, monkeypatch, capsys):
    root, refs, instances = _refer_copy(toy_root, tmp_path / "refcoco")
    images = _rec_images_copy(toy_root, tmp_path / "images", instances)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    val_images = {r["image_id"] for r in refs if r["split"] == "val"}
    moved = [im for im in instances["images"] if im["id"] in val_images][:2]
    shutil.move(images / moved[0]["file_name"], outside / "up.png")
    shutil.move(images / moved[1]["file_name"], outside / "absolute.png")
    moved[0]["file_name"] = "../elsewhere/up.png"
    moved[1]["file_name"] = str(outside / "absolute.png")
    (root / "instances.json").write_text(json.dumps(instances))
    sentences = sum(len(r["sentences"]) for r in refs if r["image_id"] in {m["id"] for m in moved})
    _run(tmp_path / "refused", toy_root, monkeypatch, "+toy=rec", "method=crop", f"dataset.root={root}", f"dataset.images={images}")
    assert "refused 2 image file name(s) that leave dataset.images" in capsys.readouterr().out
    assert _metrics_json(tmp_path / "refused")["skip_reasons"] == {"unreadable image": sentences}
    _run(tmp_path / "allowed", toy_root, monkeypatch, "+toy=rec", "method=crop", f"dataset.root={root}", f"dataset.images={images}",
         "dataset.allow_outside_images=true")
    assert "unreadable image" not in _metrics_json(tmp_path / "allowed")["skip_reasons"]


def test_karpathy_paths_outside_the_image_root_are_refused(tmp_path, toy_root, monkeypatch):
    def escape(data):
        data["images"][0]["filename"] = "../ann/x.jpg"
        data["images"][1]["filename"] = "/etc/hostname"

    ann, images, names = _gallery_copy(toy_root, tmp_path / "g", edit=escape)
    shutil.copy(images / names[0], ann / "x.jpg")
    res = _retrieval(tmp_path, toy_root, monkeypatch, ann, images)
    assert res["skipped"] == (2, 30)


def test_an_empty_retrieval_caption_is_skipped_and_counted(tmp_path, toy_root, monkeypatch):
    def blank(data):
        data["images"][0]["sentences"][0]["raw"] = ""
        for s in data["images"][1]["sentences"]:
            s["raw"] = " "

    ann, images, _ = _gallery_copy(toy_root, tmp_path / "g", edit=blank)
    data = json.loads((ann / "dataset_flickr30k.json").read_text())
    n_captions = sum(len(im["sentences"]) for im in data["images"])
    res = _retrieval(tmp_path, toy_root, monkeypatch, ann, images)
    empty = 1 + len(data["images"][1]["sentences"])
    assert res["skipped"] == (1 + empty, 30 + empty)  # the image whose captions are all empty, and each empty caption
    assert res["image_retrieval_recall@1"][1] == n_captions - empty
    assert _metrics_json(tmp_path)["skip_reasons"] == {
        "image without captions": 1, "empty caption (dropped, not an image)": empty,
    }

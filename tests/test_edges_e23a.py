"""Numbers that stay right at the edges: duplicate image ids, top-k over few classes, exact recall."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_config, tmp_overrides
from PIL import Image
from rec_fixtures import refer_records, write_images

from clipbench.errors import DataError


def _in_process(tmp_path, *overrides) -> dict[str, dict]:
    """runner.run in this process; its rows by metric."""
    from clipbench.runner import run

    return {r["metric"]: r for r in run(compose_config(tmp_overrides(tmp_path, *overrides)), tmp_path / "run")}


def test_a_duplicate_image_id_in_instances_is_one_data_error_naming_it(tmp_path):
    from clipbench.config import to_schema
    from clipbench.data import DATASETS
    from clipbench.toy.writers.refer import write_refer

    refs, images, annotations = refer_records()
    images.append({**images[0], "file_name": "another_picture.jpg"})  # a second record under id 101
    write_refer(tmp_path / "refcoco", refs, images, annotations)
    spec = DATASETS.get("refcoco")
    cfg = to_schema(spec.config, {"name": "refcoco", "root": str(tmp_path), "images": str(write_images(tmp_path / "im"))}, "dataset")
    with pytest.raises(DataError, match=r"instances\.json: image id 101 appears 2 times"):
        spec.build(cfg)


def test_top_k_is_reported_only_below_the_class_count(tmp_path):
    for name, colour in (("red", (200, 10, 10)), ("blue", (10, 10, 200))):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (20, 20), colour).save(tmp_path / "imgs" / name / f"{k}.png")
    rows = _in_process(tmp_path, "dataset=imagefolder", f"dataset.root={tmp_path / 'imgs'}", "task.templates=simple",
                       "task.topk=[1,2,5]", "ci.resamples=0")
    assert "top1" in rows and "top2" not in rows and "top5" not in rows  # top-2 of 2 classes is 1.0 by construction


def test_retrieval_recall_is_exact_in_float64():
    from clipbench.metrics.retrieval import retrieval_metrics

    n = 150
    features = torch.eye(n)
    owner = [(t + 1) % n if t < 6 else t for t in range(n)]  # 6 captions belong to the next image: 144 hits of 150
    metrics = retrieval_metrics(features, features, owner, ks=(1,))
    assert metrics["image_retrieval_recall@1"] == 144 / 150

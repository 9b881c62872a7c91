"""Retrieval recall against a brute-force loop, and task=retrieval end to end on a Karpathy split."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from caption_fixtures import FLICKR_NAMES, ReferenceScorer, write_shape_images, write_tiny_checkpoint
from conftest import base_args, run_cli

from clipbench.metrics.retrieval import retrieval_metrics
from clipbench.toy.writers.retrieval_galleries import write_karpathy


def brute_force_recall(image_feats, text_feats, owner, k):
    """Loop over queries: rank the gallery by dot product, hit if a positive is in the first k."""
    sims = text_feats @ image_feats.T
    t2i_hits = 0
    for t in range(len(owner)):
        order = sorted(range(sims.shape[1]), key=lambda i: -float(sims[t, i]))
        t2i_hits += owner[t] in order[:k]
    i2t_hits = 0
    for i in range(sims.shape[1]):
        order = sorted(range(sims.shape[0]), key=lambda t: -float(sims[t, i]))
        i2t_hits += any(owner[t] == i for t in order[:k])
    return t2i_hits / len(owner), i2t_hits / sims.shape[1]


def test_recall_matches_brute_force():
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
    owner = [i for i in range(12) for _ in range(3)][:-1]  # the last image has two captions
    texts = torch.nn.functional.normalize(images[owner] + 0.9 * torch.randn(len(owner), 8), dim=-1)
    metrics = retrieval_metrics(images, texts, owner, ks=(1, 3, 5))
    seen = set()
    for k in (1, 3, 5):
        t2i, i2t = brute_force_recall(images, texts, owner, k)
        assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(t2i)
        assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(i2t)
        seen.add((round(t2i, 4), round(i2t, 4)))
    assert len(seen) == 3  # the noise level makes k matter


def test_recall_hand_example():
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0.3, 0.95], [0.6, 0.8, 0]])
    owner = [0, 1, 2, 1]
    m = retrieval_metrics(images, texts, owner, ks=(1, 2))
    # text->image top1: t0->0 hit, t1->2 miss, t2->2 hit, t3->1 hit
    assert m["image_retrieval_recall@1"] == pytest.approx(3 / 4)
    # image->text top1: i0->t0 hit; i1->t3 hit; i2->t1 miss (t2 is second)
    assert m["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@2"] == pytest.approx(1.0)


def test_retrieval_task_on_karpathy_split(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    names = FLICKR_NAMES[:7]
    paths = write_shape_images(tmp_path / "flickr30k-images", names)
    paths[6].unlink()  # a listed image that is missing: skipped with its captions
    captions = [[f"a shape number {i}", f"picture {i} of a disc"] for i in range(7)]
    items = [(f"{n}.jpg", "test", caps) for n, caps in zip(names, captions)]
    items.append(("1234_train.jpg", "train", ["not in the test split"]))
    write_karpathy(tmp_path / "ann" / "dataset_flickr30k.json", "flickr30k", items)
    args = [a for a in base_args(tmp_path, "task=retrieval", "dataset=flickr30k", f"dataset.root={tmp_path / 'ann'}",
                                  f"dataset.images={tmp_path / 'flickr30k-images'}", f"model.pretrained={ckpt}",
                                  "task.recall_k=[1,2,5]") if a != "model.pretrained=null"]
    proc = run_cli(*args, check=True)
    assert "skipped 1 sample" in proc.stdout
    ref = ReferenceScorer(ckpt)
    image_feats = ref.images(paths[:6])
    text_feats = ref.texts([c for caps in captions[:6] for c in caps])
    owner = [i for i in range(6) for _ in range(2)]
    res = {r.metric: (r.value, r.n) for r in pd.read_csv(tmp_path / "results.csv").itertuples()}
    for k in (1, 2, 5):
        t2i, i2t = brute_force_recall(image_feats, text_feats, owner, k)
        assert res[f"image_retrieval_recall@{k}"] == (pytest.approx(t2i, abs=1e-6), 12)
        assert res[f"text_retrieval_recall@{k}"] == (pytest.approx(i2t, abs=1e-6), 6)
    assert res["skipped"][0] == 1
    assert len(list((tmp_path / "cache" / "images").glob("images-*.pt"))) == 1  # gallery cached on disk


@pytest.mark.parametrize("name", ["flickr30k", "coco_captions", "hf_captions"])
def test_retrieval_dataset_configs_match_their_schemas(name):
    from helpers import compose_config

    from clipbench.config import to_schema
    from clipbench.data import DATASETS
    from clipbench.errors import ConfigError

    cfg = compose_config(["task=retrieval", f"dataset={name}"])
    spec = DATASETS.get(name)
    assert "retrieval" in spec.tasks
    key = "dataset.path" if name == "hf_captions" else "dataset.root"
    with pytest.raises(ConfigError, match=f"^{key}: is not set"):  # every YAML key is a schema key
        to_schema(spec.config, cfg.dataset, "dataset")

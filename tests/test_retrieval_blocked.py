"""Retrieval scored block by block gives the recalls and per-query hits of the dense (texts x images) ranking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipbench.metrics.retrieval import retrieval_metrics, retrieval_outcomes, retrieval_results

KS = (1, 2, 5, 10, 100)
BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "retrieval_memory.py"


def dense_hits(image_features, text_features, owner, k):
    """The dense ranking as clipbench computed it before blocking: the whole (texts x images) score matrix,
    a boolean positives matrix, torch.topk per k on each row (text queries) or each column (image queries)."""
    owner = torch.as_tensor(owner, dtype=torch.long)
    scores = text_features.float() @ image_features.float().T
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(owner)), owner] = True

    def hits(s, p):
        top = s.topk(min(k, s.shape[1]), dim=1).indices
        return p.gather(1, top).any(dim=1)

    return hits(scores, positives), hits(scores.T, positives.T)


def dense_recalls(image_features, text_features, owner, ks):
    out = {}
    for k in ks:
        t2i, i2t = dense_hits(image_features, text_features, owner, k)
        out[f"image_retrieval_recall@{k}"] = t2i.double().mean().item() if len(t2i) else float("nan")
        out[f"text_retrieval_recall@{k}"] = i2t.double().mean().item()
    return out


def tied_gallery(n_images=71, dim=16, seed=0):
    """Random unit embeddings with deliberate exact ties: duplicated images, duplicated captions, images
    with 1 to 4 captions, and image 3 without any caption."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=gen), dim=-1)
    images[10:20] = images[9]  # ten copies of one image: every text sees a ten-way tie
    images[40:43] = images[39]
    counts = torch.randint(1, 5, (n_images,), generator=gen)
    counts[3] = 0
    owner = [i for i in range(n_images) for _ in range(int(counts[i]))]
    noise = torch.randn(len(owner), dim, generator=gen)
    texts = torch.nn.functional.normalize(images[owner] + 1.2 * noise, dim=-1)
    texts[5:9] = texts[4]  # duplicated captions (of one image and of its neighbour)
    texts[-6:] = texts[-7]
    coarse = torch.round(texts * 4) / 4  # coarse values tie many scores that are not duplicates
    texts[::7] = coarse[::7]
    return images, texts, owner


@pytest.fixture(scope="module")
def gallery():
    return tied_gallery()


def test_the_gallery_has_ties_at_the_cut(gallery):
    images, texts, owner = gallery
    scores = texts @ images.T
    kth = scores.topk(5, dim=1).values[:, -1:]
    assert ((scores == kth).sum(dim=1) > 1).sum() >= 10  # ties decide membership of the top 5 for many texts
    assert len(texts) % 64 and len(images) % 64  # neither direction is a whole number of 64-row blocks


@pytest.mark.parametrize("block_rows", [None, 64, 100, 1000])
def test_blocked_recalls_equal_the_dense_ranking(gallery, block_rows):
    images, texts, owner = gallery
    metrics, _ = retrieval_results(images, texts, owner, KS, block_rows=block_rows)
    assert metrics == dense_recalls(images, texts, owner, KS)
    assert len({v for k, v in metrics.items() if k.startswith("image")}) >= 4  # k matters


@pytest.mark.parametrize("block_rows", [64, 129])
def test_blocked_outcomes_equal_the_dense_hits(gallery, block_rows):
    images, texts, owner = gallery
    _, outcomes = retrieval_results(images, texts, owner, KS, block_rows=block_rows)
    for k in KS:
        t2i, i2t = dense_hits(images, texts, owner, k)
        text_queries, image_queries = outcomes[f"image_retrieval_recall@{k}"], outcomes[f"text_retrieval_recall@{k}"]
        np.testing.assert_array_equal(text_queries.values, t2i.numpy().astype(float))
        np.testing.assert_array_equal(image_queries.values, i2t.numpy().astype(float))
        np.testing.assert_array_equal(text_queries.cluster, owner)
        assert list(text_queries.sample_id) == [f"t{t}" for t in range(len(owner))]
        assert list(image_queries.sample_id) == [f"i{i}" for i in range(len(images))]
        assert image_queries.values[3] == 0.0  # the image without a caption can never find one


def test_wide_embeddings_and_many_queries_in_uneven_blocks():
    """512-d float16 features (as models return them), 2 100 texts over 450 images, both directions blocked."""
    images, texts, owner = tied_gallery(n_images=450, dim=512, seed=1)
    images, texts = images.half(), texts.half()
    metrics, _ = retrieval_results(images, texts, owner, KS, block_rows=200)
    assert metrics == dense_recalls(images, texts, owner, KS)


def test_public_functions_agree_with_the_single_pass(gallery):
    images, texts, owner = gallery
    metrics, outcomes = retrieval_results(images, texts, owner, KS)
    assert retrieval_metrics(images, texts, owner, KS) == metrics
    again = retrieval_outcomes(images, texts, owner, KS)
    assert again.keys() == outcomes.keys()
    assert all(np.array_equal(again[m].values, outcomes[m].values) for m in outcomes)


def test_no_captions_and_no_images():
    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    metrics, outcomes = retrieval_results(images, torch.empty(0, 8), [], (1, 5))
    assert np.isnan(metrics["image_retrieval_recall@1"]) and metrics["text_retrieval_recall@5"] == 0.0
    assert outcomes == {}
    assert metrics.keys() == dense_recalls(images, torch.empty(0, 8), [], (1, 5)).keys()


def test_no_score_block_holds_texts_x_images():
    """Memory: the largest single allocation while scoring is a block of queries x gallery, not the dense matrix."""
    images, texts, owner = tied_gallery(n_images=600, dim=32, seed=2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        retrieval_results(images, texts, owner, (1, 5, 10), block_rows=64)
    largest = max(e.cpu_memory_usage for e in prof.events())
    dense_bytes = len(texts) * len(images) * 4
    assert largest <= 64 * len(texts) * 4 < dense_bytes / 5


def test_memory_benchmark_runs_quick():
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--quick"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("| blocked") for line in lines) and any(line.startswith("| dense") for line in lines)
    assert "recalls identical: yes" in proc.stdout

"""Image-text retrieval recall with CLIP_benchmark's definition: a hit is any positive in the top k.

``image_retrieval_recall@k``: each text query ranks the images; ``text_retrieval_recall@k``: each
image query ranks the texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clipbench.metrics.uncertainty import Outcome


def hits_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """scores, positives: (queries, gallery); per query, is a positive among its top k."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return positives.gather(1, top).any(dim=1)


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """scores, positives: (queries, gallery); share of queries with a positive among their top k, in float64
    (144 of 150 is 0.96, not float32's 0.9599999785)."""
    if scores.shape[0] == 0:
        return float("nan")
    return hits_at_k(scores, positives, k).double().mean().item()


def _ranking(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int]):
    """(text x image scores, positives, owner image of each text) from L2-normalised features."""
    owner = torch.as_tensor(list(text_to_image), dtype=torch.long)
    scores = text_features.float() @ image_features.float().T  # (texts, images)
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(owner)), owner] = True
    return scores, positives, owner


def retrieval_metrics(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k both ways from L2-normalised features; ``text_to_image[t]`` is the image of text t."""
    scores, positives, _ = _ranking(image_features, text_features, text_to_image)
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = recall_at_k(scores, positives, k)
        metrics[f"text_retrieval_recall@{k}"] = recall_at_k(scores.T, positives.T, k)
    return metrics


def retrieval_outcomes(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, Outcome]:
    """Per-query hits behind ``retrieval_metrics``; text queries resample with their image's other captions."""
    scores, positives, owner = _ranking(image_features, text_features, text_to_image)
    text_ids, image_ids = [f"t{t}" for t in range(len(owner))], [f"i{i}" for i in range(scores.shape[1])]
    outcomes = {}
    for k in ks:
        if scores.shape[0] and scores.shape[1]:
            outcomes[f"image_retrieval_recall@{k}"] = Outcome(
                hits_at_k(scores, positives, k).numpy(), cluster=owner.numpy(), sample_id=text_ids)
            outcomes[f"text_retrieval_recall@{k}"] = Outcome(hits_at_k(scores.T, positives.T, k).numpy(), sample_id=image_ids)
    return outcomes



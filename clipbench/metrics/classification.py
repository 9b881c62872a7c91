"""Classification metrics over logits (N, C) and integer targets (N,)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clipbench.metrics.uncertainty import Outcome


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Per sample: is its target among the k highest logits (ties broken by index order)."""
    if len(targets) == 0:
        return torch.empty(0, dtype=torch.bool)
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == targets[:, None]).any(dim=1)


def reported_topk(topk: Sequence[int], num_classes: int) -> list[int]:
    """The k of ``task.topk`` below the class count: top-k over k or fewer classes is 1.0 whatever the model."""
    return [k for k in topk if k < num_classes]


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int = 1) -> float:
    """Share of samples whose target is among the k highest logits (ties broken by index order)."""
    if len(targets) == 0:
        return float("nan")
    return topk_hits(logits, targets, k).double().mean().item()


def classification_outcomes(
    logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int], sample_ids: Sequence, suffix: str = ""
) -> dict[str, Outcome]:
    """Per-sample outcomes of the reported ``top<k><suffix>`` and of mean per-class recall (top-1 hits grouped by class)."""
    ids = [str(i) for i in sample_ids]
    outcomes = {f"top{k}{suffix}": Outcome(topk_hits(logits, targets, k).numpy(), sample_id=ids)
                for k in reported_topk(topk, logits.shape[1])}
    top1 = topk_hits(logits, targets, 1).numpy()
    outcomes[f"mean_per_class_recall{suffix}"] = Outcome(top1, "mean_of_groups", group=targets.numpy(), sample_id=ids)
    return outcomes


def per_class_recall(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of each class in float64 (CLIP_benchmark's precision); NaN for classes with no samples."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    hits = torch.bincount(targets[preds == targets], minlength=num_classes).double()
    recall = hits / counts
    recall[counts == 0] = float("nan")
    return recall


def mean_per_class_recall(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    """Mean recall over the classes present in ``targets`` (CLIP_benchmark's balanced accuracy)."""
    recall = per_class_recall(preds, targets, num_classes)
    present = ~torch.isnan(recall)
    return recall[present].mean().item() if present.any() else float("nan")

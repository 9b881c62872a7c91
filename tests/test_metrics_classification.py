import math

import torch

from clipbench.metrics.classification import mean_per_class_recall, per_class_recall, topk_accuracy


def test_topk_accuracy_hand_computed():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    targets = torch.tensor([1, 2, 2, 1])
    # top1 preds: 1, 0, 2, 0 -> hits at 0 and 2
    assert topk_accuracy(logits, targets, 1) == 0.5
    # top2: {1,0}, {0,1 or 2 tie->index order}, {2,1}, {0,1} -> hits at 0, 2, 3
    assert topk_accuracy(logits, targets, 2) == 0.75
    assert topk_accuracy(logits, targets, 10) == 1.0


def test_mean_per_class_recall_is_balanced():
    targets = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 0, 0, 2, 1])
    recall = per_class_recall(preds, targets, 4)
    assert recall[:3].tolist() == [1.0, 0.0, 0.5]
    assert math.isnan(recall[3].item())  # absent class is not counted
    assert abs(mean_per_class_recall(preds, targets, 4) - 0.5) < 1e-9


def test_empty_inputs_give_nan():
    assert math.isnan(topk_accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))


def test_metrics_carry_clip_benchmark_float64_precision():
    """8 hits in 10 and 2 of 10 classes recalled: float32 rounding of 0.8 and 0.2 is off by ~1e-8."""
    from sklearn.metrics import balanced_accuracy_score

    targets = torch.arange(10)
    preds = torch.tensor([0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert abs(mean_per_class_recall(preds, targets, 10) - balanced_accuracy_score(targets.numpy(), preds.numpy())) < 1e-12
    logits = torch.eye(10)[torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 0])]
    assert abs(topk_accuracy(logits, targets, 1) - 8 / 10) < 1e-12

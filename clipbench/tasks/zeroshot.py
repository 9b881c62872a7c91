"""Zero-shot classification: template-ensemble text classifier, images through any method."""

from __future__ import annotations

import json

import torch

from clipbench.config.tasks import ZeroShotConfig
from clipbench.data.loading import image_batches, pil_batches
from clipbench.data.templates import resolve_templates
from clipbench.errors import ConfigError
from clipbench.methods.base import prior_box
from clipbench.metrics.classification import (
    classification_outcomes,
    mean_per_class_recall,
    per_class_recall,
    reported_topk,
    topk_accuracy,
)
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import RunContext, TaskResult


def task_templates(cfg: ZeroShotConfig, dataset) -> list[str]:
    """``task.templates`` when set; else the dataset's own (clip_benchmark's), else the 18 CIFAR ones."""
    if cfg.templates is not None:
        return resolve_templates(cfg.templates)
    own = getattr(dataset, "templates", None)
    return resolve_templates(own if own else "cifar")


def evaluate(model, dataset, method, cfg: ZeroShotConfig, ctx: RunContext) -> TaskResult:
    if not hasattr(dataset, "classnames"):
        raise ConfigError("task", f"dataset {getattr(dataset, 'name', '')!r} is a retrieval dataset; use task=retrieval")
    templates = task_templates(cfg, dataset)
    classifier = method.classifier(dataset.classnames, templates, ctx.cache_dir)
    meter = Throughput(ctx.device)
    batches_out = []  # per batch: (indices, logits, labels, unreadable count)
    scale = model.logit_scale
    if method.region_free:
        batches = image_batches(dataset, model.preprocess, ctx.batch_size, ctx.num_workers, ctx.device, ctx.limit, ctx.ranks)
        for idx, images, labels, bad in tqdm(batches, desc="zeroshot", disable=not ctx.progress, unit="batch"):
            if images is None:
                batches_out.append((idx, None, labels, len(bad)))
                continue
            with meter.forward(len(idx)):
                feats = model.encode_image(images)
                logits = scale * feats @ classifier
            batches_out.append((idx, logits.cpu(), labels, len(bad)))
    else:
        batches = pil_batches(dataset, ctx.batch_size, ctx.num_workers, ctx.limit, ctx.ranks)
        for idx, images, labels, bad in tqdm(batches, desc="zeroshot", disable=not ctx.progress, unit="batch"):
            if not images:
                batches_out.append((idx, None, labels, len(bad)))
                continue
            regions = [[[prior_box(im.width, im.height, method.cfg.region)]] for im in images]
            with meter.forward(len(images)):
                feats = torch.cat(method.encode_regions(images, regions))
                logits = scale * feats @ classifier
            batches_out.append((idx, logits.cpu(), labels, len(bad)))
    meter.stop()
    batches_out = ctx.ranks.gather(batches_out)
    skipped = sum(b[3] for b in batches_out)
    encoded = [b for b in batches_out if b[1] is not None]
    logits_all, targets_all, index_all = [b[1] for b in encoded], [b[2] for b in encoded], [b[0] for b in encoded]
    num_classes = len(dataset.classnames)
    multilabel = bool(getattr(dataset, "multilabel", False))
    if logits_all:
        logits, targets, indices = torch.cat(logits_all), torch.cat(targets_all), torch.cat(index_all)
    else:
        shape = (0, num_classes) if multilabel else (0,)
        logits, targets, indices = torch.empty(0, num_classes), torch.empty(shape, dtype=torch.long), torch.empty(0)
    if multilabel:
        return _multilabel_result(dataset, logits, targets, indices, meter, skipped, ctx)
    preds = logits.argmax(dim=1)
    metrics = {f"top{k}": topk_accuracy(logits, targets, k) for k in reported_topk(cfg.topk, num_classes)}
    metrics["mean_per_class_recall"] = mean_per_class_recall(preds, targets, num_classes)
    recall = per_class_recall(preds, targets, num_classes)
    per_class = {"class": dataset.classnames, "recall": recall.tolist(), "n": torch.bincount(targets, minlength=num_classes).tolist()}
    predictions = None
    if ctx.save_predictions:
        predictions = [
            {"sample_id": int(i), "target": int(t), "pred": int(p), "scores": _scores(row)}
            for i, t, p, row in zip(indices.tolist(), targets.tolist(), preds.tolist(), logits.tolist())
        ]
    return TaskResult(
        metrics=metrics,
        n=len(targets),
        throughput=meter,
        skipped=skipped,
        skip_reasons={"unreadable image": skipped} if skipped else {},
        predictions=predictions,
        tables={"per_class_accuracy": per_class},
        outcomes=classification_outcomes(logits, targets, cfg.topk, indices.long().tolist()),
    )


def _scores(row: list[float]) -> str:
    return json.dumps([round(v, 5) for v in row])


def _multilabel_result(dataset, logits, targets, indices, meter, skipped, ctx: RunContext) -> TaskResult:
    """Multi-label sets (voc2007_multilabel): clip_benchmark's mean average precision over classes."""
    from clip_benchmark.metrics.zeroshot_classification import average_precision_per_class

    ap = average_precision_per_class(logits, targets) if len(targets) else torch.full((logits.shape[1],), float("nan"))
    per_class = {"class": dataset.classnames, "average_precision": ap.tolist(), "n": targets.sum(0).tolist()}
    predictions = None
    if ctx.save_predictions:
        predictions = [
            {"sample_id": int(i), "target": json.dumps(t), "pred": int(max(range(len(row)), key=row.__getitem__)), "scores": _scores(row)}
            for i, t, row in zip(indices.tolist(), targets.tolist(), logits.tolist())
        ]
    return TaskResult(
        metrics={"mean_average_precision": ap.mean().item()},
        n=len(targets),
        throughput=meter,
        skipped=skipped,
        skip_reasons={"unreadable image": skipped} if skipped else {},
        predictions=predictions,
        tables={"per_class_average_precision": per_class},
    )

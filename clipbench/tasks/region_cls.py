"""Region classification (FALIP's classification setting): zero-shot classes, the object's boxes as the region.

All boxes of a sample form one region: FALIP merges them into one mask; the image-editing prompts edit
each box or their union (``method.multi_box``; crop always uses the union); plain CLIP ignores them.
Boxes are clipped to the image; a sample with no box left is skipped and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import torch

from clipbench.config.tasks import RegionClsConfig
from clipbench.data.loading import prefetched, rank_batches
from clipbench.data.templates import resolve_templates
from clipbench.metrics.boxes import clip_box
from clipbench.metrics.classification import (
    classification_outcomes,
    mean_per_class_recall,
    reported_topk,
    topk_accuracy,
)
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import RunContext, TaskResult, only_result


def method_templates(method, templates: list[str]) -> list[str]:
    """The templates as the method words them (shade replaces them), without duplicates."""
    return list(dict.fromkeys(method.text("{}", t) for t in templates))


def evaluate(model, dataset, method, cfg: RegionClsConfig, ctx: RunContext) -> TaskResult:
    return only_result(evaluate_many(model, dataset, [method], cfg, ctx))


def evaluate_many(model, dataset, methods, cfg: RegionClsConfig, ctx: RunContext) -> list[TaskResult | Exception]:
    """``evaluate`` of several configs of one method in one pass over the data (each image read once, its
    regions encoded by ``encode_together``); when there are several, a config that fails gets its exception and
    the others go on. On several ranks each evaluates its share of the windows (clipbench/distributed.py)."""
    alone = len(methods) == 1  # its error is raised at once (on every rank, nothing is gathered)
    failed: dict[int, Exception] = {}
    templates, classifiers = {}, {}
    for k, method in enumerate(methods):
        try:
            templates[k] = method_templates(method, resolve_templates(cfg.templates))
            classifiers[k] = method.classifier(dataset.classnames, templates[k], ctx.cache_dir)
        except Exception as exc:  # noqa: BLE001  (this config fails alone)
            if alone:
                raise
            failed[k] = exc
    scale = model.logit_scale
    meter = Throughput(ctx.device)
    n = len(dataset) if ctx.limit is None else min(ctx.limit, len(dataset))
    windows = rank_batches(n, ctx.batch_size, ctx.ranks)  # a batch: the valid samples of one index window
    loaded = prefetched(dataset.image, [i for w in windows for i in w], ctx.num_workers)
    parts = []
    with tqdm(total=sum(map(len, windows)), desc="region_cls", disable=not ctx.progress, unit="img") as bar:
        for window in windows:
            parts.append(_window(dataset, methods, classifiers, failed, scale, meter, [next(loaded) for _ in window],
                                 ctx.group_memory_mb))
            bar.update(len(window))
    meter.stop()
    parts = ctx.ranks.gather(parts)
    skips: Counter[str] = sum((p.skips for p in parts), Counter())
    targets = [t for p in parts for t in p.targets]
    ids = [i for p in parts for i in p.ids]
    return [failed[k] if k in failed else
            _result(dataset, cfg, ctx, [p.logits[k] for p in parts if k in p.logits], targets, ids, skips, meter, templates[k])
            for k in range(len(methods))]


def _result(dataset, cfg: RegionClsConfig, ctx: RunContext, logits, targets, ids, skips, meter, templates) -> TaskResult:
    num_classes = len(dataset.classnames)
    logits = torch.cat(logits) if logits else torch.empty(0, num_classes)
    target = torch.tensor(targets, dtype=torch.long)
    preds = logits.argmax(dim=1)
    metrics = {f"top{k}": topk_accuracy(logits, target, k) for k in reported_topk(cfg.topk, num_classes)}
    metrics["mean_per_class_recall"] = mean_per_class_recall(preds, target, num_classes)
    dropped = skips.get("invalid box (dropped, not a sample)", 0)
    predictions = None
    if ctx.save_predictions:
        predictions = [
            {"sample_id": s, "target": t, "pred": p, "scores": json.dumps([round(v, 5) for v in row])}
            for s, t, p, row in zip(ids, targets, preds.tolist(), logits.tolist())
        ]
    return TaskResult(
        metrics=metrics,
        n=len(targets),
        throughput=meter,
        skipped=sum(skips.values()) - dropped,
        skip_reasons=dict(skips),
        predictions=predictions,
        outcomes=classification_outcomes(logits, target, cfg.topk, ids),
        extra={"dropped_boxes": dropped, "templates": templates},
    )


@dataclass
class Window:
    """One index window's valid samples: each config's logits (empty when none is valid), targets, ids, skips."""

    logits: dict[int, torch.Tensor]
    targets: list[int]
    ids: list
    skips: Counter[str]


def _window(dataset, methods, classifiers, failed: dict, scale, meter: Throughput, loaded,
            group_memory_mb: float | None = None) -> Window:
    """Encode the valid samples of one window of (index, image) pairs together, as one batch, with every config
    not yet ``failed`` (one that fails here is added to it, unless it is the only one)."""
    skips: Counter[str] = Counter()
    images, regions, targets, ids = [], [], [], []
    for i, image in loaded:
        if image is None:
            skips["unreadable image"] += 1
            continue
        boxes = [b for b in (clip_box(b, *image.size) for b in dataset.boxes(i)) if b is not None]
        if len(boxes) < len(dataset.boxes(i)):
            skips["invalid box (dropped, not a sample)"] += len(dataset.boxes(i)) - len(boxes)
        if not boxes:
            skips["no valid box"] += 1
            continue
        images.append(image)
        regions.append([boxes])
        targets.append(dataset.label(i))
        ids.append(dataset.sample_id(i))
    live = [k for k in range(len(methods)) if k not in failed]
    logits: dict[int, torch.Tensor] = {}
    if not images or not live:
        return Window(logits, targets, ids, skips)
    with meter.forward(len(images)):
        feats = type(methods[0]).encode_together([methods[k] for k in live], images, regions, group_memory_mb)
        for k, per_image in zip(live, feats):
            if isinstance(per_image, Exception):
                if len(methods) == 1:
                    raise per_image
                failed[k] = per_image
            else:
                logits[k] = (scale * torch.cat(per_image) @ classifiers[k]).cpu()
    return Window(logits, targets, ids, skips)

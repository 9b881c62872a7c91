"""Zero-shot classification: template-ensemble text classifier, images through any method."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from clipbench.data.loading import image_batches
from clipbench.data.templates import resolve_templates
from clipbench.methods.base import prior_box
from clipbench.metrics.classification import mean_per_class_recall, per_class_recall, topk_accuracy
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import TASKS, RunContext, TaskResult, TaskSpec


@dataclass
class ZeroShotConfig:
    name: str = "zeroshot"
    templates: Any = "cifar"  # a named set or a list of strings with one {}
    topk: list[int] = field(default_factory=lambda: [1, 5])

    def validate(self) -> None:
        resolve_templates(self.templates)


def _identity_collate(items):
    return items


def evaluate(model, dataset, method, cfg: ZeroShotConfig, ctx: RunContext) -> TaskResult:
    templates = resolve_templates(cfg.templates)
    classifier = method.classifier(dataset.classnames, templates, ctx.cache_dir)
    meter = Throughput(ctx.device)
    logits_all, targets_all, index_all, skipped = [], [], [], 0
    scale = model.logit_scale
    if method.region_free:
        batches = image_batches(dataset, model.preprocess, ctx.batch_size, ctx.num_workers, ctx.device, ctx.limit)
        for idx, images, labels, bad in tqdm(batches, desc="zeroshot", disable=not ctx.progress, unit="batch"):
            skipped += len(bad)
            if images is None:
                continue
            with meter.forward(len(idx)):
                feats = model.encode_image(images)
                logits = scale * feats @ classifier
            logits_all.append(logits.cpu())
            targets_all.append(labels)
            index_all.append(idx)
    else:
        n = len(dataset) if ctx.limit is None else min(ctx.limit, len(dataset))
        for start in tqdm(range(0, n, ctx.batch_size), desc="zeroshot", disable=not ctx.progress, unit="batch"):
            items = [(i, dataset.image(i), dataset.label(i)) for i in range(start, min(start + ctx.batch_size, n))]
            skipped += sum(im is None for _, im, _ in items)
            items = [it for it in items if it[1] is not None]
            if not items:
                continue
            images = [im for _, im, _ in items]
            regions = [[[prior_box(im.width, im.height, method.cfg.region)]] for im in images]
            with meter.forward(len(items)):
                feats = torch.cat(method.encode_regions(images, regions))
                logits = scale * feats @ classifier
            logits_all.append(logits.cpu())
            targets_all.append(torch.tensor([lab for _, _, lab in items]))
            index_all.append(torch.tensor([i for i, _, _ in items]))
    meter.stop()
    num_classes = len(dataset.classnames)
    if logits_all:
        logits, targets, indices = torch.cat(logits_all), torch.cat(targets_all), torch.cat(index_all)
    else:
        logits, targets, indices = torch.empty(0, num_classes), torch.empty(0, dtype=torch.long), torch.empty(0)
    preds = logits.argmax(dim=1)
    metrics = {f"top{k}": topk_accuracy(logits, targets, k) for k in cfg.topk}
    metrics["mean_per_class_recall"] = mean_per_class_recall(preds, targets, num_classes)
    recall = per_class_recall(preds, targets, num_classes)
    per_class = pd.DataFrame(
        {"class": dataset.classnames, "recall": recall.tolist(), "n": torch.bincount(targets, minlength=num_classes).tolist()}
    )
    predictions = None
    if ctx.save_predictions:
        predictions = [
            {"sample_id": int(i), "target": int(t), "pred": int(p), "scores": json.dumps([round(v, 5) for v in row])}
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
    )


TASKS.register("zeroshot", TaskSpec("zeroshot", ZeroShotConfig, evaluate))

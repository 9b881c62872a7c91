"""Referring expression comprehension: pick the proposal an expression refers to.

For every sentence the text is ``template.format(expression.lower())`` (then the method's own text
change, e.g. shade's), each proposal of the image is scored as ``logit_scale * cos(region, text)``,
the softmax over the image's proposals is taken and its argmax is the prediction. It is correct when
IoU(pred, gold) > ``iou_threshold``; with gold proposals that is ``pred_ann_id == gold_ann_id``.

Sentences are grouped by image: each image's proposals are encoded once for all its sentences, and
several images are sent to the method together until about ``batch_size`` regions are collected.

``method.subtract=true`` applies the red-circle paper's subtraction: a bank of ``bank_size``
expressions drawn (seeded) from the whole split, and score = logit(expr) - mean over the bank of
logit(box, bank expression). The scores written to predictions.csv are the logits the decision uses
(after subtraction when it is on), before any softmax; dropped (invalid) proposals are ``null``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass

import torch

from clipbench.data.loading import prefetched
from clipbench.errors import ConfigError
from clipbench.metrics.boxes import box_iou, clip_box, is_malformed
from clipbench.metrics.uncertainty import Outcome
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import TASKS, RunContext, TaskResult, TaskSpec


@dataclass
class RecConfig:
    name: str = "rec"
    template: str = "a photo of {}"
    lowercase: bool = True
    iou_threshold: float = 0.5
    bank_size: int = 500  # caption bank for method.subtract

    def validate(self) -> None:
        if self.template.count("{}") != 1:
            raise ConfigError("task.template", f"needs exactly one '{{}}', got {self.template!r}")
        if not 0 <= self.iou_threshold < 1:
            raise ConfigError("task.iou_threshold", f"must be in [0, 1), got {self.iou_threshold}")
        if self.bank_size < 1:
            raise ConfigError("task.bank_size", f"must be >= 1, got {self.bank_size}")


def subtract_bank(logits: torch.Tensor, bank_logits: torch.Tensor) -> torch.Tensor:
    """(P, S) logits minus, per proposal, the mean of its (P, B) logits against the caption bank."""
    return logits - bank_logits.mean(dim=1, keepdim=True)


def caption_bank(expressions: list[str], size: int, seed: int) -> list[str]:
    """``size`` expressions drawn without replacement (all of them when the split is smaller), seeded."""
    picked = random.Random(seed).sample(range(len(expressions)), min(size, len(expressions)))
    return [expressions[i] for i in picked]


def _limited(dataset, limit: int | None):
    """(image entry, its sentences) in dataset order, stopping after ``limit`` sentences."""
    left = limit if limit is not None else float("inf")
    for entry in dataset.images:
        if left <= 0:
            return
        sentences = entry.sentences[: int(min(left, len(entry.sentences)))]
        left -= len(sentences)
        if sentences:
            yield entry, sentences


def evaluate(model, dataset, method, cfg: RecConfig, ctx: RunContext) -> TaskResult:
    def prompt(expression: str) -> str:
        return method.text(expression.lower() if cfg.lowercase else expression, cfg.template)

    work = list(_limited(dataset, ctx.limit))
    texts = sorted({prompt(s.text) for _, sents in work for s in sents})
    row_of = {t: i for i, t in enumerate(texts)}
    text_feats = method.text_features(texts, ctx.cache_dir) if texts else None
    bank_feats = None
    if method.cfg.subtract:
        bank = caption_bank([s.text for s in dataset.sentences()], cfg.bank_size, ctx.seed)
        bank_feats = method.text_features([prompt(b) for b in bank], ctx.cache_dir)
    scale = model.logit_scale
    meter = Throughput(ctx.device)
    skips: Counter[str] = Counter()
    predictions, correct, sentence_ids, image_ids = [], [], [], []
    bar = tqdm(total=sum(len(s) for _, s in work), desc="rec", disable=not ctx.progress, unit="sent")

    def flush(batch):
        if not batch:
            return
        images = [b[1] for b in batch]
        regions = [[[box] for _, box in b[2]] for b in batch]
        with meter.forward(sum(len(b[3]) for b in batch)):  # items = sentences, as n
            feats = method.encode_regions(images, regions)
        for (entry, image, valid, sentences), f in zip(batch, feats):
            rows = torch.tensor([row_of[prompt(s.text)] for s in sentences], device=text_feats.device)
            logits = scale * f.to(text_feats.device) @ text_feats[rows].T  # (P_valid, S)
            if bank_feats is not None:
                logits = subtract_bank(logits, scale * f.to(bank_feats.device) @ bank_feats.T)
            for j, sentence in enumerate(sentences):
                judge(entry, image.size, valid, sentence, logits[:, j].cpu())
        bar.update(sum(len(b[3]) for b in batch))

    def judge(entry, size, valid, sentence, column: torch.Tensor):
        width, height = size
        if is_malformed(sentence.gold_box):
            skips["malformed gold box"] += 1
            return
        gold_box = clip_box(sentence.gold_box, width, height) or sentence.gold_box
        if dataset.gold_proposals:
            target = next((i for i, p in enumerate(entry.proposals) if p.ann_id == sentence.gold_ann_id), None)
            if target is None or all(i != target for i, _ in valid):
                skips["gold box missing or outside the image"] += 1
                return
        else:
            best_iou, best = max(((box_iou(box, gold_box), i) for i, box in valid), key=lambda t: t[0])  # first on ties
            target = best if best_iou > cfg.iou_threshold else -1
        k = int(column.argmax())  # the softmax's argmax
        pred, pred_box = valid[k]
        if dataset.gold_proposals:
            hit = entry.proposals[pred].ann_id == sentence.gold_ann_id
        else:
            hit = box_iou(pred_box, gold_box) > cfg.iou_threshold
        correct.append(hit)
        sentence_ids.append(str(sentence.sample_id))
        image_ids.append(str(entry.image_id))
        if ctx.save_predictions:
            scores: list[float | None] = [None] * len(entry.proposals)
            for (i, _), v in zip(valid, column.tolist()):
                scores[i] = round(v, 5)
            predictions.append({
                "sample_id": sentence.sample_id, "target": target, "pred": pred, "scores": json.dumps(scores),
                "correct": int(hit), "image_id": entry.image_id,
            })

    batch, n_regions = [], 0
    for (entry, sentences), image in prefetched(lambda item: dataset.image(item[0]), work, ctx.num_workers):
        if image is None:
            skips["unreadable image"] += len(sentences)
            bar.update(len(sentences))
            continue
        valid = [(i, b) for i, b in ((i, clip_box(p.box, *image.size)) for i, p in enumerate(entry.proposals)) if b is not None]
        dropped = len(entry.proposals) - len(valid)
        if dropped:
            skips["invalid box (proposal dropped, not a sentence)"] += dropped
        if not valid:
            skips["no valid proposals"] += len(sentences)
            bar.update(len(sentences))
            continue
        batch.append((entry, image, valid, sentences))
        n_regions += len(valid)
        if n_regions >= ctx.batch_size:
            flush(batch)
            batch, n_regions = [], 0
    flush(batch)
    bar.close()
    meter.stop()
    dropped_boxes = skips.get("invalid box (proposal dropped, not a sentence)", 0)
    skipped = sum(skips.values()) - dropped_boxes
    n = len(correct)
    return TaskResult(
        metrics={"accuracy": sum(correct) / n if n else float("nan")},
        n=n,
        throughput=meter,
        skipped=skipped,
        skip_reasons=dict(skips),
        predictions=predictions if ctx.save_predictions else None,
        outcomes={"accuracy": Outcome(correct, cluster=image_ids, sample_id=sentence_ids)},  # sentences of one image resample together
        extra={"split": dataset.split, "gold_proposals": dataset.gold_proposals, "dropped_proposals": dropped_boxes},
    )


TASKS.register("rec", TaskSpec("rec", RecConfig, evaluate))

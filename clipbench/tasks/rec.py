"""Referring expression comprehension: pick the proposal an expression refers to.

For every sentence the text is ``template.format(expression.lower())`` (then the method's own text
change, e.g. shade's), each proposal of the image is scored as ``logit_scale * cos(region, text)``,
the softmax over the image's proposals is taken and its argmax is the prediction (ties: a seeded choice
that ignores the proposals' order, counted in the ``tied`` row). It is correct when
IoU(pred, gold) > ``iou_threshold``; with gold proposals that is ``pred_ann_id == gold_ann_id``.

Sentences are grouped by image: each image's proposals are encoded once for all its sentences, and
several images are sent to the method together until about ``batch_size`` regions are collected.

``method.subtract=true`` applies the red-circle paper's subtraction: a bank of ``bank_size``
expressions drawn (seeded) from the whole split, and score = logit(expr) - mean over the bank of
logit(box, bank expression). The scores written to predictions.csv are the logits the decision uses
(after subtraction when it is on), before any softmax; dropped (invalid) proposals are ``null``.

For the logger (``logger.wandb.examples``) the first judged sentences are kept as examples: the expression
and the image, at most ``EXAMPLE_SIDE`` pixels a side, with the gold box drawn in green and the predicted
proposal (clipped to the image) in red.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from clipbench.config.tasks import RecConfig
from clipbench.data.loading import prefetched
from clipbench.metrics.boxes import Box, clip_box, is_malformed
from clipbench.metrics.iou import box_iou
from clipbench.metrics.uncertainty import Outcome
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import RunContext, TaskResult, only_result


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


DROPPED_PROPOSALS = "invalid box (proposal dropped, not a sentence)"


@dataclass
class ImageWork:
    """A readable image with its sentences and its ``valid`` proposals: (index in ``entry.proposals``, box
    clipped to the image), those with area left once clipped."""

    entry: Any
    image: Any
    sentences: list
    valid: list[tuple[int, Box]]


@dataclass
class Verdict:
    """One sentence: judged (``hit``, its ids and, with save_predictions, its predictions.csv row) or
    skipped for ``skip``."""

    skip: str = ""
    hit: bool = False
    pred: int = -1  # the predicted proposal's index in the image's proposals
    tied: bool = False  # several proposals shared the highest score
    sentence_id: str = ""
    image_id: str = ""
    prediction: dict | None = None


@dataclass
class Tally:
    """The judged sentences in order, and the skips by reason in the order they were met."""

    judged: list[Verdict] = field(default_factory=list)
    skips: Counter[str] = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skips[reason] += n

    @classmethod
    def merged(cls, tallies: Iterable[Tally]) -> Tally:
        """The tallies of consecutive batches as one, in order."""
        out = cls()
        for tally in tallies:
            out.judged += tally.judged
            out.examples += tally.examples
            for reason, n in tally.skips.items():
                out.skip(reason, n)
        return out

    def add(self, verdicts: Iterable[Verdict]) -> None:
        for verdict in verdicts:
            if verdict.skip:
                self.skip(verdict.skip)
            else:
                self.judged.append(verdict)


@dataclass
class SentenceScorer:
    """Each sentence's prompt and text feature; ``logits`` scores an image's proposals against its sentences."""

    method: Any
    cfg: RecConfig
    scale: float
    row_of: dict[str, int]
    text_feats: torch.Tensor | None
    bank_feats: torch.Tensor | None  # method.subtract's caption bank

    @classmethod
    def build(cls, model, dataset, method, cfg: RecConfig, ctx: RunContext, work) -> SentenceScorer:
        scorer = cls(method, cfg, model.logit_scale, {}, None, None)
        texts = sorted({scorer.prompt(s.text) for _, sentences in work for s in sentences})
        scorer.row_of = {t: i for i, t in enumerate(texts)}
        scorer.text_feats = method.text_features(texts, ctx.cache_dir) if texts else None
        if method.cfg.subtract:
            bank = caption_bank([s.text for s in dataset.sentences()], cfg.bank_size, ctx.seed)
            scorer.bank_feats = method.text_features([scorer.prompt(b) for b in bank], ctx.cache_dir)
        return scorer

    def prompt(self, expression: str) -> str:
        return self.method.text(expression.lower() if self.cfg.lowercase else expression, self.cfg.template)

    def logits(self, feats: torch.Tensor, sentences) -> torch.Tensor:
        """(P_valid, S): ``scale * cos`` of each proposal feature with each sentence (minus the bank's mean)."""
        rows = torch.tensor([self.row_of[self.prompt(s.text)] for s in sentences], device=self.text_feats.device)
        logits = self.scale * feats.to(self.text_feats.device) @ self.text_feats[rows].T
        if self.bank_feats is not None:
            logits = subtract_bank(logits, self.scale * feats.to(self.bank_feats.device) @ self.bank_feats.T)
        return logits


def evaluate(model, dataset, method, cfg: RecConfig, ctx: RunContext) -> TaskResult:
    return only_result(evaluate_many(model, dataset, [method], cfg, ctx))


def evaluate_many(model, dataset, methods, cfg: RecConfig, ctx: RunContext) -> list[TaskResult | Exception]:
    """``evaluate`` of several configs of one method in one pass over the data (each image read once, its
    proposals encoded by ``encode_together``); when there are several, a config that fails gets its exception
    and the others go on. On several ranks each evaluates its share of the batches (clipbench/distributed.py)."""
    work = list(_limited(dataset, ctx.limit))
    alone = len(methods) == 1  # its error is raised at once (on every rank, nothing is gathered)
    scorers: dict[int, SentenceScorer] = {}
    failed: dict[int, Exception] = {}
    for k, method in enumerate(methods):
        try:
            scorers[k] = SentenceScorer.build(model, dataset, method, cfg, ctx, work)
        except Exception as exc:  # noqa: BLE001  (this config fails alone)
            if alone:
                raise
            failed[k] = exc
    meter = Throughput(ctx.device)
    groups = ctx.ranks.share(_batches(work, ctx.batch_size))
    loaded = prefetched(lambda item: dataset.image(item[0]), [item for group in groups for item in group], ctx.num_workers)
    parts: list[list[Tally]] = []  # per batch, a tally per config
    kept = [0] * len(methods)  # examples kept per config in the batches before this one
    with tqdm(total=sum(len(s) for group in groups for _, s in group), desc="rec", disable=not ctx.progress, unit="sent") as bar:
        for group in groups:
            tallies = [Tally() for _ in methods]

            def skip(reason: str, n: int, tallies: list[Tally] = tallies) -> None:
                for tally in tallies:
                    tally.skip(reason, n)

            batch = list(_readable_images([next(loaded) for _ in group], skip, bar))
            live = [k for k in range(len(methods)) if k not in failed]
            if batch and live:
                n_sentences = sum(len(item.sentences) for item in batch)
                with meter.forward(n_sentences):  # items = sentences, as n
                    feats = type(methods[0]).encode_together([methods[k] for k in live], [item.image for item in batch],
                                                             [[[box] for _, box in item.valid] for item in batch],
                                                             ctx.group_memory_mb)
                for k, per_image in zip(live, feats):
                    try:
                        if isinstance(per_image, Exception):
                            raise per_image
                        for item, f in zip(batch, per_image):
                            verdicts = judge_image(item, scorers[k].logits(f, item.sentences), dataset.gold_proposals,
                                                   cfg.iou_threshold, ctx.save_predictions, ctx.seed)
                            room = ctx.examples - kept[k] - len(tallies[k].examples)
                            tallies[k].examples += examples(item, verdicts, room)
                            tallies[k].add(verdicts)
                    except Exception as exc:  # noqa: BLE001
                        if alone:
                            raise
                        failed[k] = exc
                bar.update(n_sentences)
            parts.append(tallies)
            kept = [n + len(t.examples) for n, t in zip(kept, tallies)]
    meter.stop()
    parts = ctx.ranks.gather(parts)
    results: list[TaskResult | Exception] = []
    for k in range(len(methods)):
        if k in failed:
            results.append(failed[k])
            continue
        tally = Tally.merged(p[k] for p in parts)
        del tally.examples[ctx.examples:]  # each rank kept up to the cap; the first ones in sample order stay
        results.append(_result(tally, meter, dataset, ctx.save_predictions))
    return results


def _readable_images(loaded, skip, bar) -> Iterator[ImageWork]:
    """The images of ``loaded`` ((image entry, sentences), image) that have something to judge; the sentences
    of the others are skipped (unreadable image, no valid proposal; ``skip(reason, n)``) and counted on ``bar``,
    and dropped proposals are counted."""
    for (entry, sentences), image in loaded:
        if image is None:
            skip("unreadable image", len(sentences))
            bar.update(len(sentences))
            continue
        clipped = ((i, clip_box(p.box, *image.size)) for i, p in enumerate(entry.proposals))
        valid = [(i, box) for i, box in clipped if box is not None]
        if len(valid) < len(entry.proposals):
            skip(DROPPED_PROPOSALS, len(entry.proposals) - len(valid))
        if not valid:
            skip("no valid proposals", len(sentences))
            bar.update(len(sentences))
            continue
        yield ImageWork(entry, image, sentences, valid)


def _batches(work: list, batch_size: int) -> list[list]:
    """Whole images ((image entry, sentences)), grouped until about ``batch_size`` listed proposals are
    collected: fixed by the annotations alone, so the ranks of a sharded run form the same batches."""
    batches, batch, n_regions = [], [], 0
    for item in work:
        batch.append(item)
        n_regions += len(item[0].proposals)
        if n_regions >= batch_size:
            batches.append(batch)
            batch, n_regions = [], 0
    if batch:
        batches.append(batch)
    return batches


def judge_image(item: ImageWork, logits: torch.Tensor, gold_proposals: bool, iou_threshold: float,
                save_predictions: bool, seed: int = 0) -> list[Verdict]:
    """The verdict on each sentence of one image from its (P_valid, S) logits: the prediction is the argmax
    proposal (``best_proposal``), the target the gold annotation's proposal (gold proposals) or the proposal of
    highest IoU with the gold box when that IoU passes ``iou_threshold`` (else -1)."""
    entry, valid = item.entry, item.valid
    width, height = item.image.size
    if not gold_proposals:
        gold_boxes = [clip_box(s.gold_box, width, height) or s.gold_box for s in item.sentences]
        ious = box_iou([box for _, box in valid], gold_boxes)  # (P_valid, S)
        best_of = ious.argmax(dim=0).tolist()  # per sentence, the first proposal of highest IoU
        ious = ious.tolist()
    verdicts = []
    for j, sentence in enumerate(item.sentences):
        if is_malformed(sentence.gold_box):
            verdicts.append(Verdict(skip="malformed gold box"))
            continue
        column = logits[:, j].cpu()
        k, tied = best_proposal(column, [entry.proposals[i] for i, _ in valid], f"{seed}:{sentence.sample_id}")
        pred = valid[k][0]
        if gold_proposals:
            target = next((i for i, p in enumerate(entry.proposals) if p.ann_id == sentence.gold_ann_id), None)
            if target is None or all(i != target for i, _ in valid):
                verdicts.append(Verdict(skip="gold box missing or outside the image"))
                continue
            hit = entry.proposals[pred].ann_id == sentence.gold_ann_id
        else:
            best = best_of[j]
            target = valid[best][0] if ious[best][j] > iou_threshold else -1
            hit = ious[k][j] > iou_threshold
        row = {"sample_id": sentence.sample_id, "target": target, "pred": pred, "scores": _scores(entry, valid, column),
               "correct": int(hit), "image_id": entry.image_id} if save_predictions else None
        verdicts.append(Verdict(hit=hit, tied=tied, pred=pred, sentence_id=str(sentence.sample_id),
                                image_id=str(entry.image_id), prediction=row))
    return verdicts


EXAMPLE_SIDE = 320  # pixels: the longer side of an example's image
GOLD_COLOUR, PRED_COLOUR = (0, 200, 0), (230, 0, 0)


def examples(item: ImageWork, verdicts: list[Verdict], room: int) -> list[dict]:
    """Up to ``room`` judged sentences of one image: ids, expression, hit and the image with its boxes."""
    out = []
    valid = dict(item.valid)
    for sentence, verdict in zip(item.sentences, verdicts):
        if len(out) >= room:
            break
        if verdict.skip:
            continue
        out.append({"sample_id": sentence.sample_id, "expression": sentence.text, "correct": int(verdict.hit),
                    "image": boxes_drawn(item.image, sentence.gold_box, valid[verdict.pred])})
    return out


def boxes_drawn(image, gold: Box, pred: Box, side: int = EXAMPLE_SIDE):
    """A copy of ``image``, its longer side at most ``side``, with ``gold`` in green and ``pred`` in red on top."""
    from PIL import ImageDraw

    scale = min(1.0, side / max(image.size))
    out = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(out)
    for (x0, y0, x1, y1), colour in ((gold, GOLD_COLOUR), (pred, PRED_COLOUR)):
        draw.rectangle([min(x0, x1) * scale, min(y0, y1) * scale, max(x0, x1) * scale, max(y0, y1) * scale],
                       outline=colour, width=2)
    return out


TIE_RTOL = 1e-6


def best_proposal(column: torch.Tensor, proposals: list, key: str) -> tuple[int, bool]:
    """The softmax's argmax over one sentence's proposal logits, and whether it was tied.

    Tied: within float32 noise of the best (``TIE_RTOL``; identical features can differ in the last bit once
    multiplied in one batch). Ties go to the tied proposal whose (box, annotation id) hashes lowest with
    ``key`` (run seed and sentence id): a seeded uniform choice that does not depend on the order proposals
    are listed in. "The first listed" would turn the annotation order into accuracy, and a box rule (e.g. the
    smallest) into a size prior; a uniform choice scores a tie at chance."""
    tied = torch.isclose(column, column.max(), rtol=TIE_RTOL, atol=TIE_RTOL).nonzero().flatten().tolist()
    if len(tied) == 1:
        return tied[0], False
    return min(tied, key=lambda i: _digest(f"{key}|{proposals[i].box}|{proposals[i].ann_id}")), True


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _scores(entry, valid: list[tuple[int, Box]], column: torch.Tensor) -> str:
    """The logits in the order of ``entry.proposals`` (rounded), ``null`` for the dropped ones."""
    scores: list[float | None] = [None] * len(entry.proposals)
    for (i, _), v in zip(valid, column.tolist()):
        scores[i] = round(v, 5)
    return json.dumps(scores)


def _result(tally: Tally, meter: Throughput, dataset, save_predictions: bool) -> TaskResult:
    dropped = tally.skips.get(DROPPED_PROPOSALS, 0)
    hits = [v.hit for v in tally.judged]
    n = len(hits)
    return TaskResult(
        metrics={"accuracy": sum(hits) / n if n else float("nan"),
                 "tied": float(sum(v.tied for v in tally.judged))},  # a count over the n judged sentences, like skipped
        n=n,
        throughput=meter,
        skipped=sum(tally.skips.values()) - dropped,
        skip_reasons=dict(tally.skips),
        predictions=[v.prediction for v in tally.judged] if save_predictions else None,
        outcomes={"accuracy": Outcome(hits, cluster=[v.image_id for v in tally.judged],  # an image's sentences resample together
                                      sample_id=[v.sentence_id for v in tally.judged])},
        extra={"split": dataset.split, "gold_proposals": dataset.gold_proposals, "dropped_proposals": dropped},
        examples=tally.examples,
    )

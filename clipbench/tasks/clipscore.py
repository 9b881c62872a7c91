"""CLIPScore: CLIP-S and RefCLIP-S per caption, corpus means, and agreement with human judgments.

Each distinct image and each distinct (prefixed) text is encoded once, in batches, with cached
embeddings. Protocols (chosen by the dataset): ``score`` writes per-caption scores; ``kendall``
correlates every scorer with the ratings (one row per judgment); ``pairwise`` is Pascal-50S accuracy
against the majority of 48 judgments, averaged over draws of references and tie coins.

Result rows: ``clip_s_w2.5``, ``refclip_s_w2.5`` (corpus means); per scorer
``<scorer>_kendall_tau_<b|c>`` or ``<scorer>_accuracy_<HC|HI|HM|MM|mean>``; and the plain
``kendall_tau_<b|c>`` / ``accuracy_<...>`` rows for ``task.scorer`` (default clip_s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from clipbench.config.tasks import ClipScoreConfig
from clipbench.data.captions import is_caption
from clipbench.data.clipscore_corpora import PASCAL_CATEGORIES, CaptionSet
from clipbench.errors import ConfigError
from clipbench.metrics.clipscore import (
    caption_length,
    clip_s,
    count_truncated,
    refclip_s,
    score_name,
)
from clipbench.metrics.correlation import (
    expand_judgments,
    kendall_tau,
    majority_labels,
    preference_accuracy,
    preference_credit,
)
from clipbench.metrics.uncertainty import Outcome
from clipbench.runtime import Throughput
from clipbench.tasks.base import RunContext, TaskResult
from clipbench.tasks.retrieval import ImageFiles, image_features, texts_features


@dataclass
class Encoded:
    """Cosines of every scored caption with its image and references."""

    image_ok: np.ndarray  # per caption: its image was readable
    cosine: torch.Tensor  # per caption
    ref_cosines: list[torch.Tensor]  # per caption: cosine with each of its references
    truncated: int  # distinct texts cut at the model's context length
    texts: int  # distinct texts encoded
    images_skipped: int


def _encode(model, dataset: CaptionSet, candidates: list[str], image_ids: list[str], references: list[list[str]],
            cfg: ClipScoreConfig, ctx: RunContext, meter: Throughput) -> Encoded:
    distinct_images = list(dict.fromkeys(image_ids))
    files = ImageFiles([dataset.images[i] for i in distinct_images])
    img = image_features(model, files, ["clipscore"], ctx, meter, desc="images")
    row_of_image = {k: i for i, k in enumerate(distinct_images)}
    texts = list(dict.fromkeys(cfg.prefix + t for t in [*candidates, *(r for refs in references for r in refs)]))
    txt = texts_features(model, texts, ctx, meter, desc="texts")
    row_of_text = {t: i for i, t in enumerate(texts)}
    image_rows = torch.as_tensor([row_of_image[i] for i in image_ids], dtype=torch.long)
    cand = txt[torch.as_tensor([row_of_text[cfg.prefix + c] for c in candidates], dtype=torch.long)]
    image_vecs = img[image_rows]
    ok = ~torch.isnan(image_vecs).any(dim=1)
    cosine = (image_vecs.double() * cand.double()).sum(dim=1)
    ref_cosines = []
    for i, refs in enumerate(references):
        rows = torch.as_tensor([row_of_text[cfg.prefix + r] for r in refs], dtype=torch.long)
        ref_cosines.append((txt[rows].double() @ cand[i].double()) if refs else torch.empty(0, dtype=torch.float64))
    skipped_images = int(torch.isnan(img).any(dim=1).sum()) if len(distinct_images) else 0
    return Encoded(ok.numpy(), cosine, ref_cosines, count_truncated(model.tokenizer, texts), len(texts), skipped_images)


def _scores(cosine: torch.Tensor, ref_cos: list[torch.Tensor], candidates: list[str], cfg: ClipScoreConfig) -> dict:
    """Per caption: clip_s, refclip_s (NaN without references) and length."""
    a = clip_s(cosine, cfg.weight)
    best_ref = torch.as_tensor([r.max().item() if len(r) else float("nan") for r in ref_cos], dtype=torch.float64)
    return {
        "clip_s": a.numpy(),
        "refclip_s": refclip_s(a, best_ref, cfg.ref_clamp).numpy(),
        "length": np.asarray([caption_length(c) for c in candidates], float),
    }


def _usable_scorers(cfg: ClipScoreConfig, has_refs: bool) -> list[str]:
    if cfg.scorer == "refclip_s" and not has_refs:
        raise ConfigError("task.scorer", "refclip_s needs references, and this dataset has none for some captions")
    names = [s for s in cfg.scorers if s != "refclip_s" or has_refs]
    if "refclip_s" in cfg.scorers and not has_refs:
        print("note: refclip_s is not reported: some captions have no references")
    return names


def _round(x: float) -> float:
    return round(float(x), 6)


def evaluate(model, dataset: CaptionSet, method, cfg: ClipScoreConfig, ctx: RunContext) -> TaskResult:
    if not method.region_free:
        raise ConfigError("method", f"task=clipscore scores whole images; use method=clip, not {method.cfg.name}")
    if dataset.protocol == "pairwise":
        return _evaluate_pairs(model, dataset, cfg, ctx)
    listed = dataset.items[: ctx.limit] if ctx.limit is not None else dataset.items
    items = [replace(it, references=[r for r in it.references if is_caption(r)]) for it in listed if is_caption(it.candidate)]
    empty_candidates = len(listed) - len(items)
    empty_references = sum(len(it.references) for it in listed if is_caption(it.candidate)) - sum(len(it.references) for it in items)
    meter = Throughput(ctx.device)
    candidates = [it.candidate for it in items]
    enc = _encode(model, dataset, candidates, [it.image_id for it in items], [it.references for it in items], cfg, ctx, meter)
    meter.items = ctx.ranks.share_count(len(items))  # this rank's part of the captions
    meter.stop()
    keep = np.flatnonzero(enc.image_ok)
    kept = [items[i] for i in keep]
    scores = _scores(enc.cosine[keep], [enc.ref_cosines[i] for i in keep], [it.candidate for it in kept], cfg)
    has_refs = bool(kept) and all(it.references for it in kept)
    scorers = _usable_scorers(cfg, has_refs)
    metrics: dict[str, float] = {}
    metric_n: dict[str, int] = {}
    outcomes: dict[str, Outcome] = {}
    item_ids = keep.astype(str)
    image_of = [it.image_id for it in kept]
    for s in scorers:  # corpus means: clip_s_w2.5, refclip_s_w2.5, length (words)
        metrics[score_name(s, cfg.weight)] = float(np.mean(scores[s])) if len(kept) else float("nan")
        outcomes[score_name(s, cfg.weight)] = Outcome(scores[s], cluster=image_of, sample_id=item_ids)
    n_judgments = len(kept)
    if dataset.protocol == "kendall":
        variant = dataset.tau_variant
        ratings = [it.ratings for it in kept]
        n_judgments = sum(len(r) for r in ratings)
        item_of_judgment = np.repeat(np.arange(len(kept)), [len(r) for r in ratings])  # judgments of one caption resample together
        judgment_ids = [f"{item_ids[i]}:{j}" for i, r in enumerate(ratings) for j in range(len(r))]
        for s in scorers:
            x, y = expand_judgments(scores[s], ratings)
            tau = kendall_tau(x, y, variant)
            names = [f"{score_name(s, cfg.weight)}_kendall_tau_{variant}"] + ([f"kendall_tau_{variant}"] if s == cfg.scorer else [])
            outcome = Outcome(x, f"kendall_{variant}", group=y, cluster=item_of_judgment, sample_id=judgment_ids)
            for name in names:
                metrics[name] = tau
                outcomes[name] = outcome
        metric_n.update({m: n_judgments for m in metrics if "kendall" in m})
    metrics["truncated_captions"] = float(enc.truncated)
    skip_reasons = {"missing or unreadable image": len(items) - len(kept), "empty caption": empty_candidates}
    skipped = sum(skip_reasons.values())
    skip_reasons["empty reference (dropped, not a caption)"] = empty_references
    if len(items) > len(kept):
        print(f"skipped {enc.images_skipped} missing or unreadable image(s) and their {len(items) - len(kept)} caption(s); "
              f"scores use the remaining {len(kept)}")
    predictions = None
    if dataset.protocol == "score" or ctx.save_predictions:
        predictions = []
        for j, it in enumerate(kept):
            row = {"sample_id": it.image_id}
            if dataset.protocol == "kendall":
                row.update(candidate_id=it.candidate_id, target=json.dumps(it.ratings))
            row[score_name("clip_s", cfg.weight)] = _round(scores["clip_s"][j])
            if "refclip_s" in scorers:
                row[score_name("refclip_s", cfg.weight)] = _round(scores["refclip_s"][j])
            if dataset.protocol == "kendall":
                row["length"] = int(scores["length"][j])
            predictions.append(row)
    return TaskResult(
        metrics=metrics,
        n=len(kept),
        metric_n=metric_n | {"truncated_captions": enc.texts},
        throughput=meter,
        skipped=skipped,
        skip_reasons={k: v for k, v in skip_reasons.items() if v},
        predictions=predictions,
        outcomes=outcomes,
        extra={"images_skipped": enc.images_skipped, "scorer": cfg.scorer, "ref_clamp": cfg.ref_clamp},
    )


def _evaluate_pairs(model, dataset: CaptionSet, cfg: ClipScoreConfig, ctx: RunContext) -> TaskResult:
    """Pascal-50S: does the scorer prefer the caption most judges preferred?"""
    pairs = dataset.pairs[: ctx.limit] if ctx.limit is not None else dataset.pairs
    meter = Throughput(ctx.device)
    candidates = [c for p in pairs for c in (p.caption_a, p.caption_b)]
    image_ids = [p.image_id for p in pairs for _ in range(2)]
    references = [p.references for p in pairs for _ in range(2)]
    enc = _encode(model, dataset, candidates, image_ids, references, cfg, ctx, meter)
    meter.items = ctx.ranks.share_count(len(candidates))
    meter.stop()
    keep = np.flatnonzero(enc.image_ok[0::2])
    kept = [pairs[i] for i in keep]
    scorers = _usable_scorers(cfg, bool(kept))
    rows = [2 * i + side for i in keep for side in (0, 1)]
    cos = enc.cosine[rows]
    votes_b = np.asarray([sum(p.winners) for p in kept])
    totals = np.asarray([len(p.winners) for p in kept])
    categories = np.asarray([p.category for p in kept])
    accuracy: dict[str, list[np.ndarray]] = {s: [] for s in scorers}
    credits: dict[str, list[np.ndarray]] = {s: [] for s in scorers}  # per draw, per pair
    for draw in range(dataset.draws):
        rng = np.random.default_rng([ctx.seed, draw])
        labels = majority_labels(votes_b, totals, rng)
        ref_cos = []
        for r in rows[0::2]:  # both candidates of a pair are scored against the same drawn references
            chosen = torch.as_tensor(rng.choice(len(enc.ref_cosines[r]), size=dataset.references_per_draw, replace=False))
            ref_cos += [enc.ref_cosines[r][chosen], enc.ref_cosines[r + 1][chosen]]
        scores = _scores(cos, ref_cos, [candidates[r] for r in rows], cfg)
        for s in scorers:
            a, b = scores[s][0::2], scores[s][1::2]
            credits[s].append(preference_credit(a, b, labels))
            accuracy[s].append(np.asarray([preference_accuracy(a[categories == c], b[categories == c], labels[categories == c])
                                           for c in PASCAL_CATEGORIES.values()]))
    metrics: dict[str, float] = {}
    metric_n: dict[str, int] = {}
    outcomes: dict[str, Outcome] = {}
    pair_ids = keep.astype(str)
    counts = {c: int((categories == c).sum()) for c in PASCAL_CATEGORIES.values()}
    for s in scorers:
        credit = np.mean(credits[s], axis=0) if credits[s] else np.zeros(len(kept))  # averaged over the draws
        per_category = np.mean(accuracy[s], axis=0) if accuracy[s] else np.full(4, np.nan)
        values = dict(zip(PASCAL_CATEGORIES.values(), per_category.tolist()))
        values["mean"] = float(np.nanmean(per_category)) if not np.isnan(per_category).all() else float("nan")
        for c, v in values.items():
            names = [f"{score_name(s, cfg.weight)}_accuracy_{c}"] + ([f"accuracy_{c}"] if s == cfg.scorer else [])
            for name in names:
                metrics[name] = v
                metric_n[name] = counts.get(c, len(kept))
                if c == "mean":
                    outcomes[name] = Outcome(credit, "mean_of_groups", group=categories, sample_id=pair_ids)
                elif counts[c]:
                    in_category = categories == c
                    outcomes[name] = Outcome(credit[in_category], sample_id=pair_ids[in_category])
    metrics["truncated_captions"] = float(enc.truncated)
    metric_n["truncated_captions"] = enc.texts
    skipped = len(pairs) - len(kept)
    if skipped:
        print(f"skipped {enc.images_skipped} missing or unreadable image(s) and their {skipped} pair(s)")
    predictions = None
    if ctx.save_predictions:
        first = _scores(cos, [enc.ref_cosines[r] for r in rows], [candidates[r] for r in rows], cfg)
        predictions = [
            {"sample_id": p.image_id, "target": int(votes_b[j]), "category": p.category,
             f"{score_name('clip_s', cfg.weight)}_a": _round(first["clip_s"][2 * j]),
             f"{score_name('clip_s', cfg.weight)}_b": _round(first["clip_s"][2 * j + 1]),
             f"{score_name('refclip_s', cfg.weight)}_a": _round(first["refclip_s"][2 * j]),
             f"{score_name('refclip_s', cfg.weight)}_b": _round(first["refclip_s"][2 * j + 1])}
            for j, p in enumerate(kept)
        ]
    return TaskResult(
        metrics=metrics,
        n=len(kept),
        metric_n=metric_n,
        throughput=meter,
        skipped=skipped,
        skip_reasons={"missing or unreadable image": skipped} if skipped else {},
        predictions=predictions,
        outcomes=outcomes,
        extra={"images_skipped": enc.images_skipped, "scorer": cfg.scorer, "draws": dataset.draws},
    )

"""Compositionality: image-caption selection on SugarCrepe's subsets and Winoground (clip_benchmark's
``image_caption_selection`` task), per instance, with text, image and group scores."""

from __future__ import annotations

import json

import torch
from torch.utils.data import DataLoader, Dataset

from clipbench.config.tasks import CompositionalityConfig
from clipbench.errors import ConfigError
from clipbench.metrics.caption_selection import selection_hits, selection_results
from clipbench.models.text_cache import text_features
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import RunContext, TaskResult


class _Instances(Dataset):
    """Instance i as (i, its preprocessed images (I, C, H, W) or None when one is unreadable, its captions)."""

    def __init__(self, dataset, preprocess):
        self.dataset, self.preprocess = dataset, preprocess

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        images, captions = self.dataset.instance(i)
        if images is None:
            return i, None, None
        return i, torch.stack([self.preprocess(im) for im in images]), captions


def _as_list(items):
    return items


def evaluate(model, dataset, method, cfg: CompositionalityConfig, ctx: RunContext) -> TaskResult:
    if not hasattr(dataset, "instance"):
        raise ConfigError("dataset", f"{getattr(dataset, 'name', '')!r} is not an image-caption selection set; use "
                          "dataset=sugar_crepe (dataset.name=sugar_crepe/<subset>) or dataset=winoground")
    if ctx.limit is not None:
        dataset = dataset.subset(ctx.limit)
    loader = DataLoader(_Instances(dataset, model.preprocess), batch_size=ctx.batch_size, shuffle=False,
                        num_workers=ctx.num_workers, collate_fn=_as_list)
    meter = Throughput(ctx.device)
    hits, ids, predictions, skipped, several_images = [], [], [], 0, False
    scale = model.logit_scale
    for batch in tqdm(loader, desc=dataset.name, disable=not ctx.progress, unit="batch"):
        kept = [item for item in batch if item[1] is not None]
        skipped += len(batch) - len(kept)
        if not kept:
            continue
        texts = [c for _, _, captions in kept for c in captions]
        with meter.forward(len(kept)):
            image_feats = model.encode_image(torch.cat([images for _, images, _ in kept])).cpu()
            text_feats = text_features(model, texts, ctx.cache_dir).cpu()
        first_image, first_text = 0, 0
        for i, images, captions in kept:
            scores = image_feats[first_image : first_image + len(images)] @ text_feats[first_text : first_text + len(captions)].T
            first_image, first_text = first_image + len(images), first_text + len(captions)
            several_images |= len(images) > 1
            hits.append(selection_hits(scores))
            ids.append(dataset.sample_ids[i])
            if ctx.save_predictions:
                predictions.append(_prediction(dataset.sample_ids[i], scores, scale))
    meter.stop()
    metrics, outcomes = selection_results(hits, ids, several_images)
    return TaskResult(
        metrics=metrics,
        n=len(hits),
        throughput=meter,
        skipped=skipped,
        skip_reasons={"missing or unreadable image": skipped} if skipped else {},
        predictions=predictions if ctx.save_predictions else None,
        outcomes=outcomes,
    )


def _prediction(sample_id, scores: torch.Tensor, scale: float) -> dict:
    """target: caption i for image i; pred: each image's best caption; scores: the (images x captions) logits."""
    return {"sample_id": sample_id, "target": json.dumps(list(range(min(scores.shape)))),
            "pred": json.dumps(scores.argmax(dim=1).tolist()),
            "scores": json.dumps([[round(v, 5) for v in row] for row in (scale * scores).tolist()])}


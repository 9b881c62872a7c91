"""Point-cloud zero-shot classification (PointCLIP V1 / V2): multi-view depth images through CLIP.

Per batch of clouds: project (clipbench/data/projection.py) on the model's device, resize to the model
input, encode every view (plain CLIP, or FALIP with a foveal bias on each view's foreground patches),
and keep each view's cosine to every class text feature. Logits follow PointCLIP's concatenation form:
``logit_scale / sqrt(V) * sum_v w_v * cos(view_v, text)`` (the normalised view features concatenated
and dotted with the class feature repeated V times and re-normalised); the 1/sqrt(V) factor is a
constant, so argmax and accuracy equal those of ``sum_v w_v * logit_scale * cos``.

View weights: ``uniform`` (all 1), a list of V numbers, or ``search``: uniform weights give the main
metrics and a grid search over ``search_grid``^V on a held-out subset of the TRAIN split (never the
evaluated split) gives the ``*_searched_weights`` metrics side by side.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from clipbench.config.tasks import PointCloudTaskConfig
from clipbench.data.projection import (
    PROJECTIONS,
    depth_to_images,
    foreground,
    patch_foreground,
)
from clipbench.data.templates import resolve_templates
from clipbench.errors import ConfigError
from clipbench.metrics.classification import (
    classification_outcomes,
    mean_per_class_recall,
    per_class_recall,
    reported_topk,
    topk_accuracy,
)
from clipbench.models.text_cache import zero_shot_classifier
from clipbench.progress import tqdm
from clipbench.runtime import Throughput, synchronize
from clipbench.tasks.base import RunContext, TaskResult

SEARCH_CHUNK = 256  # weight combinations scored at once


# ---------------------------------------------------------------- images and features


@dataclass
class ViewEncoder:
    """Clouds -> per-view features: projection, resize to the model input, optional mean/std, the method's encoder."""

    cfg: PointCloudTaskConfig
    model: Any
    method: Any
    projection_seconds: float = 0.0

    def __post_init__(self) -> None:
        spec = PROJECTIONS[self.cfg.projection]
        self.views = self.cfg.view_angles()
        self.kwargs: dict[str, Any] = {"resolution": self.cfg.resolution or spec.resolution, "views": self.views}
        if self.cfg.projection == "pointclip_v2":
            self.kwargs["tilts"] = self.cfg.view_tilts()
        self.project = spec.project
        self.image_size = self.model.geometry.image_size
        self.mean_std = model_mean_std(self.model) if self.cfg.normalize else None
        self.falip = getattr(self.method.cfg, "name", "") == "falip"
        if not (self.method.region_free or self.falip):
            raise ConfigError("method", f"task=pointcloud supports method=clip and method=falip, not {self.method.cfg.name!r}")

    @property
    def num_views(self) -> int:
        return len(self.views)

    def __call__(self, clouds: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, V, D) L2-normalised view features."""
        device = self.model.device
        synchronize(device)
        t0 = time.perf_counter()
        maps = self.project(clouds.to(device), **self.kwargs)
        images = depth_to_images(maps, self.image_size, self.mean_std)
        synchronize(device)
        self.projection_seconds += time.perf_counter() - t0
        if self.falip:
            feats = self._encode_falip(images, foreground(maps, self.cfg.projection).flatten(0, 1))
        else:
            feats = self.model.encode_image(images)
        return feats.view(clouds.shape[0], self.num_views, -1)

    def _encode_falip(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        cfg, grid = self.method.cfg, self.method.grid
        shares = patch_foreground(masks, grid.image_size, grid.grid_size)
        weights = foreground_patch_weights(shares > 0, cfg.alpha, cfg.sigma, cfg.shape)
        return self.method.encode_with_weights(images, weights)


def foreground_patch_weights(patches: torch.Tensor, alpha: float, sigma: float, shape: str) -> torch.Tensor:
    """(M, g, g) foreground patches -> FALIP patch weights per view.

    FALIP's region weights (methods/foveal_bias.region_weights) over the bounding patch box of the
    view's foreground, kept on the foreground patches only; a view with no foreground gets no bias.
    """
    from clipbench.methods.foveal_bias import region_weights

    out = torch.zeros(patches.shape, dtype=torch.float32)
    for i, mask in enumerate(patches.cpu()):
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        if len(rows) == 0:
            continue
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        out[i, r0 : r1 + 1, c0 : c1 + 1] = region_weights(r1 - r0 + 1, c1 - c0 + 1, alpha, sigma, shape)
        out[i] *= mask
    return out


def model_mean_std(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std of the model's own preprocessing (open_clip's Normalize)."""
    for t in getattr(model.preprocess, "transforms", []):
        if hasattr(t, "mean") and hasattr(t, "std"):
            return tuple(float(m) for m in t.mean), tuple(float(s) for s in t.std)
    visual = model.model.visual
    if getattr(visual, "image_mean", None) is not None:  # e.g. a Hugging Face processor's
        return tuple(visual.image_mean), tuple(visual.image_std)
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


NON_FINITE = "non-finite features (extreme coordinates)"


@dataclass
class EncodedSplit:
    """Per-view cosines (N, V, C) of the usable clouds, their labels and indices, and what was skipped."""

    cosines: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    skip_reasons: dict[str, int]
    padded: int

    @property
    def skipped(self) -> int:
        return sum(self.skip_reasons.values())


def encode_split(dataset, indices, encoder: ViewEncoder, classifier: torch.Tensor, ctx: RunContext,
                 meter: Throughput | None, desc: str) -> EncodedSplit:
    """Encode the clouds ``indices`` of ``dataset`` in batches of ``batch_size // V`` clouds (>= 1), this
    rank's share of the batches, gathered back in order."""
    per_batch = max(1, ctx.batch_size // encoder.num_views)
    batches = ctx.ranks.share([indices[start : start + per_batch] for start in range(0, len(indices), per_batch)])
    parts = [_encode_batch(dataset, batch, encoder, classifier, meter)
             for batch in tqdm(batches, desc=desc, disable=not ctx.progress, unit="batch")]
    parts = ctx.ranks.gather(parts)
    reasons: dict[str, int] = {}
    for part in parts:
        for note, count in part.skip_reasons.items():
            reasons[note] = reasons.get(note, 0) + count
    padded = sum(part.padded for part in parts)
    parts = [part for part in parts if len(part.targets)]
    if not parts:
        empty = torch.empty(0, encoder.num_views, classifier.shape[1])
        return EncodedSplit(empty, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), reasons, padded)
    return EncodedSplit(torch.cat([p.cosines for p in parts]), torch.cat([p.targets for p in parts]),
                        torch.cat([p.indices for p in parts]), reasons, padded)


def _encode_batch(dataset, batch, encoder: ViewEncoder, classifier: torch.Tensor, meter: Throughput | None) -> EncodedSplit:
    """One batch of clouds: the cosines of the usable ones, and what was skipped."""
    clouds, labels, ids = [], [], []
    reasons: dict[str, int] = {}
    padded = 0
    for i in batch:
        cloud, note = dataset.cloud(int(i))
        if cloud is None:
            reasons[note] = reasons.get(note, 0) + 1
            continue
        padded += note == "padded"
        clouds.append(cloud)
        labels.append(dataset.label(int(i)))
        ids.append(int(i))
    if not clouds:
        return EncodedSplit(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), reasons, padded)
    batch_clouds = torch.from_numpy(np.stack(clouds))
    if meter is not None:
        with meter.forward(len(clouds)):
            feats = encoder(batch_clouds)
    else:
        feats = encoder(batch_clouds)
    cos = (feats @ classifier).float().cpu()
    finite = torch.isfinite(cos).flatten(1).all(dim=1)  # extreme coordinates overflow in the projection
    if not finite.all():
        reasons[NON_FINITE] = reasons.get(NON_FINITE, 0) + int((~finite).sum())
    return EncodedSplit(cos[finite], torch.tensor(labels)[finite], torch.tensor(ids)[finite], reasons, padded)


# ---------------------------------------------------------------- scoring and weight search


def view_logits(cosines: torch.Tensor, weights: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """PointCLIP's logits: logit_scale / sqrt(V) * sum_v w_v cos_v; (N, V, C) -> (N, C)."""
    weights = weights.to(cosines.dtype)
    return logit_scale / math.sqrt(cosines.shape[1]) * torch.einsum("v,nvc->nc", weights, cosines)


def _accuracy_of(combos: torch.Tensor, cosines: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of each weight vector in ``combos`` (K, V)."""
    scores = torch.einsum("kv,nvc->knc", combos.to(cosines.dtype), cosines)
    return (scores.argmax(dim=2) == targets[None]).float().mean(dim=1)


def search_view_weights(
    cosines: torch.Tensor, targets: torch.Tensor, grid: list[float], max_combinations: int = 65536
) -> tuple[list[float], float, str]:
    """Best top-1 weights over grid^V: (weights, accuracy, mode).

    Exhaustive when len(grid)^V <= max_combinations; ties go to the first best combination in
    itertools.product order over the grid sorted high to low (so uniform max(grid) wins a tie);
    otherwise coordinate ascent over the same grid from uniform max(grid) weights, one view at a time,
    until no single change improves accuracy.
    """
    n_views = cosines.shape[1]
    if len(targets) == 0:
        return [1.0] * n_views, float("nan"), "none"
    if len(grid) ** n_views <= max_combinations:
        best_acc, best = -1.0, None
        combos = itertools.product(sorted(grid, reverse=True), repeat=n_views)
        while chunk := list(itertools.islice(combos, SEARCH_CHUNK)):
            acc = _accuracy_of(torch.tensor(chunk), cosines, targets)
            top = int(acc.argmax())
            if acc[top].item() > best_acc:
                best_acc, best = acc[top].item(), list(chunk[top])
        return [float(w) for w in best], best_acc, "exhaustive"
    current = [max(grid)] * n_views
    best_acc = _accuracy_of(torch.tensor([current]), cosines, targets).item()
    improved = True
    while improved:
        improved = False
        for v in range(n_views):
            trials = [current[:v] + [g] + current[v + 1 :] for g in grid]
            acc = _accuracy_of(torch.tensor(trials), cosines, targets)
            top = int(acc.argmax())
            if acc[top].item() > best_acc:
                best_acc, current, improved = acc[top].item(), trials[top], True
    return [float(w) for w in current], best_acc, "coordinate_ascent"


def _classification_metrics(logits: torch.Tensor, targets: torch.Tensor, topk: list[int], suffix: str = "") -> dict[str, float]:
    return {f"top{k}{suffix}": topk_accuracy(logits, targets, k) for k in reported_topk(topk, logits.shape[1])}


def _search_subset(size: int, samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(size, size=min(samples, size), replace=False))


# ---------------------------------------------------------------- the task


def evaluate(model, dataset, method, cfg: PointCloudTaskConfig, ctx: RunContext) -> TaskResult:
    encoder = ViewEncoder(cfg, model, method)
    classnames = [c.replace("_", " ") for c in dataset.classnames]
    classifier = zero_shot_classifier(model, classnames, resolve_templates(cfg.templates), ctx.cache_dir)
    n_views = encoder.num_views
    meter = Throughput(ctx.device)
    n = len(dataset) if ctx.limit is None else min(ctx.limit, len(dataset))
    test = encode_split(dataset, np.arange(n), encoder, classifier, ctx, meter, f"pointcloud {cfg.projection}")
    meter.stop()
    scale = model.logit_scale
    num_classes = len(classnames)

    fixed = [1.0] * n_views if isinstance(cfg.view_weights, str) else [float(w) for w in cfg.view_weights]
    logits = view_logits(test.cosines, torch.tensor(fixed), scale)
    preds = logits.argmax(dim=1) if len(logits) else torch.empty(0, dtype=torch.long)
    metrics = _classification_metrics(logits, test.targets, cfg.topk)
    metrics["mean_per_class_recall"] = mean_per_class_recall(preds, test.targets, num_classes)
    ids = test.indices.tolist()
    outcomes = classification_outcomes(logits, test.targets, cfg.topk, ids)
    extra: dict[str, Any] = {
        "projection": cfg.projection, "num_views": n_views, "view_weights": fixed, "padded_clouds": test.padded,
        "projection_seconds": encoder.projection_seconds,
        "logits": "logit_scale / sqrt(V) * sum_v w_v cos(view_v, text)",
    }

    if cfg.view_weights == "search":
        train = dataset.other_split(cfg.search_split)
        subset = _search_subset(len(train), cfg.search_samples, ctx.seed)
        held_out = encode_split(train, subset, encoder, classifier, ctx, None, "view-weight search")
        searched, search_acc, mode = search_view_weights(
            held_out.cosines, held_out.targets, list(cfg.search_grid), cfg.search_max_combinations
        )
        searched_logits = view_logits(test.cosines, torch.tensor(searched), scale)
        metrics |= _classification_metrics(searched_logits, test.targets, cfg.topk, "_searched_weights")
        searched_outcomes = classification_outcomes(searched_logits, test.targets, cfg.topk, ids, "_searched_weights")
        outcomes |= {m: o for m, o in searched_outcomes.items() if m in metrics}
        extra["searched_view_weights"] = searched
        extra["view_weight_search"] = {
            "split": cfg.search_split, "n": len(held_out.targets), "skipped": held_out.skipped,
            "top1": search_acc, "mode": mode, "grid": list(cfg.search_grid),
        }

    per_view = pd.DataFrame({
        "view": list(range(n_views)),
        "angles": [json.dumps([round(a, 6) for a in v]) for v in encoder.views],
        "top1": [topk_accuracy(test.cosines[:, v], test.targets, 1) for v in range(n_views)],
    })
    recall = per_class_recall(preds, test.targets, num_classes)
    per_class = pd.DataFrame(
        {"class": classnames, "recall": recall.tolist(), "n": torch.bincount(test.targets, minlength=num_classes).tolist()}
    )
    predictions = None
    if ctx.save_predictions:
        predictions = [
            {"sample_id": int(i), "target": int(t), "pred": int(p), "scores": json.dumps([round(v, 5) for v in row])}
            for i, t, p, row in zip(test.indices.tolist(), test.targets.tolist(), preds.tolist(), logits.tolist())
        ]
    return TaskResult(
        metrics=metrics,
        n=len(test.targets),
        throughput=meter,
        skipped=test.skipped,
        skip_reasons=test.skip_reasons,
        predictions=predictions,
        tables={"per_view_accuracy": per_view, "per_class_accuracy": per_class},
        outcomes=outcomes,
        extra=extra,
    )

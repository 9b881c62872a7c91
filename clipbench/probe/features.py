"""Image features of one split, computed once and cached in memory and under ``cache_dir/features`` (a
safetensors file), keyed by everything they depend on: the weights (their fingerprint and the architecture's
model JSON), the precision, the dataset config with its split and the fingerprint of its files, the
preprocessing, ``normalize`` and the samples in their order."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from clipbench.data.loading import image_batches
from clipbench.progress import tqdm
from clipbench.runtime import Throughput

log = logging.getLogger(__name__)
_MEMORY: dict[str, SplitFeatures] = {}
MEMORY_SPLITS = 3  # train, validation and test of the latest run stay in memory


@dataclass
class SplitFeatures:
    features: torch.Tensor  # (N, D) float32, the readable samples in dataset order
    targets: torch.Tensor  # (N,) int64
    indices: torch.Tensor  # (N,) the dataset index of each row
    skipped: int = 0  # unreadable images


def stable_repr(transform) -> str:
    """The preprocessing as text, without the memory addresses of functions in it (``<function f at 0x..>``)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def feature_key(model, dataset_params: dict, data_fingerprint: str, normalize: bool, n: int) -> str:
    from clipbench.models.factory import arch_digest

    payload = {
        "weights": model.fingerprint, "precision": model.precision, "source": model.source,
        "architecture": arch_digest(model.arch) if model.source == "open_clip" else model.arch,
        "dataset": dataset_params, "data": data_fingerprint, "preprocess": stable_repr(model.preprocess),
        "normalize": normalize, "samples": n,  # the first n samples, in the dataset's order
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _cache_file(cache_dir: str | None, model, key: str) -> Path | None:
    if not cache_dir or "random-init" in model.fingerprint:  # random weights are never shared between runs
        return None
    return Path(cache_dir) / "features" / f"{key}.safetensors"


def _load(path: Path | None) -> SplitFeatures | None:
    if path is None or not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        data = load_file(str(path))
        features, targets, indices = data["features"], data["targets"], data["indices"]
        skipped = int(data["skipped"])
    except Exception:  # a truncated or foreign file is recomputed
        log.warning("ignoring unreadable feature cache %s; recomputing", path)
        return None
    if features.dim() != 2 or not len(features) == len(targets) == len(indices) or not torch.isfinite(features).all():
        log.warning("ignoring malformed feature cache %s; recomputing", path)
        return None
    return SplitFeatures(features, targets, indices, skipped)


def _save(path: Path, value: SplitFeatures) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{id(value)}")
    save_file({"features": value.features.contiguous(), "targets": value.targets, "indices": value.indices,
               "skipped": torch.tensor(value.skipped)}, str(tmp))
    tmp.replace(path)


def extract(model, dataset, normalize: bool, ctx, meter: Throughput, desc: str) -> SplitFeatures:
    """One pass over ``dataset`` (the first ``ctx.limit`` samples), as the zero-shot pass reads it."""
    feats, targets, indices, skipped = [], [], [], 0
    batches = image_batches(dataset, model.preprocess, ctx.batch_size, ctx.num_workers, ctx.device, ctx.limit)
    for idx, images, labels, bad in tqdm(batches, desc=desc, disable=not ctx.progress, unit="batch"):
        skipped += len(bad)
        if images is None:
            continue
        with meter.forward(len(idx)):
            feats.append(model.encode_image(images, normalize=normalize).cpu())
        targets.append(labels)
        indices.append(idx)
    if not feats:
        return SplitFeatures(torch.empty(0, 0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped)
    return SplitFeatures(torch.cat(feats).float(), torch.cat(targets).long(), torch.cat(indices).long(), skipped)


def split_features(model, dataset, dataset_params: dict, data_fingerprint: str, normalize: bool, ctx,
                   meter: Throughput, desc: str) -> tuple[SplitFeatures, bool]:
    """(features, whether they came from the cache)."""
    n = len(dataset) if ctx.limit is None else min(ctx.limit, len(dataset))
    key = feature_key(model, dataset_params, data_fingerprint, normalize, n)
    if key in _MEMORY:
        return _MEMORY[key], True
    path = _cache_file(ctx.cache_dir, model, key)
    value = _load(path)
    hit = value is not None
    if value is None:
        value = extract(model, dataset, normalize, ctx, meter, desc)
        if path is not None and len(value.targets):
            _save(path, value)
    _MEMORY[key] = value
    while len(_MEMORY) > MEMORY_SPLITS:
        _MEMORY.pop(next(iter(_MEMORY)))
    return value, hit

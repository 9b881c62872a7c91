"""Cached embeddings (texts, and image galleries via ``cached(..., subdir="images")``), keyed by model
fingerprint and the exact inputs, in memory and on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
_MEMORY: dict[str, torch.Tensor] = {}


def _key(fingerprint: str, payload) -> str:
    return hashlib.sha256(json.dumps([fingerprint, payload], sort_keys=True).encode()).hexdigest()[:24]


def has_shape(value, shape: Sequence[int | None] | None) -> bool:
    """A floating tensor whose dims match ``shape`` (None matches any size); any tensor when shape is None."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return False
    if shape is None:
        return True
    return value.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, value.shape))


def embed_dim(model) -> int | None:
    """The model's embedding width where its vision tower states it."""
    dim = getattr(getattr(getattr(model, "model", None), "visual", None), "output_dim", None)
    return dim if isinstance(dim, int) else None


def cached(
    model, kind: str, payload, compute, cache_dir: str | None, subdir: str = "text",
    shape: Sequence[int | None] | None = None, finite: bool = False, agree: Callable[[bool], bool] = bool,
) -> torch.Tensor:
    """``compute()`` once per (model, payload); later calls load it from memory or ``cache_dir/subdir``.

    A cache file that cannot be read, holds a tensor of another ``shape`` or (with ``finite``; image
    galleries mark unreadable images with NaN rows) NaN or inf, is recomputed. ``agree`` turns this
    process's "found" into the decision of every rank (``Ranks.all_true``) when ``compute`` is sharded:
    either all ranks compute or none does."""
    key = f"{kind}-{_key(model.fingerprint + '|' + model.precision, payload)}"
    value = _lookup(key, model, cache_dir, subdir, shape, finite)
    if agree(value is not None):
        return value.to(model.device)
    value = compute().cpu()
    _MEMORY[key] = value
    path = _cache_path(key, model, cache_dir, subdir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}-{id(value)}")
        torch.save(value, tmp)
        tmp.replace(path)
    return value.to(model.device)


def _cache_path(key: str, model, cache_dir: str | None, subdir: str) -> Path | None:
    return Path(cache_dir) / subdir / f"{key}.pt" if cache_dir and "random-init" not in model.fingerprint else None


def _lookup(key: str, model, cache_dir: str | None, subdir: str, shape, finite: bool) -> torch.Tensor | None:
    """The cached value from memory or disk; None when absent, unreadable or not of ``shape`` (and finite)."""
    if key in _MEMORY:
        return _MEMORY[key]
    path = _cache_path(key, model, cache_dir, subdir)
    if path is not None and path.is_file():
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated cache file is recomputed
            value = None
        if has_shape(value, shape) and (not finite or bool(torch.isfinite(value).all())):
            _MEMORY[key] = value
            return value
        log.warning("ignoring unreadable, wrong-shape or non-finite cache file %s; recomputing", path)
    return None


def zero_shot_classifier(model, classnames: Sequence[str], templates: Sequence[str], cache_dir: str | None = None) -> torch.Tensor:
    """(D, C): each class is the normalised mean of its normalised template embeddings."""

    def compute() -> torch.Tensor:
        texts = [t.format(c) for c in classnames for t in templates]
        feats = model.encode_text(texts).view(len(classnames), len(templates), -1)
        return F.normalize(feats.mean(dim=1), dim=-1).T.contiguous()

    return cached(model, "classifier", [list(classnames), list(templates)], compute, cache_dir,
                  shape=(embed_dim(model), len(classnames)), finite=True)


def text_features(model, texts: Sequence[str], cache_dir: str | None = None) -> torch.Tensor:
    """(N, D) normalised embeddings of ``texts``."""
    return cached(model, "texts", list(texts), lambda: model.encode_text(list(texts)), cache_dir,
                  shape=(len(texts), embed_dim(model)), finite=True)

"""Batched, worker-parallel image loading that counts unreadable samples instead of failing, and
thread-prefetched loading for tasks that walk their own items (REC images, region samples)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from clipbench.distributed import SINGLE, Ranks, index_batches


class _Preprocessed(Dataset):
    def __init__(self, source, indices: list[int], transform: Callable):
        self.source, self.indices, self.transform = source, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        image, label = read_sample(self.source, index)
        return index, None if image is None else self.transform(image), label


def read_sample(source, index: int):
    """(image or None, label); sources that decode both at once (``sample``) are read once."""
    if hasattr(source, "sample"):
        return source.sample(index)
    return source.image(index), source.label(index)


def _labels(labels) -> torch.Tensor:
    """Integer labels (N,), or 0/1 label vectors (N, C) for multi-label datasets."""
    return torch.stack([torch.as_tensor(x) for x in labels]) if labels else torch.empty(0, dtype=torch.long)


def _collate(items):
    kept = [it for it in items if it[1] is not None]
    skipped = [it[0] for it in items if it[1] is None]
    if not kept:
        return torch.empty(0, dtype=torch.long), None, torch.empty(0, dtype=torch.long), skipped
    idx = torch.tensor([it[0] for it in kept])
    images = torch.stack([it[1] for it in kept])
    return idx, images, _labels([it[2] for it in kept]), skipped


def rank_batches(n: int, batch_size: int, ranks: Ranks) -> list[list[int]]:
    """This rank's share of the index batches one process would read (all of them for one process)."""
    return [list(b) for b in ranks.share(index_batches(n, batch_size))]


def image_batches(source, transform: Callable, batch_size: int, num_workers: int, device: torch.device,
                  limit: int | None = None, ranks: Ranks = SINGLE):
    """Yields (indices, images, labels, skipped_indices) over ``source`` (image(i)/label(i)/len): this
    rank's share of the batches."""
    n = len(source) if limit is None else min(limit, len(source))
    ds = _Preprocessed(source, list(range(n)), transform)
    return DataLoader(
        ds,
        batch_sampler=rank_batches(n, batch_size, ranks),
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


class _Raw(Dataset):
    def __init__(self, source, n: int):
        self.source, self.n = source, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return (index, *read_sample(self.source, index))


def _raw_collate(items):
    kept = [it for it in items if it[1] is not None]
    skipped = [it[0] for it in items if it[1] is None]
    idx = torch.tensor([it[0] for it in kept], dtype=torch.long)
    return idx, [it[1] for it in kept], _labels([it[2] for it in kept]), skipped


def pil_batches(source, batch_size: int, num_workers: int, limit: int | None = None, ranks: Ranks = SINGLE):
    """Yields (indices, PIL images, labels, skipped_indices), decoded by DataLoader workers, for methods
    that need the original image (regions, prompts drawn on it): this rank's share of the batches."""
    n = len(source) if limit is None else min(limit, len(source))
    return DataLoader(_Raw(source, n), batch_sampler=rank_batches(n, batch_size, ranks), num_workers=num_workers,
                      collate_fn=_raw_collate)


def prefetched(load: Callable, items: Iterable, workers: int) -> Iterator[tuple[Any, Any]]:
    """(item, load(item)) in order; with workers > 0 up to 2 x workers loads run ahead on threads."""
    if workers <= 0:
        for item in items:
            yield item, load(item)
        return
    source = iter(items)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque((item, pool.submit(load, item)) for item in islice(source, 2 * workers))
        while pending:
            item, future = pending.popleft()
            for following in islice(source, 1):
                pending.append((following, pool.submit(load, following)))
            yield item, future.result()

"""Which train samples a probe fits on: a seeded validation share and a seeded shot subset, each from its own
``torch.Generator`` (never the global RNG, which model initialisation consumes; never the test split)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import random_split

from clipbench.errors import DataError


def seeded_generator(seed: int, purpose: int = 0) -> torch.Generator:
    """Purpose 0 (the shot subset) is seeded with ``seed`` itself, so its first ``randperm`` equals clip_benchmark's
    ``torch.randperm`` right after ``torch.manual_seed(seed)``; other purposes get seeds derived from (seed, purpose)."""
    derived = seed if purpose == 0 else int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])
    return torch.Generator().manual_seed(derived)


VALIDATION = 1


def validation_split(n: int, proportion: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): clip_benchmark's ``random_split(train, [1 - p, p])`` with a seeded
    generator of its own."""
    train, val = random_split(range(n), [1 - proportion, proportion], generator=seeded_generator(seed, VALIDATION))
    return list(train.indices), list(val.indices)


def shot_subset(targets: torch.Tensor, k: int, seed: int) -> list[int]:
    """clip_benchmark's few-shot draw: walk a random permutation and keep each class's first ``k`` samples
    (``k`` = -1: every sample, still in the permutation's order). A class with fewer than ``k`` is an error."""
    counts: dict[int, int] = {}
    keep = []
    for p in torch.randperm(len(targets), generator=seeded_generator(seed)).tolist():
        label = int(targets[p])
        counts.setdefault(label, 0)
        if k < 0 or counts[label] < k:
            counts[label] += 1
            keep.append(p)
    short = {c: n for c, n in counts.items() if k > 0 and n != k}
    if short:
        first = min(short)
        raise DataError(f"task.fewshot_k={k}: {len(short)} class(es) have fewer train samples (class {first}: "
                        f"{short[first]}); lower fewshot_k")
    return keep

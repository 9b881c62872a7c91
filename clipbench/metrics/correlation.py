"""Agreement with human judgments: Kendall tau (scipy) and pairwise-preference accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau


def kendall_tau(scores: Sequence[float], ratings: Sequence[float], variant: str = "c") -> float:
    """scipy's Kendall tau-b or tau-c between metric scores and human ratings."""
    if variant not in ("b", "c"):
        raise ValueError(f"variant must be 'b' or 'c', got {variant!r}")
    if len(scores) < 2:
        return float("nan")
    return float(kendalltau(np.asarray(scores, float), np.asarray(ratings, float), variant=variant).statistic)


def expand_judgments(scores: Sequence[float], ratings: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """One row per human judgment: each score repeated once per rating it received."""
    counts = [len(r) for r in ratings]
    x = np.repeat(np.asarray(scores, float), counts)
    y = np.asarray([v for r in ratings for v in r], float)
    return x, y


def majority_labels(votes_b: Sequence[int], totals: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """1 where most judges preferred caption B, 0 for A; an exact tie is a fair coin from ``rng``."""
    votes_b, totals = np.asarray(votes_b), np.asarray(totals)
    votes_a = totals - votes_b
    coin = rng.integers(0, 2, size=len(votes_b))
    return np.where(votes_b > votes_a, 1, np.where(votes_b < votes_a, 0, coin))


def preference_credit(score_a: Sequence[float], score_b: Sequence[float], labels: Sequence[int]) -> np.ndarray:
    """Per pair: 1 when the metric prefers the caption humans preferred, 0 when not, 1/2 on a metric tie."""
    a, b, lab = np.asarray(score_a, float), np.asarray(score_b, float), np.asarray(labels)
    return np.where(a == b, 0.5, ((b > a).astype(int) == lab).astype(float))


def preference_accuracy(score_a: Sequence[float], score_b: Sequence[float], labels: Sequence[int]) -> float:
    """Share of pairs where the metric prefers the caption humans preferred; a metric tie counts 1/2."""
    if len(labels) == 0:
        return float("nan")
    return float(preference_credit(score_a, score_b, labels).mean())

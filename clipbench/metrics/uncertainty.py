"""Per-sample outcomes and what they say about uncertainty.

An ``Outcome`` holds what one metric is computed from, one entry per sample, and the statistic that
turns it into the metric. From it come a seeded percentile-bootstrap interval (scipy's ``bootstrap``,
vectorised; resampling clusters, e.g. the sentences of one image, as whole units) and paired tests
between two runs on the same samples (McNemar's exact test for hit/miss outcomes, a paired bootstrap
of the difference otherwise), with Holm's correction across a table.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, bootstrap, kendalltau

STATISTICS = ("mean", "mean_of_groups", "kendall_b", "kendall_c")
OUTCOMES_FILE = "outcomes.npz"
_FIELDS = ("values", "group", "cluster", "sample_id")
_MAX_BATCH_ELEMENTS = 4_000_000  # resamples x clusters held in memory at once
_PAIRWISE_MAX_SAMPLES = 3000  # Kendall tau by pairwise quadratic forms up to this size, else per resample


@dataclass
class Outcome:
    """One metric's per-sample data: the metric is ``statistic`` applied to ``values``.

    * ``mean``: the mean of ``values`` (a 0/1 hit, a score, a credit).
    * ``mean_of_groups``: the mean over the groups present of each group's mean (mean per-class recall).
    * ``kendall_b`` / ``kendall_c``: Kendall's tau between ``values`` (scores) and ``group`` (human ratings).

    Samples with the same ``cluster`` are resampled together; ``sample_id`` pairs two runs' samples.
    """

    values: np.ndarray
    statistic: str = "mean"
    group: np.ndarray | None = None
    cluster: np.ndarray | None = None
    sample_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=float)
        n = len(self.values)
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.statistic != "mean" and self.group is None:
            raise ValueError(f"statistic {self.statistic!r} needs a group per sample")
        for name in ("group", "cluster", "sample_id"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value)
                if len(value) != n:
                    raise ValueError(f"{name} has {len(value)} entries for {n} samples")
                setattr(self, name, value)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def binary(self) -> bool:
        return self.statistic == "mean" and bool(np.isin(self.values, (0.0, 1.0)).all())

    def point(self) -> float:
        stat = _cluster_statistic(self, np.arange(len(self)), len(self))
        return float(stat(np.arange(len(self))[None, :])[0]) if len(self) else float("nan")

    def subset(self, index: np.ndarray) -> Outcome:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Outcome(self.values[index], self.statistic, pick(self.group), pick(self.cluster), pick(self.sample_id))


def _clusters(outcome: Outcome) -> tuple[np.ndarray, int]:
    """Per sample, its cluster's index in 0..K-1 (every sample its own cluster when none are given)."""
    if outcome.cluster is None:
        return np.arange(len(outcome)), len(outcome)
    _, codes = np.unique(outcome.cluster, return_inverse=True)
    return codes.ravel(), int(codes.max()) + 1 if len(codes) else 0


def _cluster_statistic(outcome: Outcome, codes: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """The metric as a function of resampled cluster indices (B, K) -> (B,)."""
    values = outcome.values
    if outcome.statistic == "mean":
        sums = np.bincount(codes, weights=values, minlength=k)
        counts = np.bincount(codes, minlength=k).astype(float)
        return lambda idx: sums[idx].sum(axis=-1) / counts[idx].sum(axis=-1)
    members = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def samples(row: np.ndarray) -> np.ndarray:
        lengths = counts[row]
        offsets = np.repeat(starts[row] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return members[offsets + np.arange(lengths.sum())]

    if outcome.statistic == "mean_of_groups":
        _, groups = np.unique(outcome.group, return_inverse=True)
        groups = groups.ravel()
        n_groups = int(groups.max()) + 1 if len(groups) else 0

        def of_groups(idx: np.ndarray) -> np.ndarray:
            idx = np.atleast_2d(idx)
            if outcome.cluster is not None:  # expand each row's clusters to their samples
                idx = [samples(row) for row in idx]
            out = np.empty(len(idx))
            for b, s in enumerate(idx):
                hits = np.bincount(groups[s], weights=values[s], minlength=n_groups)
                seen = np.bincount(groups[s], minlength=n_groups)
                out[b] = (hits[seen > 0] / seen[seen > 0]).mean()
            return out

        return of_groups
    variant = outcome.statistic[-1]
    ratings = np.asarray(outcome.group, dtype=float)
    if len(values) <= _PAIRWISE_MAX_SAMPLES:
        return _pairwise_tau(values, ratings, codes, k, variant)

    def tau(idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)
        out = np.empty(len(idx))
        for b, row in enumerate(idx):
            s = samples(row)
            out[b] = kendalltau(values[s], ratings[s], variant=variant).statistic
        return out

    return tau


def _pairwise_tau(x: np.ndarray, y: np.ndarray, codes: np.ndarray, k: int, variant: str) -> Callable[[np.ndarray], np.ndarray]:
    """Kendall tau of resampled clusters as quadratic forms in the clusters' multiplicities w.

    Copies of two samples i != j form w_a * w_b pairs (a, b their clusters), so concordant minus
    discordant pairs is w'Aw / 2 with A[a, b] = sum of sign(dx) sign(dy) over members of a and b; the
    pairs untied in x (in y) are w'Tw / 2 likewise. Equal to scipy's tau-b / tau-c on the resample.
    """
    order = np.argsort(codes, kind="stable")
    x, y, codes = x[order], y[order], codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])

    def by_cluster(pairs: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(pairs, starts, axis=0), starts, axis=1)

    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    concord, untied_x, untied_y = by_cluster(sx * sy), by_cluster(np.abs(sx)), by_cluster(np.abs(sy))
    sizes = np.bincount(codes, minlength=k).astype(float)

    def holds(values: np.ndarray) -> np.ndarray:  # (K, distinct values): does the cluster hold the value
        _, value_codes = np.unique(values, return_inverse=True)
        table = np.zeros((k, value_codes.max() + 1))
        table[codes, value_codes] = 1.0
        return table

    has_x, has_y = holds(x), holds(y)

    def tau(idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)
        flat = (np.arange(len(idx))[:, None] * k + idx).ravel()
        w = np.bincount(flat, minlength=len(idx) * k).reshape(len(idx), k).astype(float)  # multiplicities
        diff = ((w @ concord) * w).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if variant == "b":
                return diff / np.sqrt(((w @ untied_x) * w).sum(axis=1) * ((w @ untied_y) * w).sum(axis=1))
            n = w @ sizes
            classes = np.minimum((w @ has_x > 0).sum(axis=1), (w @ has_y > 0).sum(axis=1))
            return diff / (n**2 * (classes - 1) / classes)  # 2 (C - D) / (n^2 (m - 1) / m), with C - D = diff / 2

    return tau


def _resample(outcome_stat: Callable[[np.ndarray], np.ndarray], k: int, resamples: int, level: float, seed: int):
    batch = max(1, _MAX_BATCH_ELEMENTS // max(k, 1))
    return bootstrap(
        (np.arange(k),), lambda idx, axis=-1: outcome_stat(idx), vectorized=True, n_resamples=resamples,
        confidence_level=level, method="percentile", batch=batch, rng=np.random.default_rng(seed),
    )


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of per-seed values (the spread across seeds); NaNs below 2 seeds."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def bootstrap_interval(outcome: Outcome, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap interval of the metric, resampling clusters; NaNs below 2 clusters."""
    codes, k = _clusters(outcome)
    if k < 2 or resamples < 1:
        return float("nan"), float("nan")
    res = _resample(_cluster_statistic(outcome, codes, k), k, resamples, level, seed)
    low, high = res.confidence_interval
    return float(low), float(high)


def align(a: Outcome, b: Outcome) -> tuple[Outcome, Outcome]:
    """The samples both outcomes hold, in the same order (by ``sample_id``; by position without ids)."""
    if a.sample_id is None or b.sample_id is None:
        if len(a) != len(b):
            raise ValueError(f"cannot pair {len(a)} with {len(b)} samples without sample ids")
        return a, b
    ids_a, ids_b = a.sample_id.astype(str), b.sample_id.astype(str)
    _, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    return a.subset(np.sort(ia)), b.subset(ib[np.argsort(ia)])


def mcnemar_exact(hits_a: Sequence[float], hits_b: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs."""
    a, b = np.asarray(hits_a, bool), np.asarray(hits_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)


def paired_bootstrap_pvalue(a: Outcome, b: Outcome, resamples: int = 1000, seed: int = 0) -> float:
    """Two-sided p-value of metric(a) - metric(b) = 0 from the joint resampling of aligned samples."""
    codes, k = _clusters(a)
    if k < 2:
        return float("nan")
    stat_a, stat_b = _cluster_statistic(a, codes, k), _cluster_statistic(b, codes, k)
    res = _resample(lambda idx: stat_a(idx) - stat_b(idx), k, resamples, 0.95, seed)
    diffs = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
    if not len(diffs):
        return float("nan")
    return float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))


def paired_pvalue(a: Outcome, b: Outcome, resamples: int = 1000, seed: int = 0) -> tuple[float, str, int]:
    """(p-value, test name, paired samples) for two runs' outcomes of one metric."""
    a, b = align(a, b)
    if a.binary and b.binary:
        return mcnemar_exact(a.values, b.values), "mcnemar", len(a)
    return paired_bootstrap_pvalue(a, b, resamples, seed), "paired bootstrap", len(a)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (NaN stays NaN and does not count towards the family size)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def save_outcomes(path: Path, outcomes: dict[str, Outcome], run_id: str) -> Path:
    """All of a run's outcomes in one compressed npz: ``<metric>.<field>`` arrays plus ``run_id``."""
    arrays: dict[str, np.ndarray] = {"run_id": np.asarray(run_id)}
    for metric, outcome in outcomes.items():
        arrays[f"{metric}.statistic"] = np.asarray(outcome.statistic)
        for name in _FIELDS:
            value = getattr(outcome, name)
            if value is not None:
                arrays[f"{metric}.{name}"] = value.astype(str) if value.dtype == object else value
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_outcomes(path: Path) -> tuple[str, dict[str, Outcome]]:
    """(run_id, {metric: Outcome}) from a file written by ``save_outcomes`` (no pickles are loaded)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            fields: dict[str, dict[str, np.ndarray]] = {}
            for key in data.files:
                if key == "run_id":
                    continue
                metric, name = key.rsplit(".", 1)
                fields.setdefault(metric, {})[name] = data[key]
            run_id = str(data["run_id"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a clipbench outcomes file ({exc})") from None
    outcomes = {
        metric: Outcome(f["values"], str(f["statistic"]), f.get("group"), f.get("cluster"), f.get("sample_id"))
        for metric, f in fields.items()
    }
    return run_id, outcomes

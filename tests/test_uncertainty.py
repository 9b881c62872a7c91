"""Bootstrap intervals, paired tests and the per-sample outcomes every run keeps."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import compose_config, tmp_overrides
from scipy.stats import kendalltau

from clipbench.metrics.classification import classification_outcomes, mean_per_class_recall
from clipbench.metrics.uncertainty import (
    OUTCOMES_FILE,
    Outcome,
    align,
    bootstrap_interval,
    holm,
    load_outcomes,
    mcnemar_exact,
    paired_bootstrap_pvalue,
    paired_pvalue,
    save_outcomes,
)


def _bernoulli(p: float, n: int) -> np.ndarray:
    hits = np.zeros(n)
    hits[: round(p * n)] = 1
    return np.random.default_rng(1).permutation(hits)


def _wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("p", [0.3, 0.7, 0.9])
def test_bernoulli_interval_matches_the_wilson_interval(p):
    n = 600
    low, high = bootstrap_interval(Outcome(_bernoulli(p, n)), resamples=2000, seed=0)
    w_low, w_high = _wilson(p, n)
    assert low == pytest.approx(w_low, abs=0.008) and high == pytest.approx(w_high, abs=0.008)
    assert low < p < high


def test_interval_is_seeded_and_shrinks_with_n():
    outcome = Outcome(_bernoulli(0.6, 400))
    assert bootstrap_interval(outcome, seed=3) == bootstrap_interval(outcome, seed=3)
    assert bootstrap_interval(outcome, seed=3) != bootstrap_interval(outcome, seed=4)
    widths = [np.subtract(*bootstrap_interval(Outcome(_bernoulli(0.6, n)), seed=0))[()] * -1 for n in (100, 400, 1600)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.2)  # ~ 1 / sqrt(n)


def test_level_widens_the_interval():
    outcome = Outcome(_bernoulli(0.5, 300))
    low90, high90 = bootstrap_interval(outcome, level=0.9)
    low99, high99 = bootstrap_interval(outcome, level=0.99)
    assert low99 < low90 and high99 > high90


def test_clusters_resample_as_units():
    """Five identical sentences per image carry the information of one: the interval is sqrt(5) wider."""
    per_image = _bernoulli(0.6, 300)
    hits = np.repeat(per_image, 5)
    clustered = bootstrap_interval(Outcome(hits, cluster=np.repeat(np.arange(300), 5)), resamples=2000)
    flat = bootstrap_interval(Outcome(hits), resamples=2000)
    assert (clustered[1] - clustered[0]) / (flat[1] - flat[0]) == pytest.approx(math.sqrt(5), rel=0.15)


def test_points_match_the_metrics_they_stand_for():
    rng = np.random.default_rng(0)
    logits, targets = torch.randn(200, 7), torch.as_tensor(rng.integers(0, 7, 200))
    outcomes = classification_outcomes(logits, targets, [1, 5], range(200))
    preds = logits.argmax(dim=1)
    assert outcomes["mean_per_class_recall"].point() == pytest.approx(mean_per_class_recall(preds, targets, 7))
    assert outcomes["top1"].point() == pytest.approx((preds == targets).float().mean().item())
    x, y = rng.random(90), rng.integers(1, 5, 90).astype(float)
    for variant in "bc":
        tau = Outcome(x, f"kendall_{variant}", group=y, cluster=np.repeat(np.arange(30), 3))
        assert tau.point() == pytest.approx(kendalltau(x, y, variant=variant).statistic)
        low, high = bootstrap_interval(tau, resamples=200)
        assert low < tau.point() < high


def test_kendall_by_pairwise_forms_equals_scipy_on_each_resample(monkeypatch):
    import clipbench.metrics.uncertainty as uncertainty

    rng = np.random.default_rng(2)
    x, y = np.round(rng.random(300) * 8), rng.integers(1, 5, 300).astype(float)
    clusters = rng.permutation(np.arange(300) % 100)  # every cluster has members
    resampled = rng.integers(0, 100, (20, 100))
    members = [np.flatnonzero(clusters == c) for c in range(100)]
    for variant in "bc":
        outcome = Outcome(x, f"kendall_{variant}", group=y, cluster=clusters)
        codes, k = uncertainty._clusters(outcome)
        fast = uncertainty._cluster_statistic(outcome, codes, k)(resampled)
        expected = [kendalltau(x[s], y[s], variant=variant).statistic
                    for s in (np.concatenate([members[c] for c in row]) for row in resampled)]
        assert fast == pytest.approx(expected, abs=1e-12)


def test_a_single_sample_has_no_interval():
    assert all(math.isnan(v) for v in bootstrap_interval(Outcome([1.0])))


def test_mcnemar_equals_the_exact_binomial_on_discordant_pairs():
    # 3 pairs only A gets right, 11 only B, 20 both, 6 neither
    a = np.array([1] * 3 + [0] * 11 + [1] * 20 + [0] * 6)
    b = np.array([0] * 3 + [1] * 11 + [1] * 20 + [0] * 6)
    n, k = 14, 3
    expected = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    assert mcnemar_exact(a, b) == pytest.approx(expected)
    assert mcnemar_exact(b, a) == pytest.approx(expected)
    assert mcnemar_exact(a, a) == 1.0
    p, test, paired = paired_pvalue(Outcome(a), Outcome(b))
    assert (test, paired) == ("mcnemar", 40) and p == pytest.approx(expected)


def test_paired_bootstrap_separates_a_shift_from_noise():
    rng = np.random.default_rng(0)
    base = rng.random(300)
    same = paired_bootstrap_pvalue(Outcome(base), Outcome(base.copy()))
    shifted = paired_bootstrap_pvalue(Outcome(base + 0.02), Outcome(base))
    noisy = paired_bootstrap_pvalue(Outcome(base + rng.normal(0, 0.3, 300)), Outcome(base))
    assert same == 1.0 and shifted < 0.01 and noisy > 0.05
    assert paired_pvalue(Outcome(base + 0.02), Outcome(base))[1] == "paired bootstrap"


def test_pairs_are_aligned_by_sample_id():
    a = Outcome([1, 0, 1, 1], sample_id=["a", "b", "c", "d"])
    b = Outcome([0, 1, 1], sample_id=["d", "c", "a"])  # "b" skipped in run b
    a2, b2 = align(a, b)
    assert a2.sample_id.tolist() == b2.sample_id.tolist() == ["a", "c", "d"]
    assert a2.values.tolist() == [1, 1, 1] and b2.values.tolist() == [1, 1, 0]


def test_holm_adjustment():
    p = [0.01, 0.04, 0.03, float("nan"), 0.5]
    # by hand: sorted 0.01, 0.03, 0.04, 0.5 with m = 4 -> 0.04, 0.09, max(0.09, 0.08), max(0.09, 0.5)
    assert holm(p)[[0, 2, 1, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert math.isnan(holm(p)[3])


def test_outcomes_round_trip(tmp_path):
    outcomes = {
        "top1": Outcome([1, 0, 1], sample_id=["0", "1", "2"]),
        "clip_s_w2.5": Outcome([0.5, 0.7, 0.1], cluster=["x", "x", "y"]),
        "kendall_tau_c": Outcome([0.1, 0.2, 0.3], "kendall_c", group=[1, 2, 2]),
    }
    run_id, loaded = load_outcomes(save_outcomes(tmp_path / OUTCOMES_FILE, outcomes, "abc"))
    assert run_id == "abc" and set(loaded) == set(outcomes)
    for name, outcome in outcomes.items():
        assert loaded[name].statistic == outcome.statistic
        assert loaded[name].point() == pytest.approx(outcome.point())
    assert loaded["clip_s_w2.5"].cluster.tolist() == ["x", "x", "y"]


def test_a_run_keeps_outcomes_and_writes_intervals(tmp_path, cifar_root, capsys):
    from clipbench.runner import run

    cfg = compose_config(tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "ci.resamples=200"))
    rows = run(cfg, tmp_path / "run")
    frame = pd.read_csv(tmp_path / "results.csv")
    scored = frame[frame.metric != "skipped"]
    assert set(scored.metric) == {"top1", "mean_per_class_recall"}
    assert (scored.ci_low <= scored.value).all() and (scored.value <= scored.ci_high).all()
    top1 = scored[scored.metric == "top1"].iloc[0]
    assert frame[frame.metric == "skipped"].ci_low.isna().all()
    run_id, outcomes = load_outcomes(tmp_path / "run" / OUTCOMES_FILE)
    assert run_id == rows[0]["run_id"] and set(outcomes) == set(scored.metric)
    for row in scored.itertuples():
        assert outcomes[row.metric].point() == pytest.approx(row.value)
        assert (row.ci_low, row.ci_high) == pytest.approx(bootstrap_interval(outcomes[row.metric], 200, 0.95, seed=0))
    assert f"{top1.value:.4f} [{top1.ci_low:.4f}, {top1.ci_high:.4f}]" in capsys.readouterr().out


def test_bad_interval_settings_fail_before_work(tmp_path, cifar_root):
    from clipbench.errors import ConfigError
    from clipbench.runner import validate

    for override, key in (("ci.level=1.5", "ci.level"), ("ci.resamples=-1", "ci.resamples")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(compose_config(tmp_overrides(tmp_path, f"dataset.root={cifar_root}", override)))


COUNTS = {"skipped", "truncated_captions", "tied"}  # counts, not estimates: no interval


@pytest.mark.parametrize("task", ["zeroshot", "rec", "region_cls", "pointcloud", "clipscore", "retrieval"])
def test_every_metric_of_every_task_has_its_outcomes_and_interval(tmp_path, toy_root, monkeypatch, task):
    from clipbench.runner import run

    cfg = compose_config([f"paths.toy={toy_root}", "device=cpu", "num_workers=0", "progress=false", "limit=60",
                          "ci.resamples=200", f"results_csv={tmp_path / 'results.csv'}", f"cache_dir={tmp_path / 'cache'}",
                          f"+toy={task}", *(["method=falip"] if task == "rec" else [])])  # plain CLIP cannot pick a proposal
    rows = run(cfg, tmp_path / "run")
    _, outcomes = load_outcomes(tmp_path / "run" / OUTCOMES_FILE)
    for row in rows:
        if row["metric"] in COUNTS:
            assert row["ci_low"] is None
            continue
        assert outcomes[row["metric"]].point() == pytest.approx(row["value"], abs=1e-6), row["metric"]  # metrics are float32 means
        assert row["ci_low"] <= row["value"] + 1e-9 and row["value"] <= row["ci_high"] + 1e-9, row["metric"]

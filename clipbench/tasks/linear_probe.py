"""Linear probe (and few-shot): a linear classifier fitted on frozen image features of the train split,
evaluated on the test split (``dataset.split``). Features come from one cached pass per split; the fit follows
``task.protocol`` (clipbench/probe/fit.py) once per seed in ``task.seeds``."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time

import numpy as np
import torch

from clipbench.config import as_plain
from clipbench.config.tasks import LinearProbeConfig
from clipbench.errors import ConfigError, DataError
from clipbench.metrics.classification import (
    classification_outcomes,
    mean_per_class_recall,
    reported_topk,
    topk_accuracy,
)
from clipbench.metrics.uncertainty import Outcome
from clipbench.probe.features import SplitFeatures, split_features
from clipbench.probe.fit import PROTOCOLS, ProbeFit, Split
from clipbench.probe.splits import shot_subset, validation_split
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import RunContext, TaskResult

PREFIX = "lp_"
log = logging.getLogger(__name__)


def split_dataset(dataset_cfg, split: str, key: str, test):
    """The dataset config's ``split`` (``key`` names the setting in errors), built by the same loader."""
    from clipbench.data import DATASETS
    from clipbench.runner import dataset_kind

    cfg = dataclasses.replace(dataset_cfg, split=split)
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ConfigError(key, f"split {split!r}: {exc.message}") from None
    dataset = DATASETS.get(dataset_kind(cfg)).build(cfg)
    if list(dataset.classnames) != list(test.classnames):
        raise DataError(f"{key}={split!r} has {len(dataset.classnames)} classes, the test split "
                        f"{dataset_cfg.split!r} {len(test.classnames)} (or other names): a probe needs the same classes")
    return cfg, dataset


def check_inputs(dataset, cfg: LinearProbeConfig, ctx: RunContext) -> None:
    if not hasattr(dataset, "classnames") or getattr(dataset, "multilabel", False):
        raise ConfigError("dataset", f"{getattr(dataset, 'name', '')!r} is not a single-label classification set; "
                          "task=linear_probe needs one")
    split = getattr(ctx.dataset_config, "split", None)
    if not split:
        raise ConfigError("dataset.split", "is not set; task=linear_probe evaluates on a named test split (e.g. test)")
    if split in (cfg.train_split, cfg.val_split):
        raise ConfigError("dataset.split", f"{split!r} is also the probe's train or validation split; name the test split")


def extract_splits(model, dataset, cfg: LinearProbeConfig, ctx: RunContext, meter: Throughput) -> dict[str, SplitFeatures]:
    """Features of test, train and (when named) validation: one pass per split, or the cache."""
    from clipbench.fingerprints import data_fingerprint

    named = {"test": (ctx.dataset_config, dataset)}
    named["train"] = split_dataset(ctx.dataset_config, cfg.train_split, "task.train_split", dataset)
    if cfg.val_split is not None:
        named["val"] = split_dataset(ctx.dataset_config, cfg.val_split, "task.val_split", dataset)
    out, cached = {}, []
    for role, (split_cfg, split_set) in named.items():
        params = as_plain(split_cfg)
        out[role], hit = split_features(model, split_set, params, data_fingerprint(params), cfg.normalize, ctx, meter,
                                        f"features {split_cfg.split}")
        if hit:
            cached.append(split_cfg.split)
        if not len(out[role].targets):
            raise DataError(f"split {split_cfg.split!r} of {split_cfg.name} has no readable image")
    if cached:
        log.info("linear probe: features of split(s) %s from the cache", ", ".join(cached))
    return out


def fit_seed(features: dict[str, SplitFeatures], cfg: LinearProbeConfig, seed: int, ctx: RunContext,
             bar) -> tuple[ProbeFit, list[int]]:
    """One seed: its validation share (or the named split), its shot subset, the protocol's fit; with the
    train split's dataset indices it fitted on, in the order it saw them."""
    train = Split(features["train"].features, features["train"].targets)
    val = Split(features["val"].features, features["val"].targets) if "val" in features else None
    ids = features["train"].indices
    if cfg.val_proportion is not None:
        kept, held = validation_split(len(train), cfg.val_proportion, seed)
        train, val, ids = _rows(train, kept), _rows(train, held), ids[kept]
    shots = shot_subset(train.targets, cfg.fewshot_k, seed)
    train = _rows(train, shots)
    protocol = PROTOCOLS.get(cfg.protocol)
    fit = protocol.fit(train, val, features["test"].features, cfg, seed, cfg.fewshot_k > 0, ctx.device, bar.update)
    return fit, ids[shots].tolist()


def _rows(split: Split, index: list[int]) -> Split:
    index = torch.as_tensor(index, dtype=torch.long)
    return Split(split.features[index], split.targets[index])


def seed_metrics(logits: torch.Tensor, targets: torch.Tensor, cfg: LinearProbeConfig, num_classes: int) -> dict[str, float]:
    metrics = {f"{PREFIX}top{k}": topk_accuracy(logits, targets, k) for k in reported_topk(cfg.topk, num_classes)}
    metrics[f"{PREFIX}mean_per_class_recall"] = mean_per_class_recall(logits.argmax(dim=1), targets, num_classes)
    return metrics


def padded(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Test logits over every class of the set (the head has as many as the train split's largest label + 1)."""
    if logits.shape[1] >= num_classes:
        return logits
    pad = torch.full((len(logits), num_classes - logits.shape[1]), float("-inf"))
    return torch.cat([logits, pad], dim=1)


def evaluate(model, dataset, method, cfg: LinearProbeConfig, ctx: RunContext) -> TaskResult:
    check_inputs(dataset, cfg, ctx)
    meter = Throughput(ctx.device)
    features = extract_splits(model, dataset, cfg, ctx, meter)
    meter.stop()
    extraction_seconds = meter.seconds
    test, num_classes = features["test"], len(dataset.classnames)
    fit_started = time.perf_counter()
    fits, per_seed, shots = [], [], []
    with tqdm(desc=f"fit ({cfg.protocol})", unit="fit", disable=not ctx.progress) as bar:
        for seed in cfg.seeds:
            fit, fitted_on = fit_seed(features, cfg, seed, ctx, bar)
            shots.append(fitted_on if cfg.fewshot_k > 0 else None)
            fit.logits = padded(fit.logits, num_classes)
            fits.append(fit)
            per_seed.append(seed_metrics(fit.logits, test.targets, cfg, num_classes))
    fit_seconds = time.perf_counter() - fit_started
    regulariser = f"{PREFIX}{fits[0].regulariser}"
    metrics = {name: float(np.mean([m[name] for m in per_seed])) for name in per_seed[0]}
    metrics[regulariser] = float(statistics.median_low(f.value for f in fits))
    log.info("linear probe: extraction %.1f s (%d images encoded, %.1f items/s forward), fit %.1f s (%s, %d seed(s))",
             extraction_seconds, meter.items, meter.forward_items_per_s, fit_seconds, cfg.protocol, len(cfg.seeds))
    skipped = sum(f.skipped for f in features.values())
    return TaskResult(
        metrics=metrics,
        n=len(test.targets),
        throughput=meter,
        skipped=skipped,
        skip_reasons={"unreadable image": skipped} if skipped else {},
        predictions=_predictions(fits[0], test) if ctx.save_predictions else None,
        outcomes=_outcomes(fits, test, cfg),
        seed_values={name: [m[name] for m in per_seed] for name in per_seed[0]},
        extra={"linear_probe": {
            "protocol": cfg.protocol, "regulariser": fits[0].regulariser, "seeds": list(cfg.seeds),
            "per_seed": [{"seed": s, **m, fits[0].regulariser: f.value, "search": {str(k): v for k, v in f.search.items()},
                          "shots": shot}  # few-shot: the train samples (dataset indices) fitted on
                         for s, m, f, shot in zip(cfg.seeds, per_seed, fits, shots)],
            "extraction_seconds": extraction_seconds, "extraction_items_per_s": meter.forward_items_per_s,
            "fit_seconds": fit_seconds,
            "samples": {role: len(f.targets) for role, f in features.items()},
        }},
    )


def _outcomes(fits: list[ProbeFit], test: SplitFeatures, cfg: LinearProbeConfig) -> dict[str, Outcome]:
    """Per test sample, its hits averaged over seeds (0/1 with one seed): the paired tests of clipbench-report."""
    per_fit = [classification_outcomes(f.logits, test.targets, cfg.topk, test.indices.tolist()) for f in fits]
    out = {}
    for name, first in per_fit[0].items():
        values = np.mean([o[name].values for o in per_fit], axis=0)
        out[PREFIX + name] = Outcome(values, first.statistic, first.group, first.cluster, first.sample_id)
    return out


def _predictions(fit: ProbeFit, test: SplitFeatures) -> list[dict]:
    """The first seed's test predictions: its head's logits per class."""
    import json

    return [{"sample_id": int(i), "target": int(t), "pred": int(row.argmax()),
             "scores": json.dumps([round(v, 5) for v in row.tolist()])}
            for i, t, row in zip(test.indices.tolist(), test.targets.tolist(), fit.logits)]


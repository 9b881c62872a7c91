"""The fitting protocols of ``task=linear_probe``, one registry: each takes the train (and validation) features
and returns test logits, the chosen regulariser and the search's validation scores.

* ``clip_benchmark``: clip_benchmark/metrics/linear_probe.py (``train``, ``find_peak``, ``evaluate``): a
  ``torch.nn.Linear`` head trained with AdamW and a cosine schedule without warm-up, on batches in the order
  ``DataLoader(shuffle=True)`` visits them, seeded by ``torch.manual_seed(seed)`` before each fit; weight decay
  searched over ``logspace(-6, 2, 97)``. The same steps, on one feature tensor instead of a per-row DataLoader.
* ``openai``: the CLIP paper's appendix A.3 (Radford et al. 2021, arXiv:2103.00020): scikit-learn's L-BFGS
  ``LogisticRegression`` (max_iter 1000); L2 strength searched on the validation split over 10^-6 .. 10^6 in 96
  log-spaced steps (``C`` over ``logspace(-6, 6, 97)``, the grid being symmetric) by the same parametric
  binary search: the 7 points 10^-6, 10^-4, ..., 10^6, then halving the interval around the peak down to the
  grid's step (8 per decade).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from clipbench.registry import Registry


@dataclass
class Split:
    """Features (N, D) float32 and integer targets (N,) of one split, in the order the fit sees them."""

    features: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def __add__(self, other: Split) -> Split:
        return Split(torch.cat([self.features, other.features]), torch.cat([self.targets, other.targets]))


@dataclass
class ProbeFit:
    logits: torch.Tensor  # (N_test, num_classes)
    regulariser: str  # weight_decay | C
    value: float  # the regulariser the final fit used
    search: dict[float, float] = field(default_factory=dict)  # regulariser -> validation top-1


@dataclass
class Protocol:
    fit: Callable[..., ProbeFit]
    regulariser: str


PROTOCOLS: Registry[Protocol] = Registry("linear-probe protocol")


def coarse_to_fine(grid: list[float], coarse: list[float], score: Callable[[float], float]) -> int:
    """clip_benchmark's ``find_peak`` search: the best coarse point, then the best of (left, peak, right) at
    spans 8, 4, 2, 1 around the peak; a point must beat the best so far strictly, from (index 0, score 0).
    Scores are computed once per grid point (each fit is deterministic given its seed)."""
    scores: dict[int, float] = {}

    def find_peak(indices: list[int]) -> int:
        best, best_score = 0, 0
        for i in indices:
            if i not in scores:
                scores[i] = score(grid[i])
            if best_score < scores[i]:
                best, best_score = i, scores[i]
        return best

    peak = find_peak([i for i, v in enumerate(grid) if v in coarse])
    span = 8
    while span > 0:
        peak = find_peak([max(peak - span, 0), peak, min(peak + span, len(grid) - 1)])
        span //= 2
    return peak


def top1(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == targets).double().mean().item() if len(targets) else 0.0


# ---------------------------------------------------------------- clip_benchmark: AdamW on a linear head

WEIGHT_DECAYS = np.logspace(-6, 2, num=97).tolist()
WEIGHT_DECAYS_COARSE = np.logspace(-6, 2, num=7).tolist()


def dataloader_order(n: int) -> torch.Tensor:
    """The order ``DataLoader(dataset_of_n, shuffle=True)`` visits its items in, drawing from the global RNG
    exactly as that loader does (its iterator's base seed, then its RandomSampler's seed)."""
    return next(iter(DataLoader(range(n), batch_size=n, shuffle=True)))


def cosine_lr(base_lr: float, step: int, steps: int) -> float:
    """clip_benchmark's ``cosine_lr`` with warm-up 0."""
    return 0.5 * (1 + np.cos(np.pi * (step - 0.0) / (steps - 0.0))) * base_lr


def train_head(train: Split, num_classes: int, weight_decay: float, lr: float, epochs: int, batch_size: int,
               seed: int, amp: bool, device: torch.device) -> torch.nn.Linear:
    """clip_benchmark's ``train``; the global RNG is restored afterwards (forked)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(train.features.shape[1], num_classes).to(device)
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        features, targets = train.features.to(device), train.targets.to(device)
        per_epoch = math.ceil(len(train) / batch_size)
        for epoch in range(epochs):
            order = dataloader_order(len(train)).to(device)
            for i in range(per_epoch):
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(lr, i + epoch * per_epoch, epochs * per_epoch)
                batch = order[i * batch_size:(i + 1) * batch_size]
                optimizer.zero_grad()
                with torch.autocast(device.type, enabled=amp):
                    loss = F.cross_entropy(head(features[batch]), targets[batch])
                loss.backward()
                optimizer.step()
    return head


@torch.no_grad()
def head_logits(head: torch.nn.Linear, features: torch.Tensor, amp: bool, device: torch.device) -> torch.Tensor:
    with torch.autocast(device.type, enabled=amp):
        return head(features.to(device)).float().cpu()


def fit_clip_benchmark(train: Split, val: Split | None, test: torch.Tensor, cfg, seed: int, few_shot: bool,
                       device: torch.device, progress: Callable[[], None] = lambda: None) -> ProbeFit:
    """clip_benchmark's ``evaluate`` after its features: with a validation split the weight-decay search, then
    the final fit on train + val (the shot subset alone when few-shot); without one, weight decay 0."""
    amp = cfg.amp and device.type == "cuda"
    num_classes = int(train.targets.max()) + 1  # clip_benchmark's output_shape

    def fit(data: Split, weight_decay: float) -> torch.nn.Linear:
        head = train_head(data, num_classes, weight_decay, cfg.lr, cfg.epochs, cfg.batch_size, seed, amp, device)
        progress()
        return head

    search: dict[float, float] = {}
    weight_decay, final = 0.0, train
    if val is not None:
        def score(wd: float) -> float:
            search[wd] = top1(head_logits(fit(train, wd), val.features, amp, device), val.targets)
            return search[wd]

        weight_decay = WEIGHT_DECAYS[coarse_to_fine(WEIGHT_DECAYS, WEIGHT_DECAYS_COARSE, score)]
        final = train if few_shot else train + val
    logits = head_logits(fit(final, weight_decay), test, amp, device)
    return ProbeFit(logits, "weight_decay", weight_decay, search)


PROTOCOLS.register("clip_benchmark", Protocol(fit_clip_benchmark, "weight_decay"))


# ---------------------------------------------------------------- OpenAI: L-BFGS logistic regression

C_GRID = np.logspace(-6, 6, num=97).tolist()
C_COARSE = np.logspace(-6, 6, num=7).tolist()


def _logistic(train: Split, c: float, cfg, seed: int):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=cfg.max_iter, random_state=seed)
    return model.fit(train.features.double().numpy(), train.targets.numpy())


def _full_logits(model, features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, num_classes) decision values; classes absent from the train split at -inf."""
    scores = np.asarray(model.decision_function(features.double().numpy()))
    if scores.ndim == 1:  # two classes: scikit-learn returns the second class's margin
        scores = np.stack([np.zeros_like(scores), scores], axis=1)
    out = torch.full((len(features), num_classes), float("-inf"), dtype=torch.float64)
    out[:, torch.as_tensor(model.classes_, dtype=torch.long)] = torch.from_numpy(scores)
    return out.float()


def fit_openai(train: Split, val: Split | None, test: torch.Tensor, cfg, seed: int, few_shot: bool,
               device: torch.device, progress: Callable[[], None] = lambda: None) -> ProbeFit:
    """C searched on the validation split, then the final fit on train + val (the shot subset alone when
    few-shot, as for clip_benchmark's protocol)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    num_classes = int(train.targets.max()) + 1
    search: dict[float, float] = {}

    def score(c: float) -> float:
        search[c] = float(_logistic(train, c, cfg, seed).score(val.features.double().numpy(), val.targets.numpy()))
        progress()
        return search[c]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c = C_GRID[coarse_to_fine(C_GRID, C_COARSE, score)]
        model = _logistic(train if few_shot else train + val, c, cfg, seed)
    progress()
    return ProbeFit(_full_logits(model, test, num_classes), "C", c, search)


PROTOCOLS.register("openai", Protocol(fit_openai, "C"))

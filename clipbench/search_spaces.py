"""Optuna search spaces derived from the model (``hydra.sweeper.custom_search_space``).

``falip_heads``: FALIP's alpha, rows, masked blocks (the last k of the model's depth, k = 1..depth) and one
bias scale in [0, 1] per masked block and head, as ``method.heads={b<block>: {h<head>: scale}}``. On towers
without a CLS token (SigLIP's MAP head) ``rows=cls`` trials search the pooling probe's heads instead.
"""

from __future__ import annotations

import json
from functools import lru_cache

ALPHA_RANGE = (0.05, 1.0)


@lru_cache(maxsize=8)
def tower_layout(source: str, arch: str) -> tuple[int, int, bool, int | None]:
    """(depth, heads, has CLS, probe heads) of ``arch``'s image tower, built without weights on the meta device."""
    import torch

    from clipbench.models.attention import attention_tower
    from clipbench.models.factory import build_structure

    with torch.device("meta"):
        model = build_structure(source, arch)
    tower = attention_tower(model, arch)
    return tower.depth, tower.num_heads, tower.has_cls, tower.probe_heads


def falip_heads(cfg, trial) -> None:
    """Suggest one FALIP configuration for ``trial`` on ``cfg.model``'s image tower."""
    depth, heads, has_cls, probe_heads = tower_layout(str(cfg.model.get("source", "open_clip")), str(cfg.model.arch))
    trial.suggest_float("method.alpha", *ALPHA_RANGE)
    rows = trial.suggest_categorical("method.rows", ["cls", "all"])
    if rows == "cls" and not has_cls:
        blocks, count = ["probe"], probe_heads
    else:
        choices = [str(list(range(depth - k, depth))).replace(" ", "") for k in range(1, depth + 1)]
        layers = trial.suggest_categorical("method.layers", choices)
        blocks, count = [str(b) for b in json.loads(layers)], heads
    for block in blocks:
        for head in range(count):
            key = "probe" if block == "probe" else f"b{block}"
            trial.suggest_float(f"+method.heads.{key}.h{head}", 0.0, 1.0)

"""``method.layers`` and ``method.heads`` of FALIP, parsed and checked without torch (config checks use them;
clipbench/models/attention.py turns them into the bias).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from clipbench.errors import ConfigError

ROWS = ("cls", "all", "diagonal")


def resolve_layers(spec: Any, depth: int) -> tuple[int, ...]:
    """Block indices (ints or a list; negative counts from the end) -> sorted unique non-negative indices."""
    items = [spec] if isinstance(spec, int) else list(spec) if isinstance(spec, (list, tuple)) else None
    if not items or any(isinstance(i, bool) or not isinstance(i, int) for i in items):
        raise ConfigError("method.layers", f"{spec!r} is not allowed; use a block index or a list of them")
    bad = [i for i in items if not -depth <= i < depth]
    if bad:
        raise ConfigError(
            "method.layers", f"{bad} out of range: the image tower has {depth} blocks (use 0..{depth - 1} or -{depth}..-1)"
        )
    return tuple(sorted({i % depth for i in items}))


def check_heads_spec(spec: Any) -> None:
    """Syntax of ``method.heads`` without the model: all | [i, ...] | [[i, ...], ...] | {scale: [[s, ...], ...]}
    | {b<block>: {h<head>: s, ...}, ...} (a scale per block and head, 0 for unlisted heads)."""
    _heads_rows(spec)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _block_scales(spec: Any) -> dict[str, dict[int, float]] | None:
    """{b<block>|probe: {h<head>: scale}} -> {"<block>"|"probe": {head: scale}}; None if ``spec`` is not that form."""
    if not isinstance(spec, dict) or not spec or set(spec) == {"scale"}:
        return None
    out = {}
    for key, heads in spec.items():
        block = key[1:] if isinstance(key, str) and key.startswith("b") else key if key == "probe" else None
        if block is None or (block != "probe" and not block.isdigit()) or not isinstance(heads, dict):
            return None
        row = {}
        for hk, v in heads.items():
            if not (isinstance(hk, str) and hk.startswith("h") and hk[1:].isdigit() and _number(v)):
                return None
            row[int(hk[1:])] = float(v)
        out[block] = row
    return out


def _heads_rows(spec: Any) -> tuple[str, Any]:
    def ints(row) -> bool:
        return isinstance(row, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in row)

    if spec is None or spec == "all":
        return "all", None
    blocks = _block_scales(spec)
    if blocks is not None:
        return "blocks", blocks
    if isinstance(spec, dict) and set(spec) == {"scale"}:
        rows = spec["scale"]
        if isinstance(rows, (list, tuple)) and rows and all(
            isinstance(r, (list, tuple)) and r and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
            for r in rows
        ):
            return "scale", [[float(v) for v in r] for r in rows]
    elif ints(spec):
        return "indices", [list(spec)]
    elif isinstance(spec, (list, tuple)) and spec and all(ints(r) for r in spec):
        return "per_layer", [list(r) for r in spec]
    raise ConfigError(
        "method.heads",
        f"{spec!r} is not allowed; use all, a list of head indices, one list per layer, {{scale: [[...], ...]}} "
        "(a layers x heads matrix) or {b<block>: {h<head>: scale}}",
    )


def head_scale_rows(spec: Any, layers: Sequence[int | str], num_heads: int) -> list[list[float]]:
    """(len(layers), num_heads) multipliers of the bias for ``method.heads``, as nested lists."""
    kind, rows = _heads_rows(spec)
    n = len(layers)
    if kind == "all":
        return [[1.0] * num_heads for _ in range(n)]
    if kind == "blocks":
        names = [str(layer) for layer in layers]
        extra, missing = sorted(set(rows) - set(names)), [b for b in names if b not in rows]
        if extra or missing:
            raise ConfigError(
                "method.heads", f"its blocks must be the masked ones {names}: {extra or missing} "
                f"{'are not masked' if extra else 'have no entry'}"
            )
        bad = sorted({h for b in names for h in rows[b] if not 0 <= h < num_heads})
        if bad:
            raise ConfigError("method.heads", f"head indices {bad} out of range: each block has {num_heads} heads")
        return [[rows[b].get(h, 0.0) for h in range(num_heads)] for b in names]
    if kind == "scale":
        if len(rows) != n or any(len(r) != num_heads for r in rows):
            raise ConfigError(
                "method.heads", f"the scale matrix must be {n} x {num_heads} (masked layers x heads), got "
                f"{len(rows)} x {sorted({len(r) for r in rows})}"
            )
        return rows
    if kind == "indices":
        rows = rows * n
    if len(rows) != n:
        raise ConfigError("method.heads", f"{len(rows)} head lists given for {n} masked layers {list(layers)}")
    scale = [[0.0] * num_heads for _ in range(n)]
    for li, row in enumerate(rows):
        bad = [h for h in row if not -num_heads <= h < num_heads]
        if bad:
            raise ConfigError("method.heads", f"head indices {bad} out of range: each block has {num_heads} heads")
        for h in row:
            scale[li][h % num_heads] = 1.0
    return scale

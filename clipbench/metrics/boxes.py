"""Box geometry: format conversion, clipping to the image, union (boxes are x0, y0, x1, y1); IoU is in iou.py."""

from __future__ import annotations

import math
from collections.abc import Sequence

Box = tuple[float, float, float, float]


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


MALFORMED_BOX: Box = (float("nan"),) * 4


def parse_xywh(value) -> Box:
    """An annotation's ``[x, y, w, h]`` as x0, y0, x1, y1; ``MALFORMED_BOX`` (NaN, dropped when clipped)
    when it is not four finite numbers."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return MALFORMED_BOX
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return MALFORMED_BOX
    return xywh_to_xyxy(value)


def is_malformed(box: Sequence[float]) -> bool:
    return any(v != v for v in box)


def clip_box(box: Sequence[float], width: float, height: float) -> Box | None:
    """The box clipped to the image ``[0, width] x [0, height]``; None when nothing with area is left.

    Coordinates given in the wrong order (negative width or height) are treated as empty, not swapped.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if any(v != v for v in (x0, y0, x1, y1)):  # NaN
        return None
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def union_box(boxes: Sequence[Sequence[float]]) -> Box:
    """The smallest box holding all ``boxes``."""
    if not boxes:
        raise ValueError("union_box needs at least one box")
    return (
        min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)
    )


def expand_box(box: Sequence[float], margin: float, width: float, height: float) -> Box | None:
    """Each side moved out by ``margin`` times the box's width (x) or height (y), clipped to the image."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return clip_box((x0 - dx, y0 - dy, x1 + dx, y1 + dy), width, height)

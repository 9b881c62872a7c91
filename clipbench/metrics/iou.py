"""Intersection over union of boxes (x0, y0, x1, y1), every pair at once with ``torchvision.ops.box_iou``.

Kept apart from the box geometry in boxes.py, which the dataset loaders import while a config is checked
(before torch is imported).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_iou as torchvision_box_iou


def box_iou(boxes1: Sequence[Sequence[float]] | torch.Tensor, boxes2: Sequence[Sequence[float]] | torch.Tensor) -> torch.Tensor:
    """(N, M) float64 IoU of each of the N ``boxes1`` with each of the M ``boxes2``; 0 where either box has no
    area (zero or negative width or height, or NaN coordinates).

    Areas are ``(x1 - x0) * (y1 - y0)`` (continuous coordinates, no +1), torchvision's convention.

    Example:
        >>> box_iou([(0, 0, 10, 10), (0, 0, 4, 4)], [(5, 0, 15, 10), (1, 1, 3, 3), (2, 2, 2, 9)])
        tensor([[0.3333, 0.0400, 0.0000],
                [0.0000, 0.2500, 0.0000]], dtype=torch.float64)
    """
    a = torch.as_tensor(boxes1, dtype=torch.float64).reshape(-1, 4)
    b = torch.as_tensor(boxes2, dtype=torch.float64).reshape(-1, 4)
    no_area = _no_area(a)[:, None] | _no_area(b)[None, :]  # torchvision would give NaN (0 / 0) or a signed area
    return torchvision_box_iou(a, b).masked_fill(no_area, 0.0)


def _no_area(boxes: torch.Tensor) -> torch.Tensor:
    return ~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))

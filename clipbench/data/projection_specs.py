"""The point-cloud projections by name: their views, tilts, image sizes and background, read without torch
(config checks use them); the projections themselves are in clipbench/data/projection.py, imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from clipbench.registry import lazy

# PointCLIP V1 (mv_utils_zs.py): Euler angles (a, b, c) of the six views,
# 4 around the vertical axis plus top and bottom.
POINTCLIP_V1_VIEWS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, math.pi / 2),
    (math.pi / 2, 0.0, math.pi / 2),
    (math.pi, 0.0, math.pi / 2),
    (3 * math.pi / 2, 0.0, math.pi / 2),
    (0.0, -math.pi / 2, math.pi / 2),
    (0.0, math.pi / 2, math.pi / 2),
)
POINTCLIP_V1_RESOLUTION = 128

# PointCLIP V2 realistic projection (zeroshot_cls/trainers/mv_utils_zs.py of the official
# PointCLIP_V2 code): 10 views, each a main rotation followed by a small tilt ("_views_bias").
POINTCLIP_V2_VIEWS: tuple[tuple[float, float, float], ...] = (
    *[(k * math.pi / 4, 0.0, math.pi / 2) for k in (1, 3, 5, 7)],  # the four diagonal side views
    *POINTCLIP_V1_VIEWS,  # then V1's four side views, top and bottom
)
POINTCLIP_V2_TILTS: tuple[tuple[float, float, float], ...] = (
    *[(0.0, math.pi / 9, 0.0)] * 8,
    *[(0.0, math.pi / 15, 0.0)] * 2,
)
POINTCLIP_V2_RESOLUTION = 112


@dataclass(frozen=True)
class ProjectionSpec:
    """A projection, its defaults and the value its empty (background) pixels hold."""

    project: Callable  # (B, N, 3) clouds -> (B, views, R, R) depth maps
    views: tuple[tuple[float, float, float], ...]
    resolution: int
    background: float


PROJECTIONS: dict[str, ProjectionSpec] = {
    "pointclip_v1": ProjectionSpec(lazy("clipbench.data.projection", "project_pointclip_v1"), POINTCLIP_V1_VIEWS, POINTCLIP_V1_RESOLUTION, 0.0),
    "pointclip_v2": ProjectionSpec(lazy("clipbench.data.projection", "project_pointclip_v2"), POINTCLIP_V2_VIEWS, POINTCLIP_V2_RESOLUTION, 1.0),
}

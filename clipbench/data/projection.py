"""Point-cloud to depth-image projections (PointCLIP V1 and V2), batched torch.

All functions take clouds as a (B, N, 3) float tensor and run on its device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from clipbench.data.projection_specs import (  # noqa: F401  (torch-free, for config checks; re-exported)
    POINTCLIP_V1_RESOLUTION,
    POINTCLIP_V1_VIEWS,
    POINTCLIP_V2_RESOLUTION,
    POINTCLIP_V2_TILTS,
    POINTCLIP_V2_VIEWS,
    PROJECTIONS,
    ProjectionSpec,
)

POINTCLIP_V1_TRANSLATION = 1.6
_EPS = 1e-12


def euler_rotation(angles: Sequence[float], dtype=torch.float32, device=None) -> torch.Tensor:
    """R = Rx(a) @ Ry(b) @ Rz(c), built in float32 like the reference (cos/sin of float32 angles)."""
    a, b, c = (torch.tensor(float(x), dtype=dtype, device=device) for x in angles)
    one, zero = torch.ones((), dtype=dtype, device=device), torch.zeros((), dtype=dtype, device=device)
    rx = torch.stack([torch.stack([one, zero, zero]),
                      torch.stack([zero, a.cos(), -a.sin()]),
                      torch.stack([zero, a.sin(), a.cos()])])
    ry = torch.stack([torch.stack([b.cos(), zero, b.sin()]),
                      torch.stack([zero, one, zero]),
                      torch.stack([-b.sin(), zero, b.cos()])])
    rz = torch.stack([torch.stack([c.cos(), -c.sin(), zero]),
                      torch.stack([c.sin(), c.cos(), zero]),
                      torch.stack([zero, zero, one])])
    return rx @ ry @ rz


def view_rotations(views: Sequence[Sequence[float]], device=None) -> torch.Tensor:
    """(V, 3, 3) float32 rotation matrices for a list of Euler-angle triples (built once per view list)."""
    return _cached_rotations(tuple(tuple(float(a) for a in v) for v in views)).to(device)


@functools.lru_cache(maxsize=64)
def _cached_rotations(views: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    return torch.stack([euler_rotation(v) for v in views])


def project_pointclip_v1(
    points: torch.Tensor,
    resolution: int = POINTCLIP_V1_RESOLUTION,
    views: Sequence[Sequence[float]] = POINTCLIP_V1_VIEWS,
) -> torch.Tensor:
    """PointCLIP V1 depth maps: (B, N, 3) -> (B, V, R, R) float32.

    Port of PCViews.get_img / points2depth / distribute (size 1) in PointCLIP's
    trainers/mv_utils_zs.py, same float32 operation order:
    p @ R^T with R = Rx(a) @ Ry(b) @ Rz(c); z += 1.6; u = x/(z+1e-12), v = y/(z+1e-12);
    row = ceil(((u+1)*R)/2 - 0.5), col = ceil(((v+1)*R)/2 - 0.5) (x maps to the row);
    a point counts if 0 <= row, col <= R-1 and z >= 0, with weight w = 1/(z+1e-12).
    Pixel = sum(z*w) / sum(w), i.e. count / sum(1/z), the harmonic mean of its depths;
    empty pixels are 0 (the reference divides them by 1).
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    pts = points.to(torch.float32)
    batch = pts.shape[0]
    device = pts.device
    rot_t = view_rotations(views, device=device).transpose(1, 2)  # (V, 3, 3) = R^T
    n_views = rot_t.shape[0]
    translation = torch.tensor([0.0, 0.0, -POINTCLIP_V1_TRANSLATION], dtype=torch.float32, device=device)
    rotated = torch.matmul(pts.unsqueeze(1), rot_t.unsqueeze(0)) - translation  # (B, V, N, 3)
    z = rotated[..., 2]
    z_eps = z + torch.tensor(_EPS, dtype=torch.float32, device=device)
    pixel = torch.ceil((((rotated[..., :2] / z_eps[..., None]) + 1) * resolution) / 2 - 0.5)  # (row, col)
    valid = ((pixel >= 0) & (pixel <= resolution - 1)).all(dim=-1) & (z >= 0)
    weight = torch.where(valid, 1 / z_eps, 0.0)
    flat = torch.where(valid, pixel[..., 0] * resolution + pixel[..., 1], 0.0).long()
    pixels = resolution * resolution
    # each (cloud, view) gets its own slab of the flat accumulator
    index = (flat + torch.arange(batch * n_views, device=device).view(batch, n_views, 1) * pixels).view(-1)
    total = batch * n_views * pixels
    weight_sum = torch.zeros(total, dtype=torch.float32, device=device).scatter_add_(0, index, weight.view(-1))
    depth_sum = torch.zeros(total, dtype=torch.float32, device=device).scatter_add_(0, index, (z * weight).view(-1))
    weight_sum += weight_sum == 0
    return (depth_sum / weight_sum).view(batch, n_views, resolution, resolution)


def depth_to_images(
    depth: torch.Tensor,
    size: int,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    flatten: bool = True,
) -> torch.Tensor:
    """Depth maps (B, V, R, R) -> 3-channel images at `size`.

    Repeats to 3 channels and resizes with bilinear interpolation, align_corners=True
    (PointCLIP). No mean/std normalisation unless `normalize=(mean, std)` is given.
    Returns (B*V, 3, size, size) when `flatten`, else (B, V, 3, size, size).
    """
    batch, n_views, height, width = depth.shape
    maps = depth.reshape(batch * n_views, 1, height, width).to(torch.float32)
    if (height, width) != (size, size):
        maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=True)
    images = maps.expand(-1, 3, -1, -1).contiguous()
    if normalize is not None:
        mean, std = normalize
        mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        images = (images - mean_t) / std_t
    if not flatten:
        images = images.view(batch, n_views, 3, size, size)
    return images


# PointCLIP V2 realistic projection (zeroshot_cls/trainers/mv_utils_zs.py): views and tilts in projection_specs.py
POINTCLIP_V2_TRANSLATION = (-0.5, -0.5, -1.5)
POINTCLIP_V2_DEPTH = 8
POINTCLIP_V2_OBJ_RATIO = 0.8
POINTCLIP_V2_DEPTH_BIAS = 0.2
POINTCLIP_V2_MAXPOOL = ((1, 7, 7), (0, 2, 2))  # kernel, padding (stride 1)
POINTCLIP_V2_GAUSSIAN = (3, 3.0)  # kernel size, sigma (padding 1)


def gaussian_kernel_2d(size: int, sigma: float) -> torch.Tensor:
    """Normalised (size, size) float32 Gaussian, as get2DGaussianKernel builds it."""
    xs = torch.arange(size, dtype=torch.float32) - size // 2
    kernel_1d = torch.exp(-(xs**2) / (2 * sigma**2))
    kernel = kernel_1d[:, None] @ kernel_1d[None, :]
    return kernel / kernel.sum()


def points_to_grid_v2(
    points: torch.Tensor,
    resolution: int = POINTCLIP_V2_RESOLUTION,
    depth: int = POINTCLIP_V2_DEPTH,
    obj_ratio: float = POINTCLIP_V2_OBJ_RATIO,
    depth_bias: float = POINTCLIP_V2_DEPTH_BIAS,
) -> torch.Tensor:
    """Quantise camera-frame clouds (M, N, 3) into (M, depth, R, R) grids (points2grid).

    Re-centre on the bounding-box centre, scale the longest side to [-1, 1], shrink x, y by
    obj_ratio; x = ceil((x+1)/2*R), y likewise, both clipped to [1, R-2];
    _z = ((z+1)/2 + bias)/(1+bias)*(depth-2), slice index ceil(_z), value clip(_z, 1, depth-2);
    each cell keeps its max value, background 0; the result is laid out [depth, x (row), y (col)].
    """
    count = points.shape[0]
    pmax, pmin = points.max(dim=1)[0], points.min(dim=1)[0]
    centre = ((pmax + pmin) / 2)[:, None, :]
    extent = (pmax - pmin).max(dim=-1)[0][:, None, None]
    extent = torch.where(extent > 0, extent, torch.ones_like(extent))  # a single-point cloud: no 0/0
    pts = (points - centre) / extent * 2.0
    pts = torch.cat([pts[:, :, :2] * obj_ratio, pts[:, :, 2:]], dim=-1)
    x = torch.clip(torch.ceil((pts[:, :, 0] + 1) / 2 * resolution), 1, resolution - 2)
    y = torch.clip(torch.ceil((pts[:, :, 1] + 1) / 2 * resolution), 1, resolution - 2)
    z = ((pts[:, :, 2] + 1) / 2 + depth_bias) / (1 + depth_bias) * (depth - 2)
    z_slice = torch.ceil(z)
    z_value = torch.clip(z, 1, depth - 2)
    cells = depth * resolution * resolution
    flat = (z_slice * resolution * resolution + y * resolution + x).long()
    flat = flat + torch.arange(count, device=points.device)[:, None] * cells
    grid = torch.zeros(count * cells, dtype=torch.float32, device=points.device)
    grid.scatter_reduce_(0, flat.reshape(-1), z_value.reshape(-1), reduce="amax", include_self=True)
    # the reference scatters with x fastest and then transposes, so x ends on the rows
    return grid.view(count, depth, resolution, resolution).transpose(2, 3)


def _window_max(x: torch.Tensor, kernel: int, dim: int) -> torch.Tensor:
    """Stride-1 sliding max of width ``kernel`` along ``dim`` (valid positions only).

    Maxima over 1, 2, 4, ... elements are built by doubling; a window of width k is the max of two
    overlapping power-of-two windows. Exact (max is order-free) and a few passes instead of k.
    """
    length = x.shape[dim]
    span, current = 1, x
    while span * 2 <= kernel:
        current = torch.maximum(current.narrow(dim, 0, current.shape[dim] - span), current.narrow(dim, span, current.shape[dim] - span))
        span *= 2
    out = length - kernel + 1
    return torch.maximum(current.narrow(dim, 0, out), current.narrow(dim, kernel - span, out))


def _max_pool_2d(x: torch.Tensor, kernel: int, padding: int) -> torch.Tensor:
    """Stride-1 max-pool over the last two dims with -inf padding (nn.MaxPool semantics)."""
    x = F.pad(x, (padding, padding, padding, padding), value=float("-inf"))
    return _window_max(_window_max(x, kernel, -2), kernel, -1)


def _filter_2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-padded 'same' correlation of the last two dims with a small odd kernel, as shifted sums."""
    size = kernel.shape[-1]
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad))
    height, width = x.shape[-2:]
    out = torch.zeros_like(x)
    for i in range(size):
        for j in range(size):
            out.add_(padded[..., i : i + height, j : j + width], alpha=float(kernel[i, j]))
    return out


def grid_to_image_v2(grid: torch.Tensor) -> torch.Tensor:
    """(M, depth, R, R) grids -> (M, R', R') images in [0, 1] (Grid2Image, one channel).

    3-D max-pool (kernel (1,7,7), padding (0,2,2), stride 1: R' = R - 2), 3x3 Gaussian
    (sigma 3, padding 1), max over depth, divide by each image's max, invert (1 - img).
    Depth slices empty in every grid are left out: cells are >= 0, so they cannot change the max.
    The Gaussian is summed tap by tap, which can differ from a conv kernel in the last float bit.
    """
    (kernel, padding), (g_size, g_sigma) = POINTCLIP_V2_MAXPOOL, POINTCLIP_V2_GAUSSIAN
    occupied = grid.amax(dim=(0, 2, 3)) > 0
    if occupied.any():
        grid = grid[:, occupied]
    dense = _max_pool_2d(grid, kernel[-1], padding[-1])
    smooth = _filter_2d(dense, gaussian_kernel_2d(g_size, g_sigma).to(grid.device))
    image = smooth.amax(dim=1)
    peak = image.amax(dim=(-2, -1), keepdim=True)
    # an all-empty grid (no points) stays background instead of 0/0
    image = image / torch.where(peak > 0, peak, torch.ones_like(peak))
    return 1 - image


def project_pointclip_v2(
    points: torch.Tensor,
    resolution: int = POINTCLIP_V2_RESOLUTION,
    views: Sequence[Sequence[float]] = POINTCLIP_V2_VIEWS,
    tilts: Sequence[Sequence[float]] | None = POINTCLIP_V2_TILTS,
    depth: int = POINTCLIP_V2_DEPTH,
) -> torch.Tensor:
    """PointCLIP V2 realistic projection: (B, N, 3) -> (B, V, R-2, R-2) images in [0, 1].

    Matches Realistic_Projection.get_img + Grid2Image of the official PointCLIP_V2
    zeroshot_cls/trainers/mv_utils_zs.py: p @ R_view^T @ R_tilt^T - (-0.5, -0.5, -1.5)
    (the translation is undone by the re-centring), view angles and tilts as listed
    (pi/9 for the 8 side views, pi/15 for top and bottom), grid 112 x 112 x depth 8,
    obj_ratio 0.8, depth bias 0.2, max-pool (1,7,7)/(0,2,2) which shrinks 112 to 110,
    Gaussian 3x3 sigma 3, max over depth, per-image max normalisation, 1 - img.
    Background pixels are 1.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    pts = points.to(torch.float32)
    batch = pts.shape[0]
    device = pts.device
    rot_t = view_rotations(views, device=device).transpose(1, 2)
    n_views = rot_t.shape[0]
    if tilts is None:
        tilts = [(0.0, 0.0, 0.0)] * n_views
    if len(tilts) != n_views:
        raise ValueError(f"{len(tilts)} tilts for {n_views} views")
    tilt_t = view_rotations(tilts, device=device).transpose(1, 2)
    translation = torch.tensor(POINTCLIP_V2_TRANSLATION, dtype=torch.float32, device=device)
    camera = torch.matmul(torch.matmul(pts.unsqueeze(1), rot_t.unsqueeze(0)), tilt_t.unsqueeze(0)) - translation
    grid = points_to_grid_v2(camera.reshape(batch * n_views, -1, 3), resolution, depth)
    image = grid_to_image_v2(grid)
    return image.view(batch, n_views, *image.shape[-2:])


def foreground(maps: torch.Tensor, projection: str) -> torch.Tensor:
    """Boolean mask of the pixels a projection filled (anything but its background value)."""
    return maps != PROJECTIONS[projection].background


def patch_foreground(mask: torch.Tensor, image_size: int, grid_size: int) -> torch.Tensor:
    """(..., R, R) foreground masks -> (..., grid, grid) share of each ViT patch's source pixels that are foreground.

    Source pixel r sits at r * (S-1)/(R-1) on the S x S model input (the align_corners=True resize of
    the depth maps), i.e. in patch floor(that / (S/grid)). Mapping pixels instead of resizing the mask
    keeps isolated points when the input is smaller than the map.
    """
    size = mask.shape[-1]
    position = torch.arange(size, dtype=torch.float64) * (image_size - 1) / max(size - 1, 1)
    patch = (position / (image_size / grid_size)).floor().long().clamp(max=grid_size - 1)
    assign = F.one_hot(patch, grid_size).to(torch.float32).T.to(mask.device)  # (grid, R)
    counts = assign.sum(dim=1)
    shares = assign @ mask.to(torch.float32) @ assign.T
    return shares / (counts[:, None] * counts[None, :]).clamp(min=1)

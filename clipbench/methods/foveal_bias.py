"""FALIP's foveal region: pixel boxes -> patch weights on the model's ViT grid, as the official code does.

Input size S, patch size p and grid g = S / p come from the model (B/32 7x7, B/16 14x14, L/14 16x16,
L/14-336 24x24). The official code hard-codes p = 16, g = 14; everything here is generalised:

* ``square`` (official): the image is resized to (S, S) bicubic with no crop, so x scales by S/W and y by
  S/H, each coordinate clipped to [0, S]. ``center_crop``: open_clip's resize of the shorter side to S and
  centre crop; boxes go through the same map and parts outside the crop are dropped.
* A coordinate v maps to patch index ``max(ceil(v / p), 1) - 1``. Rows r0..r1 and columns c0..c1 are both
  inclusive: the official slice ``mask[0, start:end]`` ends at ``1 + r*g + c1 + 1``, so a box within one
  patch column gets that column.
* The weights are computed over h = r1-r0+1 by w = c1-c0+1 patches (Gaussian with sigma in patches, min-max
  normalised with the official 1e-6 terms in float32, times alpha), and written at (r0 + i, c0 + j).
* Several boxes in one region: their weight maps are merged by element-wise max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision import transforms

from clipbench.config.methods import RESIZE_MODES, SHAPES
from clipbench.errors import ConfigError
from clipbench.metrics.boxes import Box


@dataclass(frozen=True)
class PatchGrid:
    """Input size, patch size and grid of a ViT."""

    image_size: int
    patch_size: int
    grid_size: int

    @classmethod
    def of(cls, loaded) -> PatchGrid:
        geometry = loaded.geometry
        if not geometry.patch_size or not geometry.grid_size:
            raise ConfigError("model.arch", f"FALIP needs a ViT image tower with a patch grid; {loaded.arch} has none")
        if geometry.grid_size * geometry.patch_size != geometry.image_size:
            raise ConfigError(
                "model.arch", f"{loaded.arch}: grid {geometry.grid_size} x patch {geometry.patch_size} != input {geometry.image_size}"
            )
        return cls(geometry.image_size, geometry.patch_size, geometry.grid_size)


def region_weights(h: int, w: int, alpha: float, sigma: float = 100.0, shape: str = "gaussian") -> torch.Tensor:
    """(h, w) float32 weights of an h x w patch region (official: Gaussian, min-max normalised, times alpha)."""
    ys = torch.arange(h, dtype=torch.float64)[:, None] - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64)[None, :] - (w - 1) / 2
    if shape == "gaussian":
        m = torch.exp(-(ys**2 + xs**2) / (2 * sigma**2)).float()
        return (m - m.min() + 1e-6) / (m.max() + 1e-6 - m.min()) * alpha
    if shape == "uniform":
        return torch.full((h, w), float(alpha), dtype=torch.float32)
    if shape == "ellipse":
        inside = (ys / (h / 2)) ** 2 + (xs / (w / 2)) ** 2 <= 1
        return inside.float() * alpha
    raise ConfigError("method.shape", f"{shape!r} is not allowed; use one of {list(SHAPES)}")


def patch_index(v: float, patch: int) -> int:
    """The official coordinate -> patch index: ``max(ceil(v / p), 1) - 1``."""
    return max(math.ceil(v / patch), 1) - 1


def box_patch_weights(box: Box, grid: PatchGrid, alpha: float, sigma: float = 100.0, shape: str = "gaussian") -> torch.Tensor:
    """(g, g) weights of one box given in input (S x S) pixel coordinates."""
    x0, y0, x1, y1 = box
    c0, c1 = patch_index(x0, grid.patch_size), patch_index(x1, grid.patch_size)
    r0, r1 = patch_index(y0, grid.patch_size), patch_index(y1, grid.patch_size)
    out = torch.zeros(grid.grid_size, grid.grid_size)
    if r1 < r0 or c1 < c0:
        return out
    weights = region_weights(r1 - r0 + 1, c1 - c0 + 1, alpha, sigma, shape)
    out[r0 : r1 + 1, c0 : c1 + 1] = weights
    return out


def input_box(box: Box, width: int, height: int, size: int, resize: str) -> Box | None:
    """A box on the original image -> the same box on the model input, clipped to it; None if nothing is left."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if resize == "square":
        sx, sy, left, top = size / width, size / height, 0.0, 0.0
    elif resize == "center_crop":
        new_w, new_h = resized_size(width, height, size)
        sx, sy = new_w / width, new_h / height
        left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    else:
        raise ConfigError("method.resize", f"{resize!r} is not allowed; use one of {list(RESIZE_MODES)}")

    def clip(v: float) -> float:
        return min(max(v, 0.0), float(size))

    out = (clip(x0 * sx - left), clip(y0 * sy - top), clip(x1 * sx - left), clip(y1 * sy - top))
    return out if out[2] > out[0] and out[3] > out[1] else None


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)``: the shorter side becomes ``size``, the longer one is truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def region_patch_weights(
    region: Sequence[Box], width: int, height: int, grid: PatchGrid, resize: str,
    alpha: float, sigma: float = 100.0, shape: str = "gaussian",
) -> torch.Tensor:
    """(g, g) merged weights of a region (a union of boxes) on an image of the given size."""
    out = torch.zeros(grid.grid_size, grid.grid_size)
    for box in region:
        mapped = input_box(box, width, height, grid.image_size, resize)
        if mapped is not None:
            out = torch.maximum(out, box_patch_weights(mapped, grid, alpha, sigma, shape))
    return out


def image_transform(loaded, resize: str):
    """``square``: official Resize((S, S)) bicubic, no crop, the model's mean/std; ``center_crop``: open_clip's."""
    if resize == "center_crop":
        return loaded.preprocess
    if resize != "square":
        raise ConfigError("method.resize", f"{resize!r} is not allowed; use one of {list(RESIZE_MODES)}")
    size = loaded.geometry.image_size
    return transforms.Compose([
        _to_rgb,
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        model_normalize(loaded),
    ])


def model_normalize(loaded) -> transforms.Normalize:
    """The mean/std normalisation of the model's own preprocessing."""
    normalize = next((t for t in getattr(loaded.preprocess, "transforms", []) if isinstance(t, transforms.Normalize)), None)
    if normalize is None:
        visual = loaded.model.visual
        normalize = transforms.Normalize(visual.image_mean, visual.image_std)
    return normalize


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")

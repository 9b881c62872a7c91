"""Image-editing visual prompts (crop, blur, red circle, shade, ...) and the logit-summing combination.

Each edit turns (image, boxes of one region) into a new image, so every region costs one image in the
forward pass; all edited images of an ``encode_regions`` call go through the model as one batch.

The drawing functions are pure (PIL in, PIL out) and follow the public code the baselines come from
(allenai/reclip, pumpkin805/FALIP and ylingfeng/FGVP; where a paper and its code differ, the code wins):

* Model input (``resize``): ``square`` (the official default of all three, ``square_size=True``) is
  ``Resize((S, S))`` bicubic with no crop, the input FALIP uses; ``center_crop`` is open_clip's
  shorter-side resize and centre crop (ReCLIP's ``--non_square_size``).
* crop: ReCLIP's PIL crop of the box, optionally enlarged by a margin, clipped to the image.
* blur: ReCLIP's ``GaussianBlur(radius=100)`` of the whole image, the original pasted back through an
  ``ImageDraw.rectangle`` mask of the box, which includes both end coordinates.
* red circle, FGVP variant (``red_circle`` / ``grayscale_circle`` / ``blur_circle`` are FGVP's
  ``circle`` / ``grayscale_circle_mask`` / ``blur_circle_mask``): the shorter side resized to
  ``prompt_size`` (384 in every published command, torchvision's bilinear resize), the prompt drawn with
  OpenCV on the RGB array (ellipse centre and half-axes truncated to integers; the grey is
  ``COLOR_BGR2GRAY`` of the RGB array; grey and blur draw no red ring), then normalised, squashed to
  ``prompt_size`` x ``prompt_size`` and resized bilinearly to the model input.
* red circle, FALIP variant: the outside of the ellipse blurred through an 'L' mask whose one-pixel
  outline holds the L value of the ring colour, then a ring of width ``int(max(W, H) / 200)``: none
  under 200 px, where the outline half-blends.
* shade (CPT): an RGBA tint (240, 0, 30) at alpha 127 over the box; the text becomes
  "{expression} is in red color.".

Several boxes in one region (region classification): ``multi_box=each`` edits every box (all boxes kept
sharp for blur, one ellipse per box, each box tinted), ``multi_box=union`` edits their union box.
Crop always crops the union box.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image, ImageColor, ImageDraw, ImageFilter

from clipbench.config.methods import (
    BLUR_RADIUS,
    FGVP_PROMPT_SIZE,
    RED,
    SHADE_RGBA,
    CombineConfig,
    EditConfig,
    RedCircleConfig,
    member_config,
)
from clipbench.errors import ConfigError
from clipbench.methods.base import METHODS, Method, Region
from clipbench.methods.foveal_bias import image_transform, model_normalize
from clipbench.metrics.boxes import Box, clip_box, expand_box, union_box

# ---------------------------------------------------------------- pure drawing functions


def crop_image(image: Image.Image, box: Box, margin: float = 0.0) -> Image.Image:
    """The box (each side enlarged by ``margin`` x its width/height), clipped to the image, cropped out."""
    region = expand_box(box, margin, image.width, image.height) or (0, 0, image.width, image.height)
    x0, y0, x1, y1 = _int_box(region)  # PIL rounds the same way; a sub-pixel box keeps one pixel
    return image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))


def _int_box(box: Box) -> tuple[int, int, int, int]:
    return tuple(int(round(v)) for v in box)  # type: ignore[return-value]


def blur_outside_boxes(image: Image.Image, boxes: Sequence[Box], radius: float = BLUR_RADIUS, blurred: Image.Image | None = None) -> Image.Image:
    """The whole image Gaussian-blurred, the original pasted back through a rectangle mask of each box
    (``ImageDraw.rectangle`` includes both end coordinates: an 80x60 box keeps 81x61 pixels)."""
    out = (blurred if blurred is not None else image.filter(ImageFilter.GaussianBlur(radius))).copy()
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for box in boxes:
        draw.rectangle(_ordered(box), fill=255)
    out.paste(image, mask=mask)
    return out


def _ordered(box: Box) -> list[float]:
    x0, y0, x1, y1 = box
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def draw_ellipses(image: Image.Image, boxes: Sequence[Box], colour=RED, width: int = 2) -> Image.Image:
    """A copy with the outline of the ellipse inscribed in each box drawn in ``colour`` (width 0: none)."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    for box in boxes:
        draw.ellipse(_ordered(box), outline=tuple(colour), width=int(width))
    return out


def grayscale(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("RGB")


def falip_line_width(width: int, height: int, min_width: int = 0) -> int:
    """FALIP's red-circle line width ``int(max(W, H) / 200)`` (0 under 200 px), at least ``min_width``."""
    return max(int(min_width), int(max(width, height) / 200))


def falip_ellipse_prompt(
    image: Image.Image, boxes: Sequence[Box], outside: Image.Image, colour=RED, min_width: int = 0,
) -> Image.Image:
    """FALIP's circle: ``outside`` with the original pasted through an 'L' mask of the ellipses (fill 255, a
    one-pixel outline at the ring colour's L value, 76 for red), then the ring of ``falip_line_width``."""
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    outline = ImageColor.getcolor("#{:02x}{:02x}{:02x}".format(*colour), "L")
    for box in boxes:
        draw.ellipse(_ordered(box), outline=outline, fill=255)
    out = outside.copy()
    out.paste(image, mask=mask)
    return draw_ellipses(out, boxes, colour, falip_line_width(*image.size, min_width))


def red_circle_falip(
    image: Image.Image, boxes: Sequence[Box], blur_radius: float = BLUR_RADIUS, blurred: Image.Image | None = None,
    colour=RED, min_width: int = 0,
) -> Image.Image:
    """FALIP's red circle baseline: blur outside the ellipse, then a red ellipse of width int(max(W,H)/200)."""
    outside = blurred if blurred is not None else image.filter(ImageFilter.GaussianBlur(blur_radius))
    return falip_ellipse_prompt(image, boxes, outside, colour, min_width)


FGVP_OUTSIDE = ("none", "grayscale", "blur")  # FGVP's circle, grayscale_circle_mask, blur_circle_mask


@dataclass
class FgvpImage:
    """An image resized for FGVP's prompts: the RGB array, the x/y scale, its blurred copy if needed."""

    pixels: np.ndarray
    sx: float
    sy: float
    blurred: Image.Image | None = None


def fgvp_resize(image: Image.Image, size: int = FGVP_PROMPT_SIZE, blur_radius: float | None = None) -> FgvpImage:
    """FGVP's ResizeShortestSide: the shorter side to ``size`` (sides ``int(v + 0.5)``), torchvision's resize."""
    w, h = image.size
    scale = size * 1.0 / min(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = TF.resize(image.convert("RGB"), [new_h, new_w])
    blurred = resized.filter(ImageFilter.GaussianBlur(blur_radius)) if blur_radius is not None else None
    return FgvpImage(np.array(resized), new_w / w, new_h / h, blurred)


def fgvp_ellipses(boxes: Sequence[Box], resized: FgvpImage) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(centre, half-axes) of each box's ellipse on the resized image: FGVP's float32 box scaling and
    ``boxes_to_circles`` (clamped to W-1 / H-1), truncated to integers for ``cv2.ellipse``."""
    height, width = resized.pixels.shape[:2]
    b = torch.tensor([list(box) for box in boxes], dtype=torch.float32).reshape(-1, 4)
    b[:, 0::2] = b[:, 0::2] * resized.sx
    b[:, 1::2] = b[:, 1::2] * resized.sy
    b[:, 0::2] = torch.clamp(b[:, 0::2], 0, width - 1)
    b[:, 1::2] = torch.clamp(b[:, 1::2], 0, height - 1)
    sizes = torch.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1)
    centres = b[:, 0:2] + 0.5 * sizes
    axes = sizes / 2
    return [(tuple(int(v) for v in c), tuple(int(v) for v in a)) for c, a in zip(centres.numpy(), axes.numpy())]


def fgvp_prompt(resized: FgvpImage, boxes: Sequence[Box], outside: str = "none", thickness: int = 2, colour=RED) -> np.ndarray:
    """FGVP's prompt drawn on the resized RGB array: a red ellipse (``none``), or grey / blur outside it."""
    res = resized.pixels.copy()
    ellipses = fgvp_ellipses(boxes, resized)
    if outside == "none":
        for centre, axes in ellipses:
            cv2.ellipse(res, centre, axes, 0, 0, 360, color=tuple(int(c) for c in colour), thickness=int(thickness))
        return res
    inside = np.zeros(res.shape, dtype=np.uint8)
    for centre, axes in ellipses:
        cv2.ellipse(inside, centre, axes, 0, 0, 360, color=(255, 255, 255), thickness=-1)
    inside = inside[:, :, 0]
    if outside == "grayscale":
        gray = cv2.cvtColor(res, cv2.COLOR_BGR2GRAY)[:, :, None].repeat(3, -1)
        res[inside == 0] = gray[inside == 0]
        return res
    if outside != "blur":
        raise ConfigError("method.outside", f"{outside!r} is not allowed; use one of {list(FGVP_OUTSIDE)}")
    out = resized.blurred.copy()
    out.paste(Image.fromarray(res), mask=Image.fromarray(inside))
    return np.array(out)


def fgvp_model_input(prompts: Sequence[np.ndarray], mean, std, input_size: int, prompt_size: int = FGVP_PROMPT_SIZE) -> torch.Tensor:
    """FGVP's 'resize' processing: normalise the uint8 arrays, squash to ``prompt_size``, then resize to the model."""
    x = torch.from_numpy(np.stack(prompts)).float().permute(0, 3, 1, 2)
    x = (x - torch.tensor(mean).view(-1, 1, 1) * 255.0) / (torch.tensor(std).view(-1, 1, 1) * 255.0)
    x = F.interpolate(x, (prompt_size, prompt_size), mode="bilinear", align_corners=False)
    return F.interpolate(x, (input_size, input_size), mode="bilinear", align_corners=False)


def shade_boxes(image: Image.Image, boxes: Sequence[Box], rgba=SHADE_RGBA) -> Image.Image:
    """CPT's shade: an RGBA tint alpha-composited over each box (overlapping boxes are tinted once)."""
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for box in boxes:
        draw.rectangle(_ordered(box), fill=tuple(rgba))
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


# ---------------------------------------------------------------- methods


class ImageEditMethod(Method):
    """One edited image per region; all edited images of a call are encoded as one batch."""

    def __init__(self, cfg: EditConfig, model):
        super().__init__(cfg, model)
        self.transform = image_transform(model, cfg.resize)

    def prepare(self, image: Image.Image) -> Any:
        """Per-image work shared by all of its regions (e.g. the blurred copy)."""
        return None

    def edit(self, image: Image.Image, boxes: list[Box], shared: Any) -> Image.Image:
        raise NotImplementedError

    def region_boxes(self, image: Image.Image, region: Region) -> list[Box]:
        boxes = [b for b in (clip_box(b, image.width, image.height) for b in region) if b is not None]
        if not boxes:  # an empty region stands for the whole image
            return [(0.0, 0.0, float(image.width), float(image.height))]
        return [union_box(boxes)] if self.cfg.multi_box == "union" else boxes

    def edited_images(self, image: Image.Image, regions: Sequence[Region]) -> list[Image.Image]:
        shared = self.prepare(image)
        return [self.edit(image, self.region_boxes(image, region), shared) for region in regions]

    def _model_inputs(self, image: Image.Image, regions: Sequence[Region]) -> list[torch.Tensor]:
        return [self.transform(im) for im in self.edited_images(image, regions)]

    def encode_regions(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]]) -> list[torch.Tensor]:
        # PIL releases the GIL while it filters and resizes, so images are edited on threads
        per_image = list(_edit_pool().map(self._model_inputs, images, regions)) if len(images) > 1 else [
            self._model_inputs(im, regs) for im, regs in zip(images, regions)
        ]
        inputs = [t for tensors in per_image for t in tensors]
        if not inputs:
            return [torch.empty(0, 0) for _ in images]
        feats = self.model.encode_image(torch.stack(inputs))
        return list(torch.split(feats, [len(r) for r in regions]))


@lru_cache(maxsize=1)
def _edit_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="visual-prompt")


class CropMethod(ImageEditMethod):
    def region_boxes(self, image, region):
        return [union_box(super().region_boxes(image, region))]

    def edit(self, image, boxes, shared):
        return crop_image(image, boxes[0], self.cfg.margin)


class BlurMethod(ImageEditMethod):
    def prepare(self, image):
        return image.filter(ImageFilter.GaussianBlur(self.cfg.radius))

    def edit(self, image, boxes, shared):
        return blur_outside_boxes(image, boxes, blurred=shared)


class RedCircleMethod(ImageEditMethod):
    outside = "none"  # FGVP's circle; grayscale / blur: grayscale_circle_mask / blur_circle_mask

    def __init__(self, cfg: RedCircleConfig, model):
        super().__init__(cfg, model)
        normalize = model_normalize(model)
        self.mean, self.std = list(normalize.mean), list(normalize.std)
        self.prompt_size = cfg.prompt_size or model.geometry.image_size

    def prepare(self, image):
        if self.cfg.variant == "falip":
            return image.filter(ImageFilter.GaussianBlur(self.cfg.radius))
        return fgvp_resize(image, self.prompt_size, self.cfg.radius if self.outside == "blur" else None)

    def edit(self, image, boxes, shared):
        if self.cfg.variant == "falip":
            return red_circle_falip(image, boxes, blurred=shared, colour=self.cfg.colour, min_width=self.cfg.min_width)
        return Image.fromarray(fgvp_prompt(shared, boxes, self.outside, self.cfg.thickness, self.cfg.colour))

    def _model_inputs(self, image, regions):
        if self.cfg.variant == "falip":
            return super()._model_inputs(image, regions)
        prompts = [np.asarray(im) for im in self.edited_images(image, regions)]
        if not prompts:
            return []
        size = self.model.geometry.image_size
        return list(fgvp_model_input(prompts, self.mean, self.std, size, self.prompt_size))


class GrayscaleCircleMethod(RedCircleMethod):
    outside = "grayscale"

    def prepare(self, image):
        return grayscale(image) if self.cfg.variant == "falip" else super().prepare(image)

    def edit(self, image, boxes, shared):
        if self.cfg.variant == "falip":
            return falip_ellipse_prompt(image, boxes, shared, self.cfg.colour, self.cfg.min_width)
        return super().edit(image, boxes, shared)


class BlurCircleMethod(RedCircleMethod):
    outside = "blur"


class ShadeMethod(ImageEditMethod):
    def edit(self, image, boxes, shared):
        return shade_boxes(image, boxes, self.cfg.rgba)

    def text(self, expression: str, template: str = "{}") -> str:
        """CPT's text replaces the task's template: "{expression} is in red color."."""
        return self.cfg.text_template.format(expression)


# ---------------------------------------------------------------- combination by summed logits


class CombineMethod(Method):
    """Sums the members' logits: the feature is the sum of the members' L2-normalised features.

    It is deliberately not re-normalised, so ``logit_scale * feature @ text`` equals the sum of the
    members' logits. Members must score the same text (a text-changing prompt such as shade cannot join).
    """

    def __init__(self, cfg: CombineConfig, model):
        super().__init__(cfg, model)
        self.members = [METHODS.get(n).build(member_config(n, cfg.member_params.get(n)), model) for n in cfg.members]
        texts = {m.text("{}", "a photo of {}") for m in self.members}
        if len(texts) > 1:
            raise ConfigError("method.members", f"{cfg.members} score different texts ({sorted(texts)}); their logits cannot be summed")

    def text(self, expression: str, template: str = "{}") -> str:
        return self.members[0].text(expression, template)

    def encode_regions(self, images, regions):
        per_member = [m.encode_regions(images, regions) for m in self.members]
        return [torch.stack(feats).sum(dim=0) for feats in zip(*per_member)]

"""Image-editing visual prompts (crop, blur, red circle, shade, ...) and the logit-summing combination.

Each edit turns (image, boxes of one region) into a new PIL image, so every region costs one image in
the forward pass; all edited images of an ``encode_regions`` call go through the model as one batch.

The drawing functions are pure (PIL in, PIL out) and follow the public code the baselines come from
(allenai/reclip, pumpkin805/FALIP and ylingfeng/FGVP; where a paper and its code differ, the code wins):

* crop: ReCLIP's PIL crop of the box, optionally enlarged by a margin, clipped to the image.
* blur: ReCLIP's ``GaussianBlur(radius=100)`` of the whole image with the box pasted back.
* red circle, FGVP variant: the image is first resized to the CLIP input size (shorter side = S, the
  resize the model's preprocessing applies), then the ellipse inscribed in the box is drawn in
  (255, 0, 0) with thickness 2. ``grayscale_circle`` / ``blur_circle`` also grey out / blur (PIL
  radius = Gaussian std = 100) everything outside the ellipse.
* red circle, FALIP variant: a red ellipse of line width max(W, H)/200 on the original image, and the
  outside of the ellipse blurred.
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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFilter

from clipbench.errors import ConfigError
from clipbench.methods.base import METHODS, Method, MethodConfig, Region, register_method
from clipbench.metrics.boxes import Box, clip_box, expand_box, union_box

RED = (255, 0, 0)
SHADE_RGBA = (240, 0, 30, 127)
BLUR_RADIUS = 100.0


# ---------------------------------------------------------------- pure drawing functions


def crop_image(image: Image.Image, box: Box, margin: float = 0.0) -> Image.Image:
    """The box (each side enlarged by ``margin`` x its width/height), clipped to the image, cropped out."""
    region = expand_box(box, margin, image.width, image.height) or (0, 0, image.width, image.height)
    x0, y0, x1, y1 = _int_box(region)  # PIL rounds the same way; a sub-pixel box keeps one pixel
    return image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))


def _int_box(box: Box) -> tuple[int, int, int, int]:
    return tuple(int(round(v)) for v in box)  # type: ignore[return-value]


def blur_outside_boxes(image: Image.Image, boxes: Sequence[Box], radius: float = BLUR_RADIUS, blurred: Image.Image | None = None) -> Image.Image:
    """The whole image Gaussian-blurred, with the original pixels of each box pasted back."""
    out = (blurred if blurred is not None else image.filter(ImageFilter.GaussianBlur(radius))).copy()
    for box in boxes:
        x0, y0, x1, y1 = _int_box(box)
        if x1 > x0 and y1 > y0:
            out.paste(image.crop((x0, y0, x1, y1)), (x0, y0))
    return out


def ellipse_mask(size: tuple[int, int], boxes: Sequence[Box]) -> Image.Image:
    """An 'L' mask that is 255 inside (and on) the ellipses inscribed in ``boxes``."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for box in boxes:
        draw.ellipse(_ordered(box), fill=255)
    return mask


def _ordered(box: Box) -> list[float]:
    x0, y0, x1, y1 = box
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def draw_ellipses(image: Image.Image, boxes: Sequence[Box], colour=RED, width: int = 2) -> Image.Image:
    """A copy with the outline of the ellipse inscribed in each box drawn in ``colour``."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    for box in boxes:
        draw.ellipse(_ordered(box), outline=tuple(colour), width=max(1, int(width)))
    return out


def replace_outside_ellipses(image: Image.Image, boxes: Sequence[Box], outside: Image.Image) -> Image.Image:
    """``image`` inside the ellipses inscribed in ``boxes``, ``outside`` everywhere else."""
    return Image.composite(image, outside, ellipse_mask(image.size, boxes))


def grayscale(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("RGB")


def resize_short_side(image: Image.Image, size: int) -> tuple[Image.Image, float, float]:
    """Resized (bicubic) so the shorter side is ``size``; returns the x and y scale factors too."""
    w, h = image.size
    scale = size / min(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(new, Image.BICUBIC), new[0] / w, new[1] / h


def scale_box(box: Box, sx: float, sy: float) -> Box:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def red_circle_fgvp(
    image: Image.Image, boxes: Sequence[Box], input_size: int, thickness: int = 2, outside: str = "none",
    blur_radius: float = BLUR_RADIUS, colour=RED,
) -> Image.Image:
    """FGVP's red circle: resize to the CLIP input size, optionally blur/grey the outside, draw the ellipse."""
    resized = fgvp_resized(image, input_size, outside, blur_radius)
    return red_circle_on_resized(resized, boxes, thickness, colour)


def fgvp_resized(image: Image.Image, input_size: int, outside: str = "none", blur_radius: float = BLUR_RADIUS):
    """(resized image, x scale, y scale, replacement for the outside of the ellipse or None)."""
    resized, sx, sy = resize_short_side(image, input_size)
    if outside == "blur":
        replacement = resized.filter(ImageFilter.GaussianBlur(blur_radius))
    elif outside == "grayscale":
        replacement = grayscale(resized)
    else:
        replacement = None
    return resized, sx, sy, replacement


def red_circle_on_resized(resized, boxes: Sequence[Box], thickness: int = 2, colour=RED) -> Image.Image:
    image, sx, sy, replacement = resized
    scaled = [scale_box(b, sx, sy) for b in boxes]
    if replacement is not None:
        image = replace_outside_ellipses(image, scaled, replacement)
    return draw_ellipses(image, scaled, colour, thickness)


def falip_line_width(width: int, height: int) -> int:
    """FALIP's red-circle line width, max(W, H) / 200, as a whole number of pixels (at least 1)."""
    return max(1, int(max(width, height) / 200))


def red_circle_falip(
    image: Image.Image, boxes: Sequence[Box], blur_radius: float = BLUR_RADIUS, blurred: Image.Image | None = None,
    colour=RED,
) -> Image.Image:
    """FALIP's red circle baseline: blur outside the ellipse, then a red ellipse of width max(W,H)/200."""
    outside = blurred if blurred is not None else image.filter(ImageFilter.GaussianBlur(blur_radius))
    kept = replace_outside_ellipses(image, boxes, outside)
    return draw_ellipses(kept, boxes, colour, falip_line_width(*image.size))


def shade_boxes(image: Image.Image, boxes: Sequence[Box], rgba=SHADE_RGBA) -> Image.Image:
    """CPT's shade: an RGBA tint alpha-composited over each box (overlapping boxes are tinted once)."""
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for box in boxes:
        draw.rectangle(_ordered(box), fill=tuple(rgba))
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


# ---------------------------------------------------------------- methods


@dataclass
class EditConfig(MethodConfig):
    multi_box: str = "each"  # several boxes in one region: each | union

    def validate(self) -> None:
        super().validate()
        if self.multi_box not in ("each", "union"):
            raise ConfigError("method.multi_box", f"{self.multi_box!r} is not allowed; use each or union")


class ImageEditMethod(Method):
    """One edited image per region; all edited images of a call are encoded as one batch."""

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
        return [self.model.preprocess(im) for im in self.edited_images(image, regions)]

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


@dataclass
class CropConfig(EditConfig):
    name: str = "crop"
    margin: float = 0.0  # each side enlarged by this fraction of the box's width/height

    def validate(self) -> None:
        super().validate()
        if self.margin < 0:
            raise ConfigError("method.margin", f"must be >= 0, got {self.margin}")


@register_method("crop", CropConfig)
class CropMethod(ImageEditMethod):
    def region_boxes(self, image, region):
        return [union_box(super().region_boxes(image, region))]

    def edit(self, image, boxes, shared):
        return crop_image(image, boxes[0], self.cfg.margin)


@dataclass
class BlurConfig(EditConfig):
    name: str = "blur"
    radius: float = BLUR_RADIUS  # PIL GaussianBlur radius (the Gaussian's standard deviation)

    def validate(self) -> None:
        super().validate()
        if self.radius < 0:
            raise ConfigError("method.radius", f"must be >= 0, got {self.radius}")


@register_method("blur", BlurConfig)
class BlurMethod(ImageEditMethod):
    def prepare(self, image):
        return image.filter(ImageFilter.GaussianBlur(self.cfg.radius))

    def edit(self, image, boxes, shared):
        return blur_outside_boxes(image, boxes, blurred=shared)


@dataclass
class RedCircleConfig(EditConfig):
    name: str = "red_circle"
    variant: str = "fgvp"  # fgvp (resize, then thickness-2 ellipse) | falip (width max(W,H)/200 + blur outside)
    thickness: int = 2  # fgvp variant only
    colour: list[int] = field(default_factory=lambda: list(RED))
    radius: float = BLUR_RADIUS  # blur outside the ellipse (falip variant, blur_circle)

    def validate(self) -> None:
        super().validate()
        if self.variant not in ("fgvp", "falip"):
            raise ConfigError("method.variant", f"{self.variant!r} is not allowed; use fgvp or falip")
        if self.thickness < 1:
            raise ConfigError("method.thickness", f"must be >= 1, got {self.thickness}")
        if len(self.colour) != 3 or not all(0 <= c <= 255 for c in self.colour):
            raise ConfigError("method.colour", f"must be three values in 0..255, got {self.colour}")


@register_method("red_circle", RedCircleConfig)
class RedCircleMethod(ImageEditMethod):
    outside = "none"

    def prepare(self, image):
        if self.cfg.variant == "falip":
            return image.filter(ImageFilter.GaussianBlur(self.cfg.radius))
        return fgvp_resized(image, self.model.geometry.image_size, self.outside, self.cfg.radius)

    def edit(self, image, boxes, shared):
        if self.cfg.variant == "falip":
            return red_circle_falip(image, boxes, blurred=shared, colour=self.cfg.colour)
        return red_circle_on_resized(shared, boxes, self.cfg.thickness, self.cfg.colour)


@dataclass
class GrayscaleCircleConfig(RedCircleConfig):
    name: str = "grayscale_circle"


@register_method("grayscale_circle", GrayscaleCircleConfig)
class GrayscaleCircleMethod(RedCircleMethod):
    outside = "grayscale"

    def prepare(self, image):
        return grayscale(image) if self.cfg.variant == "falip" else super().prepare(image)

    def edit(self, image, boxes, shared):
        if self.cfg.variant == "falip":
            kept = replace_outside_ellipses(image, boxes, shared)
            return draw_ellipses(kept, boxes, self.cfg.colour, falip_line_width(*image.size))
        return super().edit(image, boxes, shared)


@dataclass
class BlurCircleConfig(RedCircleConfig):
    name: str = "blur_circle"


@register_method("blur_circle", BlurCircleConfig)
class BlurCircleMethod(RedCircleMethod):
    outside = "blur"


@dataclass
class ShadeConfig(EditConfig):
    name: str = "shade"
    rgba: list[int] = field(default_factory=lambda: list(SHADE_RGBA))
    text_template: str = "{} is in red color."

    def validate(self) -> None:
        super().validate()
        if len(self.rgba) != 4 or not all(0 <= c <= 255 for c in self.rgba):
            raise ConfigError("method.rgba", f"must be four values in 0..255, got {self.rgba}")
        if self.text_template.count("{}") != 1:
            raise ConfigError("method.text_template", "needs exactly one '{}'")


@register_method("shade", ShadeConfig)
class ShadeMethod(ImageEditMethod):
    def edit(self, image, boxes, shared):
        return shade_boxes(image, boxes, self.cfg.rgba)

    def text(self, expression: str, template: str = "{}") -> str:
        """CPT's text replaces the task's template: "{expression} is in red color."."""
        return self.cfg.text_template.format(expression)


# ---------------------------------------------------------------- combination by summed logits


@dataclass
class CombineConfig(MethodConfig):
    name: str = "combine"
    members: list[str] = field(default_factory=lambda: ["crop", "blur"])  # ReCLIP's isolation proposals
    member_params: dict[str, Any] = field(default_factory=dict)  # e.g. {crop: {margin: 0.1}}

    def validate(self) -> None:
        super().validate()
        if not self.members:
            raise ConfigError("method.members", "needs at least one method name")
        for name in self.members:
            if name in ("combine", "ensemble") or name not in METHODS:
                allowed = sorted(set(METHODS.names()) - {"combine", "ensemble"})
                raise ConfigError("method.members", f"{name!r} is not allowed; choose from {allowed}")
        unknown = set(self.member_params) - set(self.members)
        if unknown:
            raise ConfigError("method.member_params", f"{sorted(unknown)} are not in method.members={self.members}")
        for name in self.members:
            member_config(name, self.member_params.get(name))


def member_config(name: str, params: dict | None):
    from clipbench.config import to_schema

    return to_schema(METHODS.get(name).config, {"name": name, **(params or {})}, f"method.member_params.{name}")


@register_method("combine", CombineConfig)
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
        self.region_free = all(m.region_free for m in self.members)

    def text(self, expression: str, template: str = "{}") -> str:
        return self.members[0].text(expression, template)

    def encode_regions(self, images, regions):
        per_member = [m.encode_regions(images, regions) for m in self.members]
        return [torch.stack(feats).sum(dim=0) for feats in zip(*per_member)]

"""Every method's config: its keys and their defaults, stated once (conf/method/<name>.yaml extends them).

Torch-free, so Hydra composes a config and ``validate`` finds mistakes before torch is imported (FALIP's layer and
head syntax: clipbench/models/head_specs.py). ``METHOD_CONFIGS`` pairs each method name with its config
(clipbench/methods/__init__.py names the code of each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from clipbench.data.templates import has_one_field
from clipbench.errors import ConfigError

SHAPES = ("gaussian", "uniform", "ellipse")  # FALIP's foveal map: clipbench/methods/foveal_bias.py
RESIZE_MODES = ("square", "center_crop")  # model input: square (official Resize((S,S)), no crop) | open_clip's


def non_negative(key: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"method.{key}", f"must be >= 0, got {value}")


@dataclass
class MethodConfig:
    name: str = "clip"
    subtract: bool = False
    region: str = "full"  # for tasks without boxes: full | center:<fraction>
    # keys that may differ between configs evaluated in one pass over the data (clipbench/grouped.py); none:
    # every config of this method runs alone
    shared_pass_keys: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        parse_region_prior(self.region)

    def check_tower(self, depth: int, num_heads: int) -> None:
        """Ranges that depend on the image tower (checked from the model's config, before it loads)."""

    def sees_regions(self) -> bool:
        """Whether a region's feature depends on its boxes; a method whose features ignore them (plain CLIP)
        scores every proposal of an image alike, so it cannot pick one (tasks refuse it where they must)."""
        return True


def parse_region_prior(spec: str) -> float:
    """``full`` -> 1.0, ``center:<f>`` -> f in (0, 1]."""
    if spec == "full":
        return 1.0
    if spec.startswith("center:"):
        try:
            frac = float(spec.split(":", 1)[1])
        except ValueError:
            frac = -1.0
        if 0 < frac <= 1:
            return frac
    raise ConfigError("method.region", f"{spec!r} is not allowed; use full or center:<fraction in (0,1]>")


@dataclass
class ClipConfig(MethodConfig):
    name: str = "clip"
    resize: str = "center_crop"  # center_crop (the model's own preprocessing) | square (FALIP's input, Resize((S, S)))

    def validate(self) -> None:
        super().validate()
        if self.resize not in RESIZE_MODES:
            raise ConfigError("method.resize", f"{self.resize!r} is not allowed; use one of {list(RESIZE_MODES)}")

    def sees_regions(self) -> bool:
        return False  # the whole image, whatever the boxes


DEFAULT_LAYERS = [-4, -3, -2, -1]


@dataclass
class FalipConfig(MethodConfig):
    name: str = "falip"
    alpha: float = 0.2
    sigma: float = 100.0
    shape: str = "gaussian"
    rows: str = "cls"
    layers: Any = field(default_factory=lambda: list(DEFAULT_LAYERS))
    heads: Any = "all"
    resize: str = "square"
    fast: bool = True
    # the bias only: the images, their preprocessing (resize) and the blocks before the first biased one are shared
    shared_pass_keys: ClassVar[tuple[str, ...]] = ("alpha", "sigma", "shape", "rows", "layers", "heads", "fast")

    def validate(self) -> None:
        super().validate()
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise ConfigError("method.alpha", f"must be a finite number >= 0, got {self.alpha}")
        if not math.isfinite(self.sigma) or self.sigma <= 0:
            raise ConfigError("method.sigma", f"must be a finite number > 0, got {self.sigma}")
        from clipbench.models.head_specs import ROWS, check_heads_spec, resolve_layers

        for key, value, allowed in (("shape", self.shape, SHAPES), ("rows", self.rows, ROWS), ("resize", self.resize, RESIZE_MODES)):
            if value not in allowed:
                raise ConfigError(f"method.{key}", f"{value!r} is not allowed; use one of {list(allowed)}")
        resolve_layers(self.layers, depth=10**6)  # syntax only; the range is checked against the model
        check_heads_spec(self.heads)

    def check_tower(self, depth: int, num_heads: int) -> None:
        from clipbench.models.head_specs import head_scale_rows, resolve_layers

        head_scale_rows(self.heads, resolve_layers(self.layers, depth), num_heads)


@dataclass
class EnsembleConfig(MethodConfig):
    name: str = "ensemble"
    # the members besides model.*: open_clip arch + pretrained tag or checkpoint file (ReCLIP's: RN50x16 with ViT-B/32)
    models: list[Any] = field(default_factory=lambda: [{"arch": "RN50x16", "pretrained": "openai"}])
    method: str = "crop"  # the prompt every model uses
    method_params: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if not self.models:
            raise ConfigError("method.models", "needs at least one extra model, e.g. [{arch: RN50x16, pretrained: openai}]")
        for i, spec in enumerate(self.models):
            if not isinstance(spec, dict) or "arch" not in spec or set(spec) - {"arch", "pretrained", "precision"}:
                raise ConfigError(f"method.models[{i}]", f"needs arch (and optionally pretrained, precision), got {spec}")
        if self.method == "ensemble" or self.method not in METHOD_CONFIGS:
            raise ConfigError("method.method", f"{self.method!r} is not allowed; choose from {sorted(set(METHOD_CONFIGS) - {'ensemble'})}")
        member_config(self.method, self.method_params)

    def sees_regions(self) -> bool:
        return member_config(self.method, self.method_params).sees_regions()


RED = (255, 0, 0)


SHADE_RGBA = (240, 0, 30, 127)


BLUR_RADIUS = 100.0


FGVP_PROMPT_SIZE = 384


@dataclass
class EditConfig(MethodConfig):
    multi_box: str = "each"  # several boxes in one region: each | union
    resize: str = "square"  # model input: square (official Resize((S, S)), no crop) | center_crop (open_clip's)

    def validate(self) -> None:
        super().validate()
        if self.multi_box not in ("each", "union"):
            raise ConfigError("method.multi_box", f"{self.multi_box!r} is not allowed; use each or union")
        if self.resize not in RESIZE_MODES:
            raise ConfigError("method.resize", f"{self.resize!r} is not allowed; use one of {list(RESIZE_MODES)}")


@dataclass
class CropConfig(EditConfig):
    name: str = "crop"
    multi_box: str = "union"  # several boxes: one crop of their union box (ReCLIP crops one rectangle)
    margin: float = 0.0  # each side enlarged by this fraction of the box's width/height

    def validate(self) -> None:
        super().validate()
        non_negative("margin", self.margin)


@dataclass
class BlurConfig(EditConfig):
    name: str = "blur"
    radius: float = BLUR_RADIUS  # PIL GaussianBlur radius (the Gaussian's standard deviation)

    def validate(self) -> None:
        super().validate()
        non_negative("radius", self.radius)


@dataclass
class RedCircleConfig(EditConfig):
    name: str = "red_circle"
    variant: str = "fgvp"  # fgvp (OpenCV prompt at prompt_size, thickness 2) | falip (width int(max(W,H)/200), blur outside)
    thickness: int = 2  # fgvp variant's red ellipse
    colour: list[int] = field(default_factory=lambda: list(RED))
    radius: float = BLUR_RADIUS  # blur outside the ellipse (falip variant, blur_circle)
    prompt_size: int | None = FGVP_PROMPT_SIZE  # fgvp variant: shorter side before drawing, then squashed; null = the model input
    min_width: int = 0  # falip variant: ring width at least this (0 = official, no ring under 200 px)

    def validate(self) -> None:
        super().validate()
        if self.variant not in ("fgvp", "falip"):
            raise ConfigError("method.variant", f"{self.variant!r} is not allowed; use fgvp or falip")
        if self.thickness < 1:
            raise ConfigError("method.thickness", f"must be >= 1, got {self.thickness}")
        if len(self.colour) != 3 or not all(0 <= c <= 255 for c in self.colour):
            raise ConfigError("method.colour", f"must be three values in 0..255, got {self.colour}")
        if self.prompt_size is not None and self.prompt_size < 1:
            raise ConfigError("method.prompt_size", f"must be >= 1 or null, got {self.prompt_size}")
        non_negative("min_width", self.min_width)


@dataclass
class GrayscaleCircleConfig(RedCircleConfig):
    name: str = "grayscale_circle"


@dataclass
class BlurCircleConfig(RedCircleConfig):
    name: str = "blur_circle"


@dataclass
class ShadeConfig(EditConfig):
    name: str = "shade"
    rgba: list[int] = field(default_factory=lambda: list(SHADE_RGBA))
    text_template: str = "{} is in red color."

    def validate(self) -> None:
        super().validate()
        if len(self.rgba) != 4 or not all(0 <= c <= 255 for c in self.rgba):
            raise ConfigError("method.rgba", f"must be four values in 0..255, got {self.rgba}")
        if not has_one_field(self.text_template):
            raise ConfigError("method.text_template", f"needs exactly one '{{}}' and no other field, got {self.text_template!r}")


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
            if name in ("combine", "ensemble") or name not in METHOD_CONFIGS:
                allowed = sorted(set(METHOD_CONFIGS) - {"combine", "ensemble"})
                raise ConfigError("method.members", f"{name!r} is not allowed; choose from {allowed}")
        unknown = set(self.member_params) - set(self.members)
        if unknown:
            raise ConfigError("method.member_params", f"{sorted(unknown)} are not in method.members={self.members}")
        for name in self.members:
            member_config(name, self.member_params.get(name))

    def sees_regions(self) -> bool:
        return any(member_config(n, self.member_params.get(n)).sees_regions() for n in self.members)


def member_config(name: str, params: dict | None) -> MethodConfig:
    """The config of a member method of combine or ensemble (``method.member_params.<name>``)."""
    from clipbench.config import to_schema

    return to_schema(METHOD_CONFIGS[name], {"name": name, **(params or {})}, f"method.member_params.{name}")


METHOD_CONFIGS: dict[str, type[MethodConfig]] = {
    "clip": ClipConfig,
    "falip": FalipConfig,
    "ensemble": EnsembleConfig,
    "crop": CropConfig,
    "blur": BlurConfig,
    "red_circle": RedCircleConfig,
    "grayscale_circle": GrayscaleCircleConfig,
    "blur_circle": BlurCircleConfig,
    "shade": ShadeConfig,
    "combine": CombineConfig,
}

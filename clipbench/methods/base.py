"""The method interface: (images, regions) -> one L2-normalised feature per region.

A region is a list of boxes ``(x0, y0, x1, y1)`` in pixel coordinates of the original image; several
boxes in one region are treated as their union (FALIP's merged mask, region classification).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipbench.config.methods import METHOD_CONFIGS, MethodConfig, parse_region_prior
from clipbench.metrics.boxes import Box
from clipbench.registry import Registry

if TYPE_CHECKING:  # config checks read the registry without torch
    import torch
    from PIL import Image

Region = Sequence[Box]


def prior_box(width: int, height: int, spec: str) -> Box:
    """The box a region prior stands for on an image of the given size."""
    frac = parse_region_prior(spec)
    w, h = width * frac, height * frac
    x0, y0 = (width - w) / 2, (height - h) / 2
    return (x0, y0, x0 + w, y0 + h)


class Method(ABC):
    """Turns images and their regions into features; clipbench/methods/__init__.py names each subclass."""

    def __init__(self, cfg: MethodConfig, model):
        self.cfg = cfg
        self.model = model

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "region_free" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: region_free is derived from encode_regions and cannot be declared")

    @property
    def region_free(self) -> bool:
        """True when the features are plain CLIP's whole-image embedding, so tasks may take the batched
        ``model.encode_image`` path instead. Derived from behaviour: only an ``encode_regions`` marked
        with ``@whole_image`` qualifies, and a subclass that overrides it loses the mark."""
        return getattr(type(self).encode_regions, "whole_image", False)

    def text(self, expression: str, template: str = "{}") -> str:
        """The text a candidate expression is scored against; prompts that change the text override it."""
        return template.format(expression)

    def text_features(self, texts: Sequence[str], cache_dir: str | None = None) -> torch.Tensor:
        """(N, D) normalised text features that match this method's region features."""
        from clipbench.models.text_cache import text_features

        return text_features(self.model, texts, cache_dir)

    def classifier(self, classnames: Sequence[str], templates: Sequence[str], cache_dir: str | None = None) -> torch.Tensor:
        """(D, C) zero-shot classifier that matches this method's region features."""
        from clipbench.models.text_cache import zero_shot_classifier

        return zero_shot_classifier(self.model, classnames, templates, cache_dir)

    @abstractmethod
    def encode_regions(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]]) -> list[torch.Tensor]:
        """For image i, a (len(regions[i]), D) tensor of L2-normalised features."""

    @classmethod
    def encode_together(cls, methods: Sequence[Method], images, regions,
                        memory_mb: float | None = None) -> list[list[torch.Tensor] | Exception]:
        """Several configs of this method on the same images and regions: each one's ``encode_regions``, or
        its exception (a method that can share work between configs overrides this, e.g. FALIP, and holds
        at most ``memory_mb`` of per-config inputs at once)."""
        out: list[list[torch.Tensor] | Exception] = []
        for method in methods:
            try:
                out.append(method.encode_regions(images, regions))
            except Exception as exc:  # noqa: BLE001  (this config fails alone)
                out.append(exc)
        return out

    def params(self) -> dict:
        from clipbench.config import as_plain

        return {k: v for k, v in as_plain(self.cfg).items() if k != "name"}


def whole_image(encode_regions):
    """Marks an ``encode_regions`` that returns ``model.encode_image(model.preprocess(image))`` for every
    region; tasks then use the batched path (tests/test_bad_input.py,
    ``test_every_region_free_method_matches_its_own_features``, checks both paths agree)."""
    encode_regions.whole_image = True
    return encode_regions


@dataclass
class MethodSpec:
    name: str
    config: type
    build: Callable[..., Method]


METHODS: Registry[MethodSpec] = Registry("method", package="clipbench.methods", helpers=("base", "foveal_bias"))


def register_method(name: str, config: type | None = None):
    """Registers a method class under ``name`` when its module is imported, with its config from
    ``METHOD_CONFIGS`` unless one is given (the built-in methods are declared in clipbench/methods/__init__.py)."""

    def add(cls):
        METHODS.register(name, MethodSpec(name, config or METHOD_CONFIGS.get(name, MethodConfig), cls))
        return cls

    return add

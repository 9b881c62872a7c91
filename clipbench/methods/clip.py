"""Plain CLIP: the whole image, no prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from PIL import Image

from clipbench.errors import ConfigError
from clipbench.methods.base import Method, MethodConfig, Region, register_method
from clipbench.methods.foveal_bias import RESIZE_MODES, image_transform


@dataclass
class ClipConfig(MethodConfig):
    name: str = "clip"
    resize: str = "center_crop"  # center_crop (the model's own preprocessing) | square (FALIP's input, Resize((S, S)))

    def validate(self) -> None:
        super().validate()
        if self.resize not in RESIZE_MODES:
            raise ConfigError("method.resize", f"{self.resize!r} is not allowed; use one of {list(RESIZE_MODES)}")


@register_method("clip", ClipConfig)
class ClipMethod(Method):
    def __init__(self, cfg: ClipConfig, model):
        super().__init__(cfg, model)
        # the tasks' batched image path uses the model's own preprocessing
        self.region_free = cfg.resize == "center_crop"

    @cached_property
    def transform(self):
        return image_transform(self.model, self.cfg.resize)

    def encode_regions(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]]) -> list[torch.Tensor]:
        batch = torch.stack([self.transform(im) for im in images])
        feats = self.model.encode_image(batch)
        return [feats[i : i + 1].expand(len(r), -1) for i, r in enumerate(regions)]

"""Plain CLIP: the whole image, no prompt."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch
from PIL import Image

from clipbench.config.methods import ClipConfig
from clipbench.methods.base import Method, Region, whole_image
from clipbench.methods.foveal_bias import image_transform


class ClipMethod(Method):
    """The model's own preprocessing: tasks may take their batched ``encode_image`` path."""

    @whole_image
    def encode_regions(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]]) -> list[torch.Tensor]:
        return self._whole_image_features(self.model.preprocess, images, regions)

    def _whole_image_features(self, transform, images, regions) -> list[torch.Tensor]:
        feats = self.model.encode_image(torch.stack([transform(im) for im in images]))
        return [feats[i : i + 1].expand(len(r), -1) for i, r in enumerate(regions)]


class SquareInputClipMethod(ClipMethod):
    """Plain CLIP on FALIP's square input (``method.resize=square``); not the model's own preprocessing."""

    @cached_property
    def transform(self):
        return image_transform(self.model, self.cfg.resize)

    def encode_regions(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]]) -> list[torch.Tensor]:
        return self._whole_image_features(self.transform, images, regions)


def build_clip(cfg: ClipConfig, model) -> ClipMethod:
    return (ClipMethod if cfg.resize == "center_crop" else SquareInputClipMethod)(cfg, model)


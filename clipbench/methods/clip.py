"""Plain CLIP: the whole image, no prompt."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from clipbench.methods.base import Method, Region, register_method, whole_image


@register_method("clip")
class ClipMethod(Method):
    @whole_image
    def encode_regions(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]]) -> list[torch.Tensor]:
        batch = torch.stack([self.model.preprocess(im) for im in images])
        feats = self.model.encode_image(batch)
        return [feats[i : i + 1].expand(len(r), -1) for i, r in enumerate(regions)]

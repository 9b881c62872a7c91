"""Model ensembles: several CLIP models, each with the same prompt method, their logits summed.

The run's model (``model.*``) is the first member; ``method.models`` adds more (open_clip arch and
pretrained tag or file). A region's feature is the concatenation over models of
``sqrt(scale_m / scale_run) * feature_m`` and a text's feature the same over the text towers, so
``logit_scale_run * image @ text`` is exactly ``sum_m logit_scale_m * cos_m``: the sum of the models'
logits (the red-circle paper's ensembles; its subtract comes after this sum).

Because the text side differs per model, tasks take text features from ``Method.text_features`` and
``Method.classifier``, which the ensemble overrides; a task that embeds texts with the run's model alone
cannot score an ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from clipbench.config.methods import EnsembleConfig, member_config
from clipbench.methods.base import METHODS, Method


class EnsembleMethod(Method):
    def __init__(self, cfg: EnsembleConfig, model):
        from clipbench.models import load_model

        super().__init__(cfg, model)
        extra = [
            load_model(s["arch"], s.get("pretrained"), s.get("precision", model.precision), model.device)
            for s in cfg.models
        ]
        self.models = [model, *extra]
        spec = METHODS.get(cfg.method)
        self.members = [spec.build(member_config(cfg.method, cfg.method_params), m) for m in self.models]
        self.weights = [math.sqrt(m.logit_scale / model.logit_scale) for m in self.models]

    def text(self, expression: str, template: str = "{}") -> str:
        return self.members[0].text(expression, template)

    def encode_regions(self, images, regions):
        per_model = [m.encode_regions(images, regions) for m in self.members]
        return [
            torch.cat([w * f.to(self.model.device) for w, f in zip(self.weights, feats)], dim=-1)
            for feats in zip(*per_model)
        ]

    def text_features(self, texts: Sequence[str], cache_dir: str | None = None) -> torch.Tensor:
        return torch.cat(
            [w * mm.text_features(texts, cache_dir).to(self.model.device)
             for w, mm, m in zip(self.weights, self.members, self.models)], dim=-1,
        )

    def classifier(self, classnames, templates, cache_dir: str | None = None) -> torch.Tensor:
        return torch.cat(
            [w * mm.classifier(classnames, templates, cache_dir).to(self.model.device)
             for w, mm, m in zip(self.weights, self.members, self.models)], dim=0,
        )

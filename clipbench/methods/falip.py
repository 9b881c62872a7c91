"""FALIP (Zhuang et al. 2024): a foveal attention bias on the CLS query, the image left untouched.

Each region (a union of boxes) becomes a (g, g) patch-weight map (clipbench/methods/foveal_bias.py), then an
(L, L) additive attention bias (rows ``cls`` | ``all`` | ``diagonal``) applied in ``method.layers``, scaled
per head by ``method.heads`` (clipbench/models/attention.py). Keys: alpha (0.2), sigma (100 patches),
shape (gaussian | uniform | ellipse), rows, layers (default the last 4 blocks; negative indices count
from the end), heads (all | [i, ...] | one list per layer | {scale: layers x heads}), resize (square |
center_crop) and fast (the exact shared-prefix path; false = a full forward per box).

Towers without a CLS token (SigLIP/SigLIP2/SO400M: timm's MAP head, ``timm_pool: map``): ``rows=cls`` puts
the bias on the pooling probe's attention over the patches (the probe is the only query that pools the
image), ``heads`` then selects the probe's heads and ``layers`` has no meaning (setting it is a config
error; use ``rows=all`` or ``diagonal`` to bias blocks). The other keys mean the same on every tower.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clipbench.config.methods import DEFAULT_LAYERS, FalipConfig
from clipbench.errors import ConfigError
from clipbench.methods.base import Method, Region
from clipbench.methods.foveal_bias import (
    PatchGrid,
    image_transform,
    region_patch_weights,
)
from clipbench.models.attention import (
    BiasJob,
    attention_tower,
    bias_from_patch_weights,
    encode_jobs_with_attention_bias,
    encode_with_attention_bias,
    head_scale_matrix,
    probe_bias_from_patch_weights,
    resolve_layers,
)

#: regions encoded together; bounds the activations and per-head biases held at once
REGION_CHUNK = 64


class FalipMethod(Method):
    def __init__(self, cfg: FalipConfig, model):
        super().__init__(cfg, model)
        cfg.validate()
        self.tower = attention_tower(model.model, model.arch)
        self.grid = PatchGrid.of(model)
        self.on_probe = cfg.rows == "cls" and not self.tower.has_cls
        if self.on_probe:
            if self.tower.probe_heads is None:
                raise ConfigError("method.rows", f"cls: {model.arch}'s image tower has no CLS token and no pooling probe")
            if list(cfg.layers) != DEFAULT_LAYERS:
                raise ConfigError(
                    "method.layers", f"has no meaning with rows=cls on {model.arch}: it has no CLS token, the bias goes "
                    "on its pooling probe; use rows=all or diagonal to bias blocks"
                )
            self.layers = ()
            self.head_scale = head_scale_matrix(cfg.heads, ("probe",), self.tower.probe_heads)
        else:
            self.layers = resolve_layers(cfg.layers, self.tower.depth)
            self.head_scale = head_scale_matrix(cfg.heads, self.layers, self.tower.num_heads)
        self.transform = image_transform(model, cfg.resize)

    def patch_weights(self, image, region: Region) -> torch.Tensor:
        cfg = self.cfg
        return region_patch_weights(region, image.width, image.height, self.grid, cfg.resize, cfg.alpha, cfg.sigma, cfg.shape)

    def bias_job(self, weights: torch.Tensor, owner=None) -> BiasJob:
        """The attention biases of (R, g, g) patch weights (``owner``: the image of each)."""
        if self.on_probe:
            probe = probe_bias_from_patch_weights(weights, self.tower)
            return BiasJob(None, (), owner=owner, fast=self.cfg.fast, probe_bias=probe, probe_scale=self.head_scale)
        bias = bias_from_patch_weights(weights, self.cfg.rows, self.tower.prefix)
        return BiasJob(bias, self.layers, self.head_scale, owner=owner, fast=self.cfg.fast)

    def encode_with_weights(self, images: torch.Tensor, weights: torch.Tensor, owner=None) -> torch.Tensor:
        """(R, D) features of preprocessed ``images`` with (R, g, g) patch weights (``owner``: image of each)."""
        job = self.bias_job(weights, owner)
        return encode_with_attention_bias(
            self.model, images, job.bias, job.layers, job.head_scale, owner=owner, fast=job.fast,
            probe_bias=job.probe_bias, probe_scale=job.probe_scale,
        )

    def encode_regions(self, images, regions: Sequence[Sequence[Region]]) -> list[torch.Tensor]:
        (out,) = encode_regions_together([self], images, regions)
        if isinstance(out, Exception):
            raise out
        return out

    @classmethod
    def encode_together(cls, methods, images, regions, memory_mb: float | None = None):
        return encode_regions_together(methods, images, regions, memory_mb)


def encode_regions_together(
    methods: Sequence[FalipMethod], images, regions: Sequence[Sequence[Region]], memory_mb: float | None = None
) -> list[list[torch.Tensor] | Exception]:
    """Each method's ``encode_regions`` of the same images and regions in one pass: every image is
    preprocessed once and its unbiased blocks run once for all methods (they share the model and ``resize``);
    a method that fails gets its exception and the others go on (docs/grouped_sweeps.md).

    ``memory_mb`` bounds the attention biases held at once (one dense float32 bias per region and config):
    the configs of a region chunk are then encoded in sub-groups that fit, each sub-group running the shared
    prefix once; None: all configs at once. Features do not depend on the sub-groups."""
    first = methods[0]
    if any(m.model is not first.model or m.cfg.resize != first.cfg.resize for m in methods):
        raise ValueError("methods encoded together must share the model and method.resize")
    boxes = [(i, region) for i in range(len(images)) for region in regions[i]]
    tensors: dict[int, torch.Tensor] = {}
    feats: list[list[torch.Tensor] | Exception] = [[] for _ in methods]
    for start in range(0, len(boxes), REGION_CHUNK):
        chunk = boxes[start : start + REGION_CHUNK]
        owners = sorted({i for i, _ in chunk})
        for i in owners:
            if i not in tensors:
                tensors[i] = first.transform(images[i])
        local = {i: k for k, i in enumerate(owners)}
        owner = torch.tensor([local[i] for i, _ in chunk])
        live = [k for k, f in enumerate(feats) if not isinstance(f, Exception)]
        batch = torch.stack([tensors[i] for i in owners])
        for group in configs_per_pass(methods, live, len(chunk), memory_mb):
            jobs = {}
            for k in group:
                try:
                    weights = torch.stack([methods[k].patch_weights(images[i], region) for i, region in chunk])
                    jobs[k] = methods[k].bias_job(weights, owner)
                except Exception as exc:  # noqa: BLE001  (this config fails alone)
                    feats[k] = exc
            for k, out in zip(jobs, encode_jobs_with_attention_bias(first.model, batch, list(jobs.values()))):
                if isinstance(out, Exception):
                    feats[k] = out
                else:
                    feats[k].append(out)
            del jobs
        for i in owners[:-1]:
            tensors.pop(i, None)  # an image's regions are consecutive: only the last may continue
    sizes = [len(r) for r in regions]
    return [f if isinstance(f, Exception) else list(_joined(f, first).split(sizes)) for f in feats]


def bias_bytes(method: FalipMethod, n_regions: int) -> int:
    """The bytes of one config's float32 attention biases for ``n_regions`` regions: (R, L, L) on the blocks,
    (R, 1, Lk) on a pooling probe (clipbench/models/attention.py, ``bias_from_patch_weights``)."""
    tokens = method.tower.tokens
    per_region = tokens - method.tower.probe_skip if method.on_probe else tokens * tokens
    return 4 * n_regions * per_region


def shared_blocks(method: FalipMethod) -> int:
    """The leading blocks a config leaves unbiased and shares (``_prefix_end`` in clipbench/models/attention.py)."""
    if not method.cfg.fast:
        return 0
    return method.layers[0] if method.layers else method.tower.depth


def configs_per_pass(methods: Sequence[FalipMethod], live: Sequence[int], n_regions: int,
                     memory_mb: float | None) -> list[list[int]]:
    """``live`` (indices into ``methods``) cut, in order of their first biased block, into the sub-groups
    whose biases for ``n_regions`` regions fit in ``memory_mb`` together (at least one config each);
    configs next to each other share the longest prefix, so each sub-group still shares most of it."""
    if memory_mb is None or len(live) <= 1:
        return [list(live)] if live else []
    order = sorted(live, key=lambda k: shared_blocks(methods[k]))
    budget, groups, used = memory_mb * 2**20, [], 0.0
    for k in order:
        size = bias_bytes(methods[k], n_regions)
        if groups and used + size <= budget:
            groups[-1].append(k)
            used += size
        else:
            groups.append([k])
            used = size
    return groups


def _joined(feats: list[torch.Tensor], method: FalipMethod) -> torch.Tensor:
    return torch.cat(feats) if feats else torch.empty(0, int(method.model.model.visual.output_dim))

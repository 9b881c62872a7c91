"""Tiny random-init timm towers (SigLIP-style MAP head, CLS + register tokens, EVA02-style rotary blocks),
registered with timm so that open_clip model JSONs in tests/assets can name them."""

from __future__ import annotations

import timm
from timm.models import register_model
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)


def _build(cls, args: dict, kwargs: dict):
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained"):
        kwargs.pop(key, None)
    model = cls(**{**args, **kwargs})
    model.default_cfg = model.pretrained_cfg = {}
    return model


def _siglip(pretrained=False, **kwargs):
    return _build(VisionTransformer, dict(SMALL, class_token=False, global_pool="map"), kwargs)


def _registers(pretrained=False, **kwargs):
    return _build(VisionTransformer, dict(SMALL, class_token=True, reg_tokens=2, no_embed_class=True, global_pool="token"), kwargs)


def _eva(pretrained=False, **kwargs):
    args = dict(SMALL, qkv_fused=False, mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True,
                use_rot_pos_emb=True, ref_feat_shape=(4, 4), global_pool=kwargs.pop("global_pool", "token"))
    return _build(Eva, args, kwargs)


for _name, _fn in {"clipbench_test_siglip": _siglip, "clipbench_test_reg": _registers, "clipbench_test_eva": _eva}.items():
    if _name not in timm.list_models():
        _fn.__name__ = _name
        register_model(_fn)

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


def save_tiny_hf_clip(folder) -> str:
    """A random-init transformers ``CLIPModel`` (3 vision layers, 2 heads, 32 px, 8 px patches) with its image
    processor and a byte-level tokenizer (no merges), saved with ``save_pretrained``."""
    from pathlib import Path

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=24, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=24,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)

"""Hugging Face transformers CLIP checkpoints as a model source (``model.source=hf``).

``model.arch`` is a hub id (``openai/clip-vit-base-patch16``) or a local ``save_pretrained`` folder holding
the model, its image processor and tokenizer; ``model.pretrained`` must stay null (the weights come with
the arch). Images go through the checkpoint's own ``CLIPImageProcessor``, texts through its tokenizer;
features are ``CLIPModel.get_image_features`` / ``get_text_features``. FALIP reaches the vision encoder's
layers through ``attention_tower`` (clipbench/models/attention.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from clipbench.errors import ConfigError
from clipbench.models.checkpoints import file_fingerprint
from clipbench.models.weights import no_weights


def _features(out) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFPreprocess:
    """PIL image -> (3, S, S) tensor through the checkpoint's own image processor."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        return self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]


class HFTokenizer:
    """Texts -> (N, context) token ids, padded to the text tower's context length."""

    def __init__(self, tokenizer, context_length: int):
        self.tokenizer, self.context_length = tokenizer, context_length

    def __call__(self, texts) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                              return_tensors="pt")["input_ids"]


class HFVisual(nn.Module):
    """The vision encoder and projection of a ``CLIPModel``, with the geometry clipbench reads."""

    def __init__(self, model, processor=None):
        super().__init__()
        self.vision_model, self.visual_projection = model.vision_model, model.visual_projection
        config = model.config.vision_config
        self.image_size, self.patch_size = int(config.image_size), int(config.patch_size)
        self.grid_size = self.image_size // self.patch_size
        self.image_mean = None if processor is None else list(processor.image_mean)
        self.image_std = None if processor is None else list(processor.image_std)
        self.output_dim = int(model.config.projection_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values=images).pooler_output)

    def attention_tower(self):
        from clipbench.models.attention import HFCLIPVision

        return HFCLIPVision(self)


class HFCLIP(nn.Module):
    """``encode_image`` / ``encode_text`` over a transformers ``CLIPModel``."""

    def __init__(self, model, processor=None):
        super().__init__()
        self.hf = model
        self.visual = HFVisual(model, processor)
        self.logit_scale = model.logit_scale

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return _features(self.hf.get_image_features(pixel_values=images))

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return _features(self.hf.get_text_features(input_ids=input_ids))


def load_hf(arch: str, pretrained, cache_dir: str | None = None):
    """(HFCLIP, preprocess, tokenizer, fingerprint) for a hub id or local folder."""
    if not no_weights(pretrained):
        raise ConfigError("model.pretrained", "has no meaning with model.source=hf (the weights come with model.arch); set it to null")
    try:
        from transformers import AutoProcessor, CLIPModel
    except ImportError:
        raise ConfigError("model.source", "hf needs the transformers package (pip install transformers)") from None
    local = Path(arch).expanduser()
    if ("/" in arch and arch.startswith((".", "/", "~"))) and not local.is_dir():
        raise ConfigError("model.arch", f"{local} is not a folder (a save_pretrained folder or a hub id)")
    try:
        model = CLIPModel.from_pretrained(str(local) if local.is_dir() else arch, cache_dir=cache_dir)
        processor = AutoProcessor.from_pretrained(str(local) if local.is_dir() else arch, cache_dir=cache_dir)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError("model.arch", f"transformers could not load CLIP {arch!r}: {first}") from None
    if local.is_dir():
        parts = [json.dumps(model.config.to_dict(), sort_keys=True, default=str), folder_fingerprint(local)]
        fingerprint = "hf-local:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    else:
        fingerprint = f"hf:{arch}@{getattr(model.config, '_commit_hash', None) or 'main'}"
    context = int(model.config.text_config.max_position_embeddings)
    wrapped = HFCLIP(model.eval(), processor.image_processor)
    return wrapped, HFPreprocess(processor.image_processor), HFTokenizer(processor.tokenizer, context), fingerprint


def hub_revision(arch: str, cache_dir: str | None = None) -> str:
    """The commit of hub id ``arch`` that the local Hugging Face cache holds (what loads offline), "" when not
    cached: known before loading, with no network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(arch, "config.json", cache_dir=cache_dir)
    except ValueError:  # not a hub id
        return ""
    return Path(found).parent.name if isinstance(found, str) else ""


def folder_fingerprint(folder: Path) -> str:
    """The content hash of a ``save_pretrained`` folder: its config.json and weight files."""
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    files = [f for f in [folder / "config.json", *weights] if f.is_file()]
    return hashlib.sha256("|".join(file_fingerprint(f) for f in files).encode()).hexdigest()[:16]

"""Build a CLIP model from an open_clip architecture name and a checkpoint.

``model.pretrained`` is resolved by the first matching source in ``PRETRAINED_SOURCES``:
``null`` (random init, with a warning), a local checkpoint file, or an open_clip pretrained tag.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from clipbench.errors import ConfigError
from clipbench.models.checkpoints import expand_compact, file_fingerprint, read_checkpoint, regenerate_hint
from clipbench.runtime import autocast

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "configs"
TEXT_BATCH = 256
_registered = False


def register_model_configs() -> None:
    """Make clipbench's own architectures (e.g. ``toyclip``) ordinary open_clip model names.

    Extra folders of open_clip model JSONs can be added with ``CLIPBENCH_MODEL_CONFIGS`` (os.pathsep-separated).
    """
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        for extra in filter(None, os.environ.get("CLIPBENCH_MODEL_CONFIGS", "").split(os.pathsep)):
            open_clip.add_model_config(extra)
        _registered = True


def available_archs() -> list[str]:
    import open_clip

    register_model_configs()
    return open_clip.list_models()


def arch_config(arch: str) -> dict | None:
    """``arch``'s model JSON, read from the folders open_clip registers, without importing open_clip.

    Importing open_clip takes seconds (it pulls in transformers); config checks use this instead.
    """
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    folders = [Path(spec.origin).parent / "model_configs"] if spec and spec.origin else []
    folders += [CONFIG_DIR, *map(Path, filter(None, os.environ.get("CLIPBENCH_MODEL_CONFIGS", "").split(os.pathsep)))]
    for folder in reversed(folders):  # later registrations win, as in open_clip
        path = folder / f"{arch}.json" if folder.is_dir() else folder
        if path.is_file() and path.stem == arch:
            config = json.loads(path.read_text())
            if all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
                return config
    return None


#: open_clip's CLIPVisionCfg defaults for the keys a ViT config may omit
VIT_DEFAULTS = {"layers": 12, "width": 768, "head_width": 64}


def vit_tower_shape(arch: str) -> tuple[int, int] | None:
    """(blocks, heads) of ``arch``'s ViT image tower, from its config JSON without building it.

    None for towers open_clip does not build as a plain ViT (ResNets, timm) or an unknown JSON.
    """
    vision = (arch_config(arch) or {}).get("vision_cfg")
    if not isinstance(vision, dict) or vision.get("timm_model_name"):
        return None
    vision = VIT_DEFAULTS | vision
    if not isinstance(vision["layers"], int):
        return None
    return vision["layers"], vision["width"] // vision["head_width"]


@dataclass
class VisionGeometry:
    """Input size and patch grid of a ViT tower; None fields for conv towers."""

    image_size: int
    patch_size: int | None
    grid_size: int | None

    @property
    def num_tokens(self) -> int | None:
        return None if self.grid_size is None else 1 + self.grid_size**2


@dataclass
class LoadedModel:
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    arch: str
    pretrained: str | None
    precision: str
    device: torch.device
    fingerprint: str
    geometry: VisionGeometry
    _text_cache: dict = field(default_factory=dict, repr=False)

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.detach().exp()) if scale is not None else 100.0

    def autocast(self):
        return autocast(self.device, self.precision)

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        with self.autocast():
            feats = self.model.encode_image(images.to(self.device, non_blocking=True))
        feats = feats.float()
        return F.normalize(feats, dim=-1) if normalize else feats

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], normalize: bool = True, batch_size: int = TEXT_BATCH) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            with self.autocast():
                feats = encode_text_trimmed(self.model, tokens)
            out.append(feats.float())
        feats = torch.cat(out) if out else torch.empty(0)
        return F.normalize(feats, dim=-1) if normalize else feats


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` computed only over the positions the batch uses.

    With a causal mask and EOT/EOS pooling, positions after the longest sequence's last token cannot
    influence the pooled feature, so dropping them is exact. Other text towers run unchanged.
    """
    trimmable = (
        getattr(model, "text_pool_type", None) in ("argmax", "eos")
        and isinstance(getattr(model, "attn_mask", None), torch.Tensor)
        and hasattr(model, "token_embedding")
        and bool(torch.isinf(model.attn_mask).any())
    )
    used = int((tokens != 0).nonzero()[:, 1].max()) + 1 if trimmable and tokens.any() else tokens.shape[1]
    if not trimmable or used == tokens.shape[1]:
        return model.encode_text(tokens)
    tokens = tokens[:, :used]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:used].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:used, :used]))
    from open_clip.transformer import text_global_pool

    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return x


def vision_geometry(model: torch.nn.Module) -> VisionGeometry:
    visual = model.visual
    size = getattr(visual, "image_size", None)
    size = size[0] if isinstance(size, (tuple, list)) else size
    embed = getattr(getattr(visual, "trunk", None), "patch_embed", None)  # timm towers
    source = embed if hasattr(embed, "grid_size") else visual
    patch = getattr(source, "patch_size", None)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    grid = getattr(source, "grid_size", None)
    grid = grid[0] if isinstance(grid, (tuple, list)) else grid
    if size is None:
        size = model.visual.preprocess_cfg["size"] if hasattr(visual, "preprocess_cfg") else 224
    return VisionGeometry(int(size), patch and int(patch), grid and int(grid))


def build_structure(source: str, arch: str) -> torch.nn.Module:
    """``arch`` with random (or meta-device) weights, no checkpoint: enough to read the towers' layout."""
    import open_clip

    if source == "hf":
        from transformers import AutoConfig, CLIPModel

        from clipbench.models.hf import HFCLIP

        return HFCLIP(CLIPModel(AutoConfig.from_pretrained(arch)))
    if arch not in available_archs():
        raise ConfigError("model.arch", f"{arch!r} is not an open_clip architecture")
    return open_clip.create_model(arch, pretrained=None, device=torch.get_default_device())


# -- pretrained sources: each returns (state_dict or None, open_clip tag or None, fingerprint) --

def _source_random(pretrained, arch):
    if pretrained in (None, "", "null", "none", "None"):
        warnings.warn(
            f"model.pretrained is null: {arch} is RANDOMLY INITIALISED; its numbers carry no meaning",
            stacklevel=3,
        )
        return None, None, f"random-init-{uuid.uuid4().hex[:8]}"  # never shared by two instances
    return NotImplemented


def _source_file(pretrained, arch):
    path = Path(str(pretrained)).expanduser()
    looks_like_path = path.suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in str(pretrained)
    if not looks_like_path:
        return NotImplemented
    if path.is_dir():
        raise ConfigError("model.pretrained", f"{path} is a folder; name the checkpoint file inside it")
    if not path.is_file():
        raise ConfigError("model.pretrained", f"checkpoint file {path} does not exist{regenerate_hint(path)}")
    return read_checkpoint(path), None, file_fingerprint(path)


def _source_tag(pretrained, arch):
    import open_clip

    tags = {t for a, t in open_clip.list_pretrained() if a == arch}
    if pretrained not in tags:
        hint = f"known tags for {arch}: {sorted(tags)}" if tags else f"{arch} has no open_clip pretrained tags"
        raise ConfigError(
            "model.pretrained",
            f"{pretrained!r} is neither a local .pt/.bin/.safetensors file nor an open_clip tag ({hint})",
        )
    return None, pretrained, f"tag:{pretrained}"


PRETRAINED_SOURCES = [_source_random, _source_file, _source_tag]
SOURCES = ("open_clip", "hf")
_MODEL_CACHE: dict[tuple, LoadedModel] = {}


def load_model(
    arch: str,
    pretrained: str | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    reuse: bool = True,
    source: str = "open_clip",
) -> LoadedModel:
    """Build ``arch`` with weights from ``pretrained`` (tag, local file or None), ready for inference.

    ``source``: ``open_clip`` (an open_clip architecture name) or ``hf`` (a transformers CLIP hub id or
    local ``save_pretrained`` folder, clipbench/models/hf.py). Within one process the same (source, arch,
    pretrained, precision, device) is built once and reused, so sweeps over method parameters do not
    reload weights.
    """
    import open_clip

    device = torch.device(device)
    key = (source, arch, str(pretrained), precision, str(device))
    if reuse and key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    if source not in SOURCES:
        raise ConfigError("model.source", f"{source!r} is not allowed; use one of {list(SOURCES)}")
    if source == "hf":
        from clipbench.models.hf import load_hf

        autocast(device, precision)
        model, preprocess, tokenizer, fingerprint = load_hf(arch, pretrained, cache_dir)
        model = model.to(device).eval()
        loaded = LoadedModel(model, preprocess, tokenizer, arch, None, precision, device, f"{arch}|{fingerprint}",
                             vision_geometry(model))
        if reuse:
            _MODEL_CACHE[key] = loaded
        return loaded
    if arch not in available_archs():
        raise ConfigError(
            "model.arch",
            f"{arch!r} is not an open_clip architecture; see open_clip.list_models() (e.g. ViT-B-32, ViT-B-16, toyclip)",
        )
    autocast(device, precision)  # validates the precision for this device
    for source in PRETRAINED_SOURCES:
        resolved = source(pretrained, arch)
        if resolved is not NotImplemented:
            state, tag, fingerprint = resolved
            break
    try:
        with _without_open_clip_random_notice():
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=tag, device="cpu", cache_dir=cache_dir
            )
    except RuntimeError as exc:  # e.g. no network for a tag download
        raise ConfigError("model.pretrained", f"open_clip could not load {arch}/{tag}: {exc}") from None
    if state is not None:
        reference = model.state_dict()
        state = expand_compact(state, reference)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise ConfigError("model.pretrained", f"{pretrained} does not fit {arch}: {first}") from None
        missing = [k for k in missing if not k.endswith("attn_mask")]
        if missing or unexpected:
            raise ConfigError(
                "model.pretrained",
                f"{pretrained} does not fit {arch}: {len(missing)} missing keys (e.g. {missing[:2]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})",
            )
    model = model.to(device).eval()
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except (OSError, ImportError, ValueError) as exc:  # e.g. SigLIP's tokenizer is downloaded from the hub
        raise ConfigError("model.arch", f"open_clip could not build {arch}'s tokenizer: {exc}") from None
    loaded = LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        arch=arch,
        pretrained=None if pretrained in (None, "", "null", "none", "None") else str(pretrained),
        precision=precision,
        device=device,
        fingerprint=f"{arch}|{fingerprint}",
        geometry=vision_geometry(model),
    )
    if reuse:
        _MODEL_CACHE[key] = loaded
    weights = "random init" if loaded.pretrained is None else loaded.pretrained
    log.info("model %s, weights %s (fingerprint %s), %s on %s", arch, weights, fingerprint, precision, device)
    return loaded


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _without_open_clip_random_notice():
    """open_clip warns 'initialized randomly' whenever no tag is given, also right before a local checkpoint
    loads; clipbench states what it loaded itself (and warns when the weights really are random)."""
    notice = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)

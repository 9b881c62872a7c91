"""Build a CLIP model from an open_clip architecture name and a checkpoint.

``model.source`` picks the loader in ``LOADERS``. For open_clip, ``model.pretrained`` is resolved by the
first matching source in ``PRETRAINED_SOURCES``: no weights (``null``/``none``: random init, with a warning),
a local checkpoint file, or an open_clip pretrained tag.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from clipbench.errors import ConfigError
from clipbench.models.archs import (  # noqa: F401  (torch-free; re-exported)
    CONFIG_DIR,
    SOURCES,
    VIT_DEFAULTS,
    _arch_config_file,
    arch_config,
    arch_digest,
    model_config_paths,
    read_model_json,
    vit_tower_shape,
)
from clipbench.models.checkpoints import expand_compact, file_fingerprint, read_checkpoint, regenerate_hint
from clipbench.models.finite import require_finite
from clipbench.models.weights import DEFAULT_SEED, no_weights
from clipbench.runtime import autocast

log = logging.getLogger(__name__)
TEXT_BATCH = 256
_registered: list[Path] = []  # the folders and files open_clip was given, in order


def register_model_configs() -> None:
    """Make clipbench's own architectures (e.g. ``toyclip``) ordinary open_clip model names.

    Extra folders of open_clip model JSONs can be added with ``CLIPBENCH_MODEL_CONFIGS`` (os.pathsep-separated);
    one named there later in the process is registered on the next call.
    """
    import open_clip

    for path in model_config_paths():
        if path in _registered:
            continue
        for file in [path] if path.is_file() else sorted(path.glob("*.json")):
            read_model_json(file)  # open_clip's own scan stops at a malformed file with a traceback
        open_clip.add_model_config(path)
        _registered.append(path)


def available_archs() -> list[str]:
    import open_clip

    register_model_configs()
    return open_clip.list_models()


def sync_arch_config(arch: str) -> None:
    """Have open_clip build ``arch`` from its JSON as it is on disk now: open_clip reads model JSONs once,
    so one edited (or added) since is given to it again."""
    import open_clip

    register_model_configs()
    found = _arch_config_file(arch)
    if found and open_clip.get_model_config(arch) != found[1]:
        open_clip.add_model_config(found[0])


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
    source: str = "open_clip"
    _text_cache: dict = field(default_factory=dict, repr=False)

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(require_finite(scale.detach().exp(), "logit scale", self)) if scale is not None else 100.0

    def autocast(self):
        return autocast(self.device, self.precision)

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        with self.autocast():
            feats = self.model.encode_image(images.to(self.device, non_blocking=True))
        feats = require_finite(feats.float(), "image features", self, sample_overflow=True)
        return F.normalize(feats, dim=-1) if normalize else feats

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], normalize: bool = True, batch_size: int = TEXT_BATCH) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            with self.autocast():
                feats = encode_text_trimmed(self.model, tokens)
            out.append(feats.float())
        feats = require_finite(torch.cat(out) if out else torch.empty(0), "text features", self)
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
    # open_clip's CLIP.encode_text always adds the whole positional table and causal mask, so it cannot take
    # fewer positions by itself: it runs as is with the first `used` rows of both swapped in for the call.
    trimmed = {"model.positional_embedding": model.positional_embedding[:used], "model.attn_mask": model.attn_mask[:used, :used]}
    return functional_call(_EncodeText(model), trimmed, (tokens[:, :used],))


class _EncodeText(torch.nn.Module):
    """``model.encode_text`` as a module's forward, for ``torch.func.functional_call``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


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


def weights_fingerprint(arch: str, pretrained, source: str = "open_clip", seed: int | None = None,
                        cache_dir: str | None = None) -> str:
    """What a result row records of the weights, known before they load (resume compares it): the content
    hash of a checkpoint file or of a ``save_pretrained`` folder (its config.json too), ``tag:<name>`` for
    an open_clip tag, ``random:<arch>@<architecture digest>:seed=<seed>`` for random init (the seed draws the
    weights, so reruns match), ``hf:<hub id>@<commit>`` for a hub id in the local cache, else ""."""
    if source == "hf":
        from clipbench.models.hf import folder_fingerprint, hub_revision

        folder = Path(arch).expanduser()
        if folder.is_dir():
            return folder_fingerprint(folder)
        revision = hub_revision(arch, cache_dir)
        return f"hf:{arch}@{revision}" if revision else ""
    if no_weights(pretrained):
        return f"random:{arch}@{arch_digest(arch)}:seed={seed}"
    path = Path(str(pretrained)).expanduser()
    return file_fingerprint(path) if path.is_file() else f"tag:{pretrained}"


# -- pretrained sources: each returns (state_dict or None, open_clip tag or None, fingerprint) --

def _source_random(pretrained, arch):
    if no_weights(pretrained):
        warnings.warn(
            f"model.pretrained is null: {arch} is RANDOMLY INITIALISED; its numbers carry no meaning",
            stacklevel=5,  # the caller of load_model
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


def resolve_pretrained(pretrained, arch: str) -> tuple[dict | None, str | None, str]:
    """(state_dict or None, open_clip tag or None, fingerprint) from the first source that takes ``pretrained``."""
    for source in PRETRAINED_SOURCES:
        resolved = source(pretrained, arch)
        if resolved is not NotImplemented:
            return resolved
    raise ConfigError("model.pretrained", f"{pretrained!r} names no weights clipbench can load")


def load_model(
    arch: str,
    pretrained: str | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    reuse: bool = True,
    source: str = "open_clip",
    seed: int | None = None,
) -> LoadedModel:
    """Build ``arch`` with weights from ``pretrained`` (tag, local file or None), ready for inference.

    ``source``: ``open_clip`` (an open_clip architecture name) or ``hf`` (a transformers CLIP hub id or
    local ``save_pretrained`` folder, clipbench/models/hf.py). Within one process the same (source, arch,
    pretrained, precision, device) is built once and reused, so sweeps over method parameters do not
    reload weights; an edited model JSON or a replaced checkpoint is loaded anew. ``seed``: the seed random-init
    weights are drawn with (the caller seeds torch; None: a run's default), so two seeds are two models.
    """
    device = torch.device(device)
    seed = DEFAULT_SEED if seed is None else seed
    content = (arch_digest(arch) if source == "open_clip" else "", weights_fingerprint(arch, pretrained, source, seed, cache_dir))
    key = (source, arch, str(pretrained), *content, precision, str(device))
    if reuse and key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    if source not in LOADERS:
        raise ConfigError("model.source", f"{source!r} is not allowed; use one of {list(SOURCES)}")
    loaded = LOADERS[source](arch, pretrained, precision, device, cache_dir)
    if reuse:
        _MODEL_CACHE[key] = loaded
    return loaded


def _load_open_clip(arch: str, pretrained, precision: str, device: torch.device, cache_dir: str | None) -> LoadedModel:
    import open_clip

    sync_arch_config(arch)
    if arch not in available_archs():
        raise ConfigError(
            "model.arch",
            f"{arch!r} is not an open_clip architecture; see open_clip.list_models() (e.g. ViT-B-32, ViT-B-16, toyclip)",
        )
    autocast(device, precision)  # validates the precision for this device
    state, tag, fingerprint = resolve_pretrained(pretrained, arch)
    try:
        with _without_open_clip_random_notice():
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=tag, device="cpu", cache_dir=cache_dir
            )
    except RuntimeError as exc:  # e.g. no network for a tag download
        raise ConfigError("model.pretrained", f"open_clip could not load {arch}/{tag}: {exc}") from None
    if state is not None:
        _load_checkpoint(model, state, pretrained, arch)
    model = model.to(device).eval()
    loaded = LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=_open_clip_tokenizer(arch),
        arch=arch,
        pretrained=None if no_weights(pretrained) else str(pretrained),
        precision=precision,
        device=device,
        fingerprint=f"{arch}@{arch_digest(arch)}|{fingerprint}",
        geometry=vision_geometry(model),
    )
    weights = "random init" if loaded.pretrained is None else loaded.pretrained
    log.info("model %s, weights %s (fingerprint %s), %s on %s", arch, weights, fingerprint, precision, device)
    return loaded


def _load_checkpoint(model: torch.nn.Module, state: dict, pretrained, arch: str) -> None:
    """Load a checkpoint's ``state`` into ``model``; one ConfigError line when it does not fit ``arch``."""
    state = expand_compact(state, model.state_dict())
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


def _open_clip_tokenizer(arch: str) -> Callable:
    import open_clip

    try:
        return open_clip.get_tokenizer(arch)
    except (OSError, ImportError, ValueError) as exc:  # e.g. SigLIP's tokenizer is downloaded from the hub
        raise ConfigError("model.arch", f"open_clip could not build {arch}'s tokenizer: {exc}") from None


def _load_hf(arch: str, pretrained, precision: str, device: torch.device, cache_dir: str | None) -> LoadedModel:
    from clipbench.models.hf import load_hf

    autocast(device, precision)
    model, preprocess, tokenizer, fingerprint = load_hf(arch, pretrained, cache_dir)
    model = model.to(device).eval()
    return LoadedModel(model, preprocess, tokenizer, arch, None, precision, device, f"{arch}|{fingerprint}",
                       vision_geometry(model), source="hf")


LOADERS: dict[str, Callable[..., LoadedModel]] = {"open_clip": _load_open_clip, "hf": _load_hf}  # keys: archs.SOURCES
_MODEL_CACHE: dict[tuple, LoadedModel] = {}


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

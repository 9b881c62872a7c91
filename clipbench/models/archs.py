"""Architectures by name, read from their open_clip model JSONs without importing open_clip or torch.

Config checks use these: importing open_clip takes seconds (it imports torch, timm and transformers).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from clipbench.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
SOURCES = ("open_clip", "hf")  # model.source: the loaders of clipbench.models.factory.LOADERS


def model_config_paths() -> list[Path]:
    """The folders (or JSON files) clipbench registers with open_clip, in registration order."""
    return [CONFIG_DIR, *map(Path, filter(None, os.environ.get("CLIPBENCH_MODEL_CONFIGS", "").split(os.pathsep)))]


def read_model_json(file: Path) -> dict:
    """One model JSON; a malformed one is a config error naming the file, line and column."""
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("CLIPBENCH_MODEL_CONFIGS", f"{file} is not valid JSON ({exc})") from None


def check_model_configs() -> None:
    """Every JSON of the ``CLIPBENCH_MODEL_CONFIGS`` folders parses: registering a folder, open_clip reads them
    all, so one malformed file stops any open_clip model (a config error naming it, before torch loads)."""
    for path in model_config_paths()[1:]:
        for file in [path] if path.is_file() else sorted(path.glob("*.json")):
            read_model_json(file)


def arch_names() -> list[str]:
    """Every architecture a model JSON defines (open_clip's own and clipbench's folders), sorted."""
    return sorted({file.stem for path in _config_folders() for file in ([path] if path.is_file() else path.glob("*.json"))
                   if _arch_config_file(file.stem)})


def arch_config(arch: str) -> dict | None:
    """``arch``'s model JSON, as ``open_clip.get_model_config`` returns it once clipbench's folders are
    registered (tests/test_cli.py compares the two on every architecture); None when no JSON names it.

    Config checks call this, so it reads the same folders itself, in open_clip's order (open_clip's own
    model_configs/ first, later registrations win): importing open_clip takes seconds.
    """
    found = _arch_config_file(arch)
    return found and found[1]


def _config_folders() -> list[Path]:
    """open_clip's own model_configs/ (found without importing it), then clipbench's, in open_clip's order."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    return ([Path(spec.origin).parent / "model_configs"] if spec and spec.origin else []) + model_config_paths()


def _arch_config_file(arch: str) -> tuple[Path, dict] | None:
    """The JSON file that defines ``arch`` (see ``arch_config``) and its content."""
    for path in reversed(_config_folders()):
        file = path / f"{arch}.json" if path.is_dir() else path
        if file.is_file() and file.suffix == ".json" and file.stem == arch:
            config = read_model_json(file)
            if all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
                return file, config
    return None


def arch_digest(arch: str) -> str:
    """The content of ``arch``'s model JSON as a short hash: a JSON edited under the same name (e.g.
    ``quick_gelu`` switched on) is another architecture for the config hash and the embedding caches."""
    return hashlib.sha256(json.dumps(arch_config(arch), sort_keys=True).encode()).hexdigest()[:12]


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

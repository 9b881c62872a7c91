"""Reading checkpoint files safely: safetensors, or torch files with ``weights_only=True``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from clipbench.errors import ConfigError
from clipbench.fingerprints import file_fingerprint  # noqa: F401  (the checkpoint's identity, re-exported)
from clipbench.registry import Registry

CHECKPOINT_READERS: Registry[Callable[[Path], dict[str, torch.Tensor]]] = Registry("checkpoint format")

# Compact tensors: "<key>.__rows__" (int64 row indices) + "<key>.__values__" expand into the full
# "<key>" of the model's own shape, zero elsewhere. Used to ship embeddings with only the rows in use.
ROWS_SUFFIX, VALUES_SUFFIX = ".__rows__", ".__values__"


@CHECKPOINT_READERS.register(".safetensors")
def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles with code, TorchScript archives, truncated files
        raise ConfigError(
            "model.pretrained",
            f"{path} could not be read as a plain state dict with weights_only=True ({type(exc).__name__}); "
            "convert it to .safetensors, or use the open_clip tag (e.g. 'openai') for OpenAI JIT files"
            + regenerate_hint(path),
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError("model.pretrained", f"{path} does not hold a state dict of tensors")
    return obj


for _suffix in (".pt", ".pth", ".bin"):
    CHECKPOINT_READERS.register(_suffix, read_torch)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix not in CHECKPOINT_READERS:
        raise ConfigError(
            "model.pretrained", f"{path}: unsupported checkpoint type; use one of {CHECKPOINT_READERS.names()}"
        )
    try:
        state = CHECKPOINT_READERS.get(path.suffix)(path)
    except ConfigError:
        raise
    except Exception as exc:  # truncated or corrupt files
        raise ConfigError("model.pretrained", f"{path} is corrupt or unreadable ({type(exc).__name__}: {exc}){regenerate_hint(path)}") from None
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def expand_compact(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Expand row-compact tensors to the reference shapes and cast everything to the reference dtypes."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(VALUES_SUFFIX):
            continue
        if key.endswith(ROWS_SUFFIX):
            base = key[: -len(ROWS_SUFFIX)]
            ref = reference[base]
            full = torch.zeros_like(ref)
            full[value.long()] = state[base + VALUES_SUFFIX].to(ref.dtype)
            out[base] = full
        else:
            out[key] = value
    for key, value in out.items():
        if key in reference and value.is_floating_point():
            out[key] = value.to(reference[key].dtype)
    return out


def compact_rows(state: dict[str, torch.Tensor], key: str, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inverse of ``expand_compact`` for one tensor: keep only ``rows`` of ``state[key]``."""
    out = dict(state)
    full = out.pop(key)
    out[key + ROWS_SUFFIX] = rows.long()
    out[key + VALUES_SUFFIX] = full[rows.long()].clone()
    return out


TOY_CHECKPOINT_HINT = "; regenerate the bundled toy model with: python scripts/train_toy_clip.py"


def regenerate_hint(path: Path) -> str:
    """How to rebuild a checkpoint that clipbench itself ships."""
    assets = Path(__file__).resolve().parent.parent / "assets"
    return TOY_CHECKPOINT_HINT if Path(path).resolve().parent == assets else ""


def describe(state: dict[str, torch.Tensor]) -> str:
    return json.dumps({"tensors": len(state), "params": int(sum(v.numel() for v in state.values()))})

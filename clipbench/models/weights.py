"""Whether ``model.pretrained`` names any weights, and how a model is named. Torch-free: config checks, the
runner's random-init banner, the model factories, error messages, W&B and the report all decide it here."""

from __future__ import annotations

from pathlib import PurePath

#: a run's ``seed`` when none is given (RunConfig); random-init weights are drawn with it
DEFAULT_SEED = 0

#: the spellings of "no weights" besides None (YAML ``null``): Hydra passes ``model.pretrained=none`` as "none"
NO_WEIGHTS = ("", "null", "none", "None")


def no_weights(pretrained) -> bool:
    """True when ``pretrained`` names no checkpoint: an open_clip model is then randomly initialised (an hf
    model has its weights from ``model.arch``)."""
    return pretrained is None or pretrained in NO_WEIGHTS


def model_label(arch: str, pretrained, source: str = "open_clip") -> str:
    """A model by source, architecture and weights: ``ViT-B-16 openai``, a checkpoint by its file name
    (``ViT-B-16 ft.safetensors``), ``ViT-B-16 (random init)`` without weights; a Hugging Face model carries
    its weights in ``arch``, so ``openai/clip-vit-base-patch16 (hf)`` or a local folder by its name,
    ``my-clip (hf)``. ``source`` "" (a results row from before the column) is open_clip."""
    pretrained = "" if pretrained is None or pretrained != pretrained else str(pretrained)  # NaN: an empty cell
    if source == "hf":
        local = arch.startswith((".", "/", "~")) or "\\" in arch or arch.count("/") > 1
        return f"{PurePath(arch).name if local else arch} (hf)"
    if no_weights(pretrained):
        return f"{arch} (random init)"
    checkpoint = "/" in pretrained or "\\" in pretrained or PurePath(pretrained).suffix in (".pt", ".bin", ".safetensors", ".pth")
    return f"{arch} {PurePath(pretrained).name}" if checkpoint else f"{arch} {pretrained}"

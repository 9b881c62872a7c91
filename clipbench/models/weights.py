"""Whether ``model.pretrained`` names any weights. Torch-free: config checks, the runner's random-init banner,
the model factories and the report all decide it here."""

from __future__ import annotations

#: the spellings of "no weights" besides None (YAML ``null``): Hydra passes ``model.pretrained=none`` as "none"
NO_WEIGHTS = ("", "null", "none", "None")


def no_weights(pretrained) -> bool:
    """True when ``pretrained`` names no checkpoint: an open_clip model is then randomly initialised (an hf
    model has its weights from ``model.arch``)."""
    return pretrained is None or pretrained in NO_WEIGHTS

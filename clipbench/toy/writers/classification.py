"""CIFAR-100's ``cifar-100-python`` release (read by ``clipbench.data.classification``)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipbench.data.classification import CIFAR_DIR, CIFAR_META
from clipbench.errors import ConfigError


def write_cifar100(
    root: str | Path,
    split: str,
    images: np.ndarray,
    labels: Sequence[int],
    classnames: Sequence[str],
    coarse_labels: Sequence[int] | None = None,
) -> Path:
    """Write ``cifar-100-python/{split,meta}`` exactly as the release lays them out (HWC uint8 in)."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ConfigError("images", f"cifar100 images must be (N, 32, 32, 3) uint8, got {images.shape}")
    base = Path(root) / CIFAR_DIR
    base.mkdir(parents=True, exist_ok=True)
    coarse = list(coarse_labels) if coarse_labels is not None else [0] * len(labels)
    batch = {
        "filenames": [f"{i:06d}.png" for i in range(len(labels))],
        "batch_label": f"{split} batch",
        "fine_labels": [int(x) for x in labels],
        "coarse_labels": coarse,
        "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
    }
    with open(base / split, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    meta = {"fine_label_names": [c.replace(" ", "_") for c in classnames], "coarse_label_names": ["all"]}
    with open(base / CIFAR_META, "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return base


def write_imagefolder(root: str | Path, split: str, images: Sequence, labels: Sequence[int], classnames: Sequence[str]) -> Path:
    """``root/split/<class folder>/<index>.png``, torchvision's ImageFolder layout (class folders with ``_`` for
    spaces, as ``dataset=imagefolder`` reads them back), one folder per class even when it has no image."""
    base = Path(root) / split
    folders = [c.replace(" ", "_") for c in classnames]
    for folder in folders:
        (base / folder).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        image.save(base / folders[int(label)] / f"{i:06d}.png")
    return base

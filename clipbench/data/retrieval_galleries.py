"""Retrieval galleries (task=retrieval): images with their captions, from Karpathy-split JSON
(``flickr30k``, ``coco_captions``) or Hugging Face caption datasets (``hf_captions``).

Each loader reads its release's real on-disk format (``clipbench.toy.writers.retrieval_galleries`` writes
Karpathy's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from clipbench.data.base import (
    IMAGE_ERRORS,
    ImageRoot,
    file_identity,
    load_hf_split,
    open_rgb,
    register_dataset,
    require_dir,
    require_file,
    to_rgb,
)
from clipbench.data.captions import is_caption, read_json
from clipbench.errors import ConfigError, DataError


class RetrievalSet:
    """Gallery images with their captions; ``text_to_image[t]`` is the image caption t describes."""

    def __init__(self, name: str, images: Sequence, captions: Sequence[Sequence[str]], key: Any, empty_captions: int = 0):
        self.name = name
        self._images = list(images)
        self.captions = [c for caps in captions for c in caps]
        self.text_to_image = [i for i, caps in enumerate(captions) for _ in caps]
        self.key = key  # identifies the annotations for the embedding cache
        self.empty_captions = empty_captions  # dropped while reading

    def identity(self) -> list:
        """What the gallery embeddings depend on: the annotations and each image file (path, size, mtime)."""
        return [self.key, file_identity(p for p in self._images if p is None or isinstance(p, (str, Path)))]

    def __len__(self) -> int:
        return len(self._images)

    def image(self, index: int) -> Image.Image | None:
        item = self._images[index]
        if item is None or isinstance(item, (str, Path)):
            return open_rgb(item)
        try:
            return to_rgb(item())
        except IMAGE_ERRORS:
            return None

    def label(self, index: int) -> int:
        return index

    def subset(self, n: int) -> RetrievalSet:
        """The first ``n`` images and their captions."""
        caps: list[list[str]] = [[] for _ in range(min(n, len(self)))]
        for text, owner in zip(self.captions, self.text_to_image):
            if owner < n:
                caps[owner].append(text)
        return RetrievalSet(self.name, self._images[:n], caps, [self.key, n], self.empty_captions)


def read_karpathy(path: str | Path, split: str, images: str | Path, allow_outside_images: bool = False) -> RetrievalSet:
    """Karpathy's ``dataset_{flickr30k,coco}.json``: images[].{filename, filepath?, split, sentences[].raw}."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: expected a Karpathy split file with an 'images' list")
    files, captions, empty = [], [], 0
    images_root = ImageRoot(images, allow_outside_images)
    for i, img in enumerate(data["images"]):
        try:
            if img["split"] != split and not (split == "train" and img["split"] == "restval"):
                continue
            rel = Path(img.get("filepath", "")) / img["filename"]
            raw = [s["raw"] for s in img["sentences"]]
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path}: images[{i}] lacks {exc}") from None
        caps = [c for c in raw if is_caption(c)]
        empty += len(raw) - len(caps)
        files.append(images_root.path(rel))
        captions.append(caps)
    if not files:
        raise DataError(f"{path}: no images in split {split!r}")
    images_root.report()
    stat = path.stat()
    return RetrievalSet(path.stem, files, captions, [str(path.resolve()), stat.st_size, stat.st_mtime_ns, split], empty)


KARPATHY_HOW = (
    "download Karpathy's caption_datasets (dataset_flickr30k.json / dataset_coco.json) into dataset.root "
    "and the images into dataset.images"
)


@dataclass
class KarpathyConfig:
    name: str = "flickr30k"
    root: str | None = None  # holds dataset_<name>.json
    images: str | None = None  # flickr30k-images/ or the COCO root holding train2014/ val2014/
    split: str = "test"
    annotation: str = "dataset_flickr30k.json"
    allow_outside_images: bool = False  # accept absolute or ../ file names that leave dataset.images

    def validate(self) -> None:
        root = require_dir(self.root, "dataset.root", KARPATHY_HOW)
        require_file(root / self.annotation, "dataset.annotation", KARPATHY_HOW)
        require_dir(self.images, "dataset.images", KARPATHY_HOW)
        if self.split not in ("train", "val", "test", "restval"):
            raise ConfigError("dataset.split", f"{self.split!r} is not allowed; use train, val, test or restval")


@dataclass
class CocoKarpathyConfig(KarpathyConfig):
    name: str = "coco_captions"
    annotation: str = "dataset_coco.json"


@register_dataset("flickr30k", KarpathyConfig, tasks={"retrieval"})
def build_flickr30k(cfg: KarpathyConfig) -> RetrievalSet:
    return read_karpathy(Path(cfg.root) / cfg.annotation, cfg.split, cfg.images, cfg.allow_outside_images)


@register_dataset("coco_captions", CocoKarpathyConfig, tasks={"retrieval"})
def build_coco_captions(cfg: CocoKarpathyConfig) -> RetrievalSet:
    return read_karpathy(Path(cfg.root) / cfg.annotation, cfg.split, cfg.images, cfg.allow_outside_images)


@dataclass
class HFCaptionsConfig:
    name: str = "hf_captions"
    path: str | None = None  # hub name (e.g. nlphuji/flickr_1k_test_image_text_retrieval) or a save_to_disk folder
    split: str = "test"
    image_column: str = "image"
    caption_column: str = "caption"  # a string or a list of strings per image
    root: str | None = None  # cache_dir for hub downloads

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("dataset.path", "is not set; give a Hugging Face dataset name or a save_to_disk folder")


def read_hf_captions(cfg: HFCaptionsConfig) -> RetrievalSet:
    ds = load_hf_split(cfg.path, cfg.split, cfg.root)
    for col, key in ((cfg.image_column, "dataset.image_column"), (cfg.caption_column, "dataset.caption_column")):
        if col not in ds.column_names:
            raise ConfigError(key, f"{col!r} is not a column; columns are {ds.column_names}")
    captions, empty = [], 0
    for i, caps in enumerate(ds[cfg.caption_column]):
        caps = [caps] if isinstance(caps, str) else caps
        if not isinstance(caps, list):
            raise DataError(f"{cfg.path}: row {i}: {cfg.caption_column!r} must be a caption or a list of captions")
        kept = [c for c in caps if is_caption(c)]
        empty += len(caps) - len(kept)
        captions.append(kept)
    column = ds.select_columns([cfg.image_column])
    images = [_HFImage(column, i, cfg.image_column) for i in range(len(ds))]
    key = [cfg.path, cfg.split, getattr(ds, "_fingerprint", None) or hashlib.sha256(str(captions).encode()).hexdigest()]
    return RetrievalSet(Path(str(cfg.path)).name, images, captions, key, empty)


class _HFImage:
    def __init__(self, ds, index: int, column: str):
        self.ds, self.index, self.column = ds, index, column

    def __call__(self) -> Image.Image:
        value = self.ds[self.index][self.column]
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, dict) and value.get("path"):
            image = open_rgb(value["path"])
            if image is None:
                raise OSError(f"unreadable image {value['path']}")
            return image
        raise OSError(f"row {self.index}: {self.column!r} holds no image")


@register_dataset("hf_captions", HFCaptionsConfig, tasks={"retrieval"})
def build_hf_captions(cfg: HFCaptionsConfig) -> RetrievalSet:
    return read_hf_captions(cfg)

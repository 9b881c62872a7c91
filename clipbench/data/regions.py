"""Region classification data: images with the boxes of the object to classify and one class label.

Loaders for a generic COCO-style JSON, CUB-200-2011 and Stanford Dogs, each in its on-disk release format.
Boxes are (x0, y0, x1, y1) pixels; all of a sample's boxes form one region.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipbench.data.base import ImageRoot, open_rgb, register_dataset, require_dir, require_file
from clipbench.errors import ConfigError, DataError
from clipbench.metrics.boxes import Box, parse_xywh, xywh_to_xyxy


@dataclass
class RegionSample:
    path: Path
    boxes: list[Box]
    label: int
    sample_id: str


class RegionDataset:
    """Indexable samples with class names; ``image(i)`` is None for an unreadable image."""

    def __init__(self, samples: list[RegionSample], classnames: list[str]):
        self.samples, self.classnames = samples, classnames

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> Image.Image | None:
        return open_rgb(self.samples[index].path)

    def label(self, index: int) -> int:
        return self.samples[index].label

    def boxes(self, index: int) -> list[Box]:
        return self.samples[index].boxes

    def sample_id(self, index: int) -> str:
        return self.samples[index].sample_id


def _split_choice(split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ConfigError("dataset.split", f"{split!r} is not allowed; use one of {list(allowed)}")


# ---------------------------------------------------------------- generic COCO-style JSON


@dataclass
class CocoRegionsConfig:
    name: str = "coco_regions"
    annotations: str | None = None  # COCO-style JSON: images, annotations (bbox [x,y,w,h]), categories
    images: str | None = None
    split: str = "val"  # a label for the results only
    allow_outside_images: bool = False  # accept absolute or ../ file names that leave dataset.images

    def validate(self) -> None:
        require_file(self.annotations, "dataset.annotations", "give a COCO-style JSON with images, annotations and categories")
        require_dir(self.images, "dataset.images", "point it at the folder the JSON's file_name entries are relative to")


def load_coco_regions(annotations: str | Path, images: str | Path, allow_outside_images: bool = False) -> RegionDataset:
    """One sample per (image, category): the region is all of that category's boxes in the image."""
    path = Path(annotations)
    images_root = ImageRoot(images, allow_outside_images)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = sorted(data["categories"], key=lambda c: c["id"])
        index_of = {c["id"]: i for i, c in enumerate(categories)}
        files = {im["id"]: im["file_name"] for im in data["images"]}
        grouped: dict[tuple, list[Box]] = {}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            grouped.setdefault((ann["image_id"], ann["category_id"]), []).append(parse_xywh(ann.get("bbox")))
        samples = [
            RegionSample(images_root.path(files[image_id]), boxes, index_of[cat], f"{image_id}:{cat}")
            for (image_id, cat), boxes in grouped.items()
        ]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a COCO-style annotation file ({type(exc).__name__}: {exc})") from None
    images_root.report()
    return RegionDataset(samples, [str(c["name"]).replace("_", " ") for c in categories])


@register_dataset("coco_regions", CocoRegionsConfig, tasks={"region_cls"})
def build_coco_regions(cfg: CocoRegionsConfig) -> RegionDataset:
    return load_coco_regions(cfg.annotations, cfg.images, cfg.allow_outside_images)


# ---------------------------------------------------------------- CUB-200-2011

CUB_HOW = "download CUB_200_2011.tgz (data.caltech.edu/records/65de6-vp158) and point dataset.root at the extracted folder"
CUB_DIR = "CUB_200_2011"
CUB_FILES = ("images.txt", "bounding_boxes.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt")


@dataclass
class CubConfig:
    name: str = "cub"
    root: str | None = None  # CUB_200_2011/ or its parent
    split: str = "test"  # test | train | all (train_test_split.txt)

    def validate(self) -> None:
        _split_choice(self.split, ("test", "train", "all"))
        cub_dir(self.root)


def cub_dir(root: str | Path | None) -> Path:
    base = require_dir(root, "dataset.root", CUB_HOW)
    for folder in (base, base / CUB_DIR):
        if all((folder / f).is_file() for f in CUB_FILES):
            return folder
    raise ConfigError("dataset.root", f"no {', '.join(CUB_FILES)} in {base} or {base / CUB_DIR}; {CUB_HOW}")


def _table(path: Path) -> dict[str, list[str]]:
    """``<id> <fields...>`` lines as {id: fields}."""
    out = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            parts = line.split()
            if len(parts) < 2:
                raise DataError(f"{path}, line {line_no + 1}: expected '<id> <value...>', got {line!r}")
            out[parts[0]] = parts[1:]
    return out


def cub_classname(folder_name: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``."""
    return folder_name.split(".", 1)[-1].replace("_", " ")


def load_cub(root: str | Path, split: str = "test") -> RegionDataset:
    base = cub_dir(root)
    images, boxes, labels, classes, is_train = (_table(base / f) for f in CUB_FILES)
    try:
        class_ids = sorted(classes, key=int)
        classnames = [cub_classname(classes[c][0]) for c in class_ids]
        index_of = {c: i for i, c in enumerate(class_ids)}
        samples = []
        for image_id in sorted(images, key=int):
            train = is_train[image_id][0] == "1"
            if split == "all" or (split == "train") == train:
                box = xywh_to_xyxy([float(v) for v in boxes[image_id][:4]])
                samples.append(RegionSample(base / "images" / images[image_id][0], [box], index_of[labels[image_id][0]], image_id))
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"{base}: inconsistent CUB-200-2011 files ({type(exc).__name__}: {exc})") from None
    return RegionDataset(samples, classnames)


@register_dataset("cub", CubConfig, tasks={"region_cls"})
def build_cub(cfg: CubConfig) -> RegionDataset:
    return load_cub(cfg.root, cfg.split)


# ---------------------------------------------------------------- Stanford Dogs

DOGS_HOW = (
    "download images.tar, annotation.tar and lists.tar (vision.stanford.edu/aditya86/ImageNetDogs) and point "
    "dataset.root at the folder holding Images/, Annotation/ and the list files"
)


@dataclass
class DogsConfig:
    name: str = "stanford_dogs"
    root: str | None = None  # holds Images/, Annotation/ and {test,train,file}_list.mat (or .txt)
    split: str = "test"  # test | train | all (file_list)

    def validate(self) -> None:
        _split_choice(self.split, ("test", "train", "all"))
        root = require_dir(self.root, "dataset.root", DOGS_HOW)
        require_dir(root / "Annotation", "dataset.root", f"{root} has no Annotation/; {DOGS_HOW}")
        dogs_list_path(root, self.split)


def dogs_list_path(root: Path, split: str) -> Path:
    stem = "file_list" if split == "all" else f"{split}_list"
    for name in (f"{stem}.mat", f"{stem}.txt", f"lists/{stem}.mat", f"lists/{stem}.txt"):
        if (root / name).is_file():
            return root / name
    raise ConfigError("dataset.root", f"no {stem}.mat or {stem}.txt in {root}; {DOGS_HOW}")


def read_dogs_list(path: Path) -> list[str]:
    """Image paths relative to Images/ (``n02085620-Chihuahua/n02085620_10074.jpg``) from a .mat or .txt list."""
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    import scipy.io

    try:
        cells = scipy.io.loadmat(str(path))["file_list"]
        return [str(cell.flat[0]) for cell in cells.flat]
    except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
        raise DataError(f"{path}: not a Stanford Dogs list (.mat with file_list) ({type(exc).__name__}: {exc})") from None


def dogs_classname(folder: str) -> str:
    """``n02085620-Chihuahua`` -> ``Chihuahua``; ``n02086646-Blenheim_spaniel`` -> ``Blenheim spaniel``."""
    return folder.split("-", 1)[-1].replace("_", " ")


def read_voc_boxes(path: Path) -> list[Box]:
    try:
        root = ET.parse(path).getroot()
        return [
            tuple(float(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr]
            for obj in root.iter("object")
        ]
    except (ET.ParseError, AttributeError, TypeError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a VOC annotation ({type(exc).__name__}: {exc})") from None


def load_stanford_dogs(root: str | Path, split: str = "test") -> RegionDataset:
    root = Path(root)
    folders = sorted(p.name for p in (root / "Annotation").iterdir() if p.is_dir())
    index_of = {f: i for i, f in enumerate(folders)}
    samples = []
    for rel in read_dogs_list(dogs_list_path(root, split)):
        folder = rel.split("/", 1)[0]
        if folder not in index_of:
            raise DataError(f"{root / 'Annotation'}: no folder {folder!r} for list entry {rel!r}")
        annotation = root / "Annotation" / Path(rel).with_suffix("")
        samples.append(RegionSample(root / "Images" / rel, read_voc_boxes(annotation), index_of[folder], rel))
    return RegionDataset(samples, [dogs_classname(f) for f in folders])


@register_dataset("stanford_dogs", DogsConfig, tasks={"region_cls"})
def build_stanford_dogs(cfg: DogsConfig) -> RegionDataset:
    return load_stanford_dogs(cfg.root, cfg.split)

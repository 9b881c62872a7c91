"""CLIP_benchmark's catalogue by name (``dataset=clip_benchmark dataset.name=<name>``).

The ``clip-benchmark`` package builds each dataset and supplies its class names, templates and
multi-label/retrieval conventions. Its webdataset form (``wds/<name>``) is read here by index from the
local tar shards, so a map-style DataLoader with worker processes decodes it in the shards' order.
"""

from __future__ import annotations

import inspect
import io
import re
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipbench.data.base import IMAGE_ERRORS, register_dataset
from clipbench.data.caption_selection import (
    SUGAR_CREPE_HOW,
    SUGAR_CREPE_SUBSETS,
    build_selection,
    check_selection_name,
    check_selection_root,
    is_selection,
)
from clipbench.data.catalogue_languages import annotation_file, check_language
from clipbench.data.classification import ClassificationDataset
from clipbench.data.retrieval_galleries import RetrievalSet
from clipbench.errors import ConfigError, DataError

CATALOGUE = "clip_benchmark"
RETRIEVAL_NAMES = ("mscoco_captions", "flickr30k", "flickr8k")
WDS_IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")  # clip_benchmark's to_tuple order
WDS_NSHARDS = "nshards.txt"  # in <split>/, beside the shards 0.tar .. <n-1>.tar
WDS_SHARD = "{index}.tar"
WDS_TYPE = "dataset_type.txt"  # "retrieval" or "multilabel"; absent for single-label classification

# How to get the datasets clip_benchmark cannot download through torchvision.
MANUAL = {
    "imagenet1k": "ILSVRC2012_devkit_t12.tar.gz and ILSVRC2012_img_val.tar from image-net.org in dataset.root",
    "imagenet-a": "unpack https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar: dataset.root holds one wnid folder per class",
    "imagenet-r": "unpack https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar: dataset.root holds one wnid folder per class",
    "imagenet-o": "unpack https://people.eecs.berkeley.edu/~hendrycks/imagenet-o.tar: dataset.root holds one wnid folder per class",
    "imagenet_sketch": "unzip ImageNet-Sketch.zip (Google Drive 1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA): dataset.root is its sketch/ folder",
    "cars": "torchvision's StanfordCars layout in dataset.root (its download is no longer hosted)",
    "imagenetv2": "dataset.root holds imagenetv2-matched-frequency-format-val/ (from the ImageNetV2 release)",
    "objectnet": "unzip objectnet-1.0.zip from objectnet.dev: dataset.root holds objectnet-1.0/",
    "mscoco_captions": "dataset.root holds val2014/ and coco_test_karpathy.json (github.com/mehdidc/retrieval_annotations)",
    "flickr30k": "dataset.root holds the images and flickr30k_test_karpathy.txt (github.com/mehdidc/retrieval_annotations)",
    "flickr8k": "dataset.root holds the images and flickr8k_test_karpathy.txt (github.com/mehdidc/retrieval_annotations)",
    "winoground": "accept facebook/winoground's terms on Hugging Face and log in (dataset.root is load_dataset's cache_dir), "
                  "or point dataset.root at a save_to_disk copy",
    **{f"sugar_crepe/{s}": SUGAR_CREPE_HOW for s in SUGAR_CREPE_SUBSETS},
}


def hf_repo(name: str) -> str:
    """The Hugging Face repository where clip_benchmark publishes the webdataset form of ``name``."""
    return "clip-benchmark/wds_" + name.removeprefix("wds/").replace("/", "-")


def how_to_get(name: str) -> str:
    short = name.removeprefix("wds/")
    wds = (
        f"for dataset.name=wds/{short}: `huggingface-cli download --repo-type dataset {hf_repo(short)} --local-dir DIR` "
        f"and dataset.root=DIR (holding <split>/nshards.txt, <split>/0.tar, classnames.txt, zeroshot_classification_templates.txt)"
    )
    if name.startswith("wds/"):
        return wds
    if is_selection(short):
        return MANUAL[short]
    if short.startswith(("vtab/", "tfds/")):
        native = "dataset.download=true prepares it with tensorflow_datasets (needs task_adaptation and network)"
    else:
        native = MANUAL.get(short, "dataset.download=true fetches it with torchvision (needs network), or point dataset.root at torchvision's layout")
    return f"{native}; or {wds}"


@lru_cache(maxsize=1)
def catalogue_names() -> frozenset[str]:
    """Every dataset name clip_benchmark's ``build_dataset`` accepts (read from its own dispatch)."""
    from clip_benchmark.datasets import builder

    source = inspect.getsource(builder.build_dataset)
    return frozenset(re.findall(r"dataset_name == [\"']([^\"']+)[\"']", source))


def catalogue_prefixes() -> tuple[str, ...]:
    from clip_benchmark.datasets import builder

    return tuple(re.findall(r"dataset_name\.startswith\([\"']([^\"']+)[\"']\)", inspect.getsource(builder.build_dataset)))


def is_retrieval(name: str, root: Path | None = None) -> bool:
    if name.startswith("wds/"):
        kind = root / WDS_TYPE if root is not None else None
        return kind is not None and kind.is_file() and kind.read_text().strip().lower() == "retrieval"
    from clip_benchmark.datasets.builder import get_dataset_default_task

    return get_dataset_default_task(name) == "zeroshot_retrieval"


@dataclass
class ClipBenchmarkConfig:
    name: str = "imagenet1k"  # a clip_benchmark dataset name, or wds/<name>
    catalogue: str = CATALOGUE
    # may hold {dataset} / {dataset_cleaned}, as clip_benchmark eval's --dataset_root; for wds/<name>, a
    # folder holding wds_<name>/ (name with / as -) works too
    root: str | None = None
    split: str = "test"
    download: bool = False
    classnames: Any = None  # a list of names, or a JSON file {dataset: [names]} (clip_benchmark's custom_classname_file)
    annotation: str | None = None  # retrieval: clip_benchmark's annotation_file
    language: str = "en"  # class names and templates, or captions, in this language (those the package ships)

    def resolved_root(self) -> Path:
        if self.root in (None, "", "???"):
            raise ConfigError("dataset.root", f"is not set for {self.name}; {how_to_get(self.name)}")
        cleaned = self.name.replace("/", "-")
        root = Path(str(self.root).format(dataset=self.name, dataset_cleaned=cleaned)).expanduser()
        suite_member = root / cleaned.replace("wds-", "wds_", 1)  # a folder holding a whole wds suite
        return suite_member if self.name.startswith("wds/") and suite_member.is_dir() else root

    def validate(self) -> None:
        short = self.name.removeprefix("wds/")
        # clip_benchmark reads any wds/<name> from its shards (e.g. DataComp's wds/wilds/iwildcam)
        known = self.name.startswith("wds/") or short in catalogue_names() or short.startswith(catalogue_prefixes())
        if not known:
            close = sorted(n for n in catalogue_names() if short[:4] in n)[:6]
            raise ConfigError("dataset.name", f"{self.name!r} is not in clip_benchmark's catalogue (e.g. {close or 'imagenet1k, cars, wds/vtab/svhn'})")
        check_language(self.name, self.language)
        check_selection_name(self.name)
        root = self.resolved_root()
        if self.name.startswith("wds/"):
            if not (root / self.split / WDS_NSHARDS).is_file():
                raise ConfigError("dataset.root", f"{root / self.split / WDS_NSHARDS} does not exist; {how_to_get(self.name)}")
        elif not self.download and not root.exists():
            raise ConfigError("dataset.root", f"{root} does not exist; {how_to_get(self.name)}")
        check_selection_root(self.name, root, self.download)
        annotations = annotation_file(self.name, root, self.language)
        if annotations is not None and not annotations.is_file() and not self.download:
            raise ConfigError("dataset.root", f"{annotations} does not exist; dataset.download=true lets clip_benchmark "
                              f"prepare it (images and {self.language} captions, needs network)")
        if self.classnames is not None and not isinstance(self.classnames, (list, tuple, str)):
            raise ConfigError("dataset.classnames", "must be a list of names or a JSON file {dataset: [names]}")
        if isinstance(self.classnames, str) and not Path(self.classnames).expanduser().is_file():
            raise ConfigError("dataset.classnames", f"{self.classnames} does not exist")


def cb_templates(templates) -> list[str] | None:
    """clip_benchmark's ``{c}`` templates as clipbench's ``{}`` ones."""
    if templates is None:
        return None
    if isinstance(templates, dict):
        raise ConfigError("task.templates", "class-specific (CuPL) template files are not supported; give a list")
    return [t.replace("{c}", "{}") for t in templates]


class CatalogueClassification(ClassificationDataset):
    """A clip_benchmark (torchvision-style) dataset built without a transform: items are (PIL image, target)."""

    catalogue = CATALOGUE

    def __init__(self, name: str, ds, classnames, templates, multilabel: bool = False):
        self.name, self.ds = name, ds
        self.classnames = list(classnames)
        self.templates = cb_templates(templates)
        self.multilabel = multilabel

    def __len__(self) -> int:
        return len(self.ds)

    def sample(self, index: int):
        try:
            image, target = self.ds[index]
        except IMAGE_ERRORS:
            return None, self._target_only(index)
        return image.convert("RGB"), _target(target)

    def _target_only(self, index: int):
        targets = getattr(self.ds, "targets", None)
        return _target(targets[index]) if targets is not None else -1

    def image(self, index: int):
        return self.sample(index)[0]

    def label(self, index: int):
        return self.sample(index)[1]


def _target(target):
    if isinstance(target, (int, np.integer)):
        return int(target)
    return np.asarray(target, dtype=np.int64)


class WdsShards:
    """The samples of ``root/split/{0..n-1}.tar`` in webdataset's order: key -> {extension: (tar, offset, size)}."""

    def __init__(self, root: Path, split: str):
        folder = root / split
        try:
            nshards = int((folder / WDS_NSHARDS).read_text().strip())
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder / WDS_NSHARDS}: {exc}") from None
        self.samples: list[dict[str, tuple[str, int, int]]] = []
        for s in range(nshards):
            shard = folder / WDS_SHARD.format(index=s)
            if not shard.is_file():
                raise DataError(f"{shard} does not exist ({folder / WDS_NSHARDS} says {nshards} shards)")
            current_key, current = None, {}
            with tarfile.open(shard) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = _split_name(member.name)
                    if key != current_key and current:
                        self.samples.append(current)
                        current = {}
                    current_key = key
                    current[ext.lower()] = (str(shard), member.offset_data, member.size)
            if current:
                self.samples.append(current)

    def __len__(self) -> int:
        return len(self.samples)


def _split_name(name: str) -> tuple[str, str]:
    """webdataset's key/extension split: the extension starts at the first dot of the basename."""
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (match.group(1), match.group(2)) if match else (name, "")


def read_member(where: tuple[str, int, int]) -> bytes:
    path, offset, size = where
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


class TarImage:
    """One image member of a shard, decoded like webdataset's ``ImageHandler("pil")`` (RGB)."""

    def __init__(self, where: tuple[str, int, int]):
        self.where = where

    def __call__(self) -> Image.Image:
        with Image.open(io.BytesIO(read_member(self.where))) as im:
            im.load()
            return im.convert("RGB")


def _image_of(sample: dict) -> tuple[str, int, int] | None:
    return next((sample[e] for e in WDS_IMAGE_EXTS if e in sample), None)


class WdsClassification(ClassificationDataset):
    catalogue = CATALOGUE

    def __init__(self, name: str, shards: WdsShards, classnames, templates, multilabel: bool):
        self.name, self.shards = name, shards
        self.classnames = list(classnames)
        self.templates = cb_templates(templates)
        self.multilabel = multilabel

    def __len__(self) -> int:
        return len(self.shards)

    def sample(self, index: int):
        item = self.shards.samples[index]
        label = self.label(index)
        where = _image_of(item)
        if where is None:
            return None, label
        try:
            return TarImage(where)(), label
        except IMAGE_ERRORS:
            return None, label

    def image(self, index: int):
        return self.sample(index)[0]

    def label(self, index: int):
        item = self.shards.samples[index]
        if self.multilabel:
            return np.load(io.BytesIO(read_member(item["npy"]))).astype(np.int64)
        return int(read_member(item["cls"]).decode().strip())


def _build_cb(cfg: ClipBenchmarkConfig, root: Path, task: str):
    from clip_benchmark.datasets.builder import build_dataset

    custom = str(Path(cfg.classnames).expanduser()) if isinstance(cfg.classnames, str) else None
    try:
        return build_dataset(
            cfg.name, root=str(root), transform=None, split=cfg.split, download=cfg.download,
            annotation_file=cfg.annotation, language=cfg.language, task=task, custom_classname_file=custom,
        )
    except (RuntimeError, FileNotFoundError, AssertionError, ValueError, KeyError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{cfg.name} under {root}: {message}; {how_to_get(cfg.name)}") from None


def _override_classnames(cfg: ClipBenchmarkConfig, classnames: list[str]) -> list[str]:
    if isinstance(cfg.classnames, (list, tuple)):
        if len(cfg.classnames) != len(classnames):
            raise ConfigError("dataset.classnames", f"{len(cfg.classnames)} names for {len(classnames)} classes of {cfg.name}")
        return [str(c) for c in cfg.classnames]
    if classnames is None:
        raise DataError(f"{cfg.name}: no class names (classnames.txt is missing); give dataset.classnames")
    return list(classnames)


def build_retrieval(cfg: ClipBenchmarkConfig, root: Path) -> RetrievalSet:
    if cfg.name.startswith("wds/"):
        shards = WdsShards(root, cfg.split)
        images, captions = [], []
        for item in shards.samples:
            where = _image_of(item)
            if where is None or "txt" not in item:
                raise DataError(f"{cfg.name}: a sample in {item[next(iter(item))][0]} lacks an image or its txt captions")
            images.append(TarImage(where))
            captions.append(read_member(item["txt"]).decode("utf-8").splitlines())
        key = [CATALOGUE, cfg.name, cfg.split, [_shard_stamp(p) for p in sorted({w[0] for s in shards.samples for w in s.values()})]]
        return RetrievalSet(cfg.name, images, captions, key)
    ds = _build_cb(cfg, root, "zeroshot_retrieval")
    if hasattr(ds, "coco"):  # torchvision CocoCaptions
        paths = [Path(ds.root) / ds.coco.loadImgs(i)[0]["file_name"] for i in ds.ids]
        captions = [[a["caption"] for a in ds.coco.loadAnns(ds.coco.getAnnIds(i))] for i in ds.ids]
        annotation = cfg.annotation or f"{root}/coco_{cfg.split}_karpathy.json"
    elif hasattr(ds, "data"):  # clip_benchmark's Flickr, or a multilingual set: one caption per image
        paths = [Path(ds.root) / img for img, _ in ds.data]  # the multilingual sets' paths are absolute
        captions = [[caps] if isinstance(caps, str) else list(caps) for _, caps in ds.data]
        annotation = ds.ann_file
    else:
        raise ConfigError("dataset.name", f"{cfg.name}: retrieval supports {', '.join(RETRIEVAL_NAMES)} and their wds/ forms")
    return RetrievalSet(cfg.name, paths, captions, [CATALOGUE, cfg.name, cfg.split, _shard_stamp(annotation)])


def _shard_stamp(path) -> list:
    p = Path(path)
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


@register_dataset(CATALOGUE, ClipBenchmarkConfig, tasks={"zeroshot", "retrieval", "compositionality", "linear_probe"})
def build_clip_benchmark(cfg: ClipBenchmarkConfig):
    root = cfg.resolved_root()
    if is_selection(cfg.name):
        return build_selection(cfg, root, _build_cb)
    if is_retrieval(cfg.name, root):
        return build_retrieval(cfg, root)
    ds = _build_cb(cfg, root, "zeroshot_classification")
    classnames = _override_classnames(cfg, ds.classes)
    if cfg.name.startswith("wds/"):
        kind = root / WDS_TYPE
        multilabel = kind.is_file() and kind.read_text().strip().lower() == "multilabel"
        return WdsClassification(cfg.name, WdsShards(root, cfg.split), classnames, ds.templates, multilabel)
    return CatalogueClassification(cfg.name, ds, classnames, ds.templates, multilabel=cfg.name == "voc2007_multilabel")

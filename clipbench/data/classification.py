"""Image-classification datasets: CIFAR-100 (torchvision's on-disk release), image folders, HF datasets."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipbench.data.base import IMAGE_ERRORS, load_hf_split, open_rgb, register_dataset, require_dir, to_rgb
from clipbench.errors import ConfigError, DataError


class ClassificationDataset:
    """Indexable (image, label) pairs with class names; an unreadable image yields None."""

    classnames: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> Image.Image | None:
        raise NotImplementedError

    def label(self, index: int) -> int:
        raise NotImplementedError


# ---------------------------------------------------------------- CIFAR-100

CIFAR_DIR = "cifar-100-python"  # holds one file per split (train, test) and the class names (meta)
CIFAR_META = "meta"
CIFAR_HOW = "pass dataset.download=true (needs network) or point dataset.root at a folder holding cifar-100-python/"
# the release's checksums, the ones torchvision's CIFAR100 verifies
CIFAR_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
             CIFAR_META: "7973b15100ade9c7d40fb424638fde48"}


def verify_cifar_release(root: str | Path, split: str) -> None:
    """The split's and the meta file's md5 against the release (hashlib: no torch import needed)."""
    for name in (split, CIFAR_META):
        path = Path(root).expanduser() / CIFAR_DIR / name
        digest = hashlib.md5()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise ConfigError("dataset.root", f"cannot read {path} ({exc}); {CIFAR_HOW}") from None
        if digest.hexdigest() != CIFAR_MD5[name]:
            raise ConfigError(
                "dataset.check_integrity",
                f"{path} fails the release checksum (md5 {digest.hexdigest()}, expected {CIFAR_MD5[name]}); "
                "re-download it, or pass dataset.check_integrity=false for generated files",
            )


@dataclass
class CifarConfig:
    name: str = "cifar100"
    root: str | None = None
    split: str = "test"
    download: bool = False
    check_integrity: bool = True

    def validate(self) -> None:
        if self.split not in ("train", "test"):
            raise ConfigError("dataset.split", f"{self.split!r} is not allowed for cifar100; use train or test")
        if not self.download:
            root = require_dir(self.root, "dataset.root", CIFAR_HOW)
            if not (root / CIFAR_DIR / self.split).is_file():
                raise ConfigError("dataset.root", f"{root / CIFAR_DIR / self.split} does not exist; {CIFAR_HOW}")
            if self.check_integrity:
                verify_cifar_release(root, self.split)
            read_cifar(root, self.split)  # labels checked before any model is loaded


class Cifar100(ClassificationDataset):
    def __init__(self, root: str | Path, split: str = "test", download: bool = False, check_integrity: bool = True):
        root = Path(root).expanduser()
        if download:
            self._verify_or_download(root, split, download)
        elif check_integrity:
            verify_cifar_release(root, split)
        self.data, self.labels, names = read_cifar(root, split)
        self.classnames = [n.replace("_", " ") for n in names]

    @staticmethod
    def _verify_or_download(root: Path, split: str, download: bool) -> None:
        """torchvision downloads the release and verifies it."""
        from torchvision.datasets import CIFAR100

        try:
            CIFAR100(str(root), train=split == "train", download=download)
        except RuntimeError as exc:
            raise DataError(f"cifar100 under {root}: {exc} (generated fixtures: dataset.check_integrity=false)") from None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.data[index])

    def label(self, index: int) -> int:
        return self.labels[index]


class _PlainUnpickler(pickle.Unpickler):
    """Only builtin containers, scalars and numpy arrays: a crafted pickle cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "bytearray"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def read_cifar(root: Path, split: str) -> tuple[np.ndarray, list[int], list[str]]:
    """(images HxWx3 uint8, fine labels, class names) of a cifar-100-python split; one label per image,
    each in 0..len(names)-1, or a DataError naming the file."""
    base = root / CIFAR_DIR
    try:
        batch = _read_pickle(base / split)
        names = list(_read_pickle(base / CIFAR_META)["fine_label_names"])
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = [int(x) for x in batch["fine_labels"]]
    except (KeyError, ValueError, TypeError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"{base}: not a valid cifar-100-python release ({type(exc).__name__}: {exc})") from None
    if len(labels) != len(data):
        raise DataError(f"{base / split}: {len(labels)} labels for {len(data)} images")
    bad = [y for y in labels if not 0 <= y < len(names)]
    if bad:
        raise DataError(f"{base / split}: {len(bad)} label(s) outside 0..{len(names) - 1} (first: {bad[0]}), "
                        f"the range of {base / CIFAR_META}'s {len(names)} class names")
    return data, labels, names


def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path} does not exist; {CIFAR_HOW}")
    with open(path, "rb") as f:
        return _PlainUnpickler(f, encoding="latin1").load()


@register_dataset("cifar100", CifarConfig, tasks={"zeroshot", "linear_probe"})
def build_cifar100(cfg: CifarConfig) -> Cifar100:
    return Cifar100(cfg.root, cfg.split, cfg.download, cfg.check_integrity)


# ---------------------------------------------------------------- image folder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass
class ImageFolderConfig:
    name: str = "imagefolder"
    root: str | None = None
    split: str | None = None  # a subfolder of root (e.g. val), or null for root itself
    classnames: list[str] | None = None  # display names; default: folder names with _ as spaces

    def validate(self) -> None:
        root = require_dir(self.root, "dataset.root", "point it at a folder with one subfolder per class")
        if self.split:
            require_dir(root / self.split, "dataset.split", f"no subfolder {self.split!r} under {root}")


class ImageFolder(ClassificationDataset):
    def __init__(self, root: str | Path, split: str | None = None, classnames: Sequence[str] | None = None):
        base = Path(root).expanduser() / (split or "")
        classes = sorted(p.name for p in base.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{base} has no class subfolders")
        self.items = [
            (p, ci)
            for ci, c in enumerate(classes)
            for p in sorted((base / c).rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if classnames is not None and len(classnames) != len(classes):
            raise ConfigError("dataset.classnames", f"{len(classnames)} names for {len(classes)} class folders")
        self.classnames = list(classnames) if classnames else [c.replace("_", " ") for c in classes]

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> Image.Image | None:
        return open_rgb(self.items[index][0])

    def label(self, index: int) -> int:
        return self.items[index][1]


@register_dataset("imagefolder", ImageFolderConfig, tasks={"zeroshot", "linear_probe"})
def build_imagefolder(cfg: ImageFolderConfig) -> ImageFolder:
    return ImageFolder(cfg.root, cfg.split, cfg.classnames)


# ---------------------------------------------------------------- Hugging Face datasets


@dataclass
class HFConfig:
    name: str = "hf"
    path: str | None = None  # hub name (e.g. "uoft-cs/cifar100") or a local save_to_disk folder
    split: str = "test"
    image_column: str = "image"
    label_column: str = "label"
    classnames: list[str] | None = None
    root: str | None = None  # cache_dir for hub downloads

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("dataset.path", "is not set; give a Hugging Face dataset name or a save_to_disk folder")


class HFClassification(ClassificationDataset):
    def __init__(self, cfg: HFConfig):
        ds = load_hf_split(cfg.path, cfg.split, cfg.root)
        for col, key in ((cfg.image_column, "dataset.image_column"), (cfg.label_column, "dataset.label_column")):
            if col not in ds.column_names:
                raise ConfigError(key, f"{col!r} is not a column; columns are {ds.column_names}")
        self.ds = ds
        self.image_column = cfg.image_column
        self.labels = [int(x) for x in ds[cfg.label_column]]
        feature = ds.features[cfg.label_column]
        if cfg.classnames:
            self.classnames = list(cfg.classnames)
        elif hasattr(feature, "names"):
            self.classnames = [n.replace("_", " ") for n in feature.names]
        else:
            raise ConfigError("dataset.classnames", f"{cfg.label_column!r} is not a ClassLabel; give dataset.classnames")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image | None:
        try:
            im: Any = self.ds[index][self.image_column]
            return to_rgb(im) if isinstance(im, Image.Image) else open_rgb(im["path"])
        except IMAGE_ERRORS:
            return None

    def label(self, index: int) -> int:
        return self.labels[index]


@register_dataset("hf", HFConfig, tasks={"zeroshot", "linear_probe"})
def build_hf(cfg: HFConfig) -> HFClassification:
    return HFClassification(cfg)

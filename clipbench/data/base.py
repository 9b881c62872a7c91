"""The dataset registry and the pieces every loader shares: root checks, safe image reading."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from clipbench.errors import ConfigError, DataError
from clipbench.registry import Registry


@dataclass
class DatasetSpec:
    name: str
    config: type
    build: Callable
    tasks: frozenset[str] = field(default_factory=frozenset)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, config: type, tasks: set[str] | frozenset[str]):
    def add(build: Callable) -> Callable:
        DATASETS.register(name, DatasetSpec(name, config, build, frozenset(tasks)))
        return build

    return add


def require_dir(path: str | Path | None, key: str, how_to_get: str) -> Path:
    """A dataset directory that must exist; the error says how to get it."""
    if path in (None, "", "???"):
        raise ConfigError(key, f"is not set; {how_to_get}")
    p = Path(str(path)).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(key, f"{p} is a file, not a folder; {how_to_get}")
    if not p.is_dir():
        raise ConfigError(key, f"{p} does not exist; {how_to_get}")
    return p


def require_file(path: str | Path | None, key: str, how_to_get: str) -> Path:
    if path in (None, "", "???"):
        raise ConfigError(key, f"is not set; {how_to_get}")
    p = Path(str(path)).expanduser()
    if p.is_dir():
        raise ConfigError(key, f"{p} is a folder, not a file; {how_to_get}")
    if not p.is_file():
        raise ConfigError(key, f"{p} does not exist; {how_to_get}")
    return p


def release_folder(root: str | Path, subdir: str) -> Path:
    """``root/subdir`` when the release was unpacked under root, else root itself."""
    root = Path(root).expanduser()
    return root / subdir if (root / subdir).is_dir() else root


def require_release(root: str | Path | None, subdir: str, needed: list[str], how_to_get: str) -> Path:
    """The release folder under ``dataset.root``, holding every file in ``needed``."""
    folder = release_folder(require_dir(root, "dataset.root", how_to_get), subdir)
    for name in needed:
        if not (folder / name).is_file():
            raise ConfigError("dataset.root", f"{folder / name} does not exist; {how_to_get}")
    return folder


class ImageRoot:
    """Resolves annotation file names under ``dataset.images``. A name that is absolute or climbs out
    of it with ``..`` is refused (None: its sample is skipped and counted as unreadable) unless
    ``allow_outside``; the names are compared as written, so symlinked folders inside the root work."""

    def __init__(self, folder: str | Path, allow_outside: bool = False):
        self.folder = Path(str(folder)).expanduser()
        self.allow_outside = allow_outside
        self.refused: dict[str, None] = {}  # distinct refused names, in order

    def path(self, name: str | Path) -> Path | None:
        joined = self.folder / name
        if self.allow_outside:
            return joined
        root = os.path.abspath(self.folder)
        if os.path.commonpath([root, os.path.abspath(joined)]) != root:
            self.refused[str(name)] = None
            return None
        return joined

    def report(self) -> None:
        """One line when names were refused."""
        if self.refused:
            print(f"refused {len(self.refused)} image file name(s) that leave dataset.images={self.folder} "
                  f"(first: {next(iter(self.refused))!r}); their samples are skipped. Set dataset.allow_outside_images=true "
                  "for a layout that needs them")


def file_identity(paths) -> list:
    """What cached embeddings of these files depend on: each file's resolved path, size and mtime."""
    out = []
    for p in paths:
        if p is None:  # a refused file name
            out.append(None)
            continue
        p = Path(p)
        try:
            st = p.stat()
            out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p), None, None])
    return out


IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def is_regular_file(path: str | Path) -> bool:
    """Like ``Path.is_file``, but False (not an exception) for names the filesystem refuses, e.g. one over
    the 255-byte name limit (``Path.is_file`` raises ENAMETOOLONG on Python 3.11)."""
    return os.path.isfile(path)


# The factor that takes a high-depth mode's values to 0..255: 16-bit integers (PNG and TIFF greyscale open as
# I;16* or I) by 255/65535, 32-bit floats (F) as 0..1, the float convention of torchvision and scikit-image.
# PIL's own convert("RGB") clips them at 255 instead (a 16-bit picture turns almost white).
HIGH_DEPTH_SCALE = {"I;16": 255 / 65535, "I;16B": 255 / 65535, "I;16L": 255 / 65535, "I;16N": 255 / 65535,
                    "I": 255 / 65535, "F": 255.0}


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, high-depth modes scaled (rounded) to 8 bits first."""
    scale = HIGH_DEPTH_SCALE.get(image.mode)
    if scale is not None:
        values = np.rint(np.asarray(image, dtype=np.float64) * scale)
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def open_rgb(path: str | Path | None) -> Image.Image | None:
    """The image as RGB, or None when it is missing, not a regular file (a FIFO would block forever),
    over PIL's decompression-bomb limit or otherwise unreadable (callers count it as skipped)."""
    if path is None or not is_regular_file(path):
        return None
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except IMAGE_ERRORS:
        return None


def load_hf_split(path: str, split: str, cache_dir: str | None = None, aliases: dict[str, str] | None = None):
    """A split of a Hugging Face hub dataset, or of a local ``save_to_disk`` folder.

    ``aliases`` maps clipbench's split names to the dataset's own (e.g. testA -> test).
    """
    import datasets

    aliases = aliases or {}
    local = Path(path).expanduser()
    try:
        if not local.exists():
            return datasets.load_dataset(path, split=aliases.get(split, split), cache_dir=cache_dir)
        ds = datasets.load_from_disk(str(local))
    except (FileNotFoundError, ConnectionError, ValueError) as exc:
        raise DataError(f"dataset.path={path}: could not load ({type(exc).__name__}: {exc})") from None
    if not isinstance(ds, datasets.DatasetDict):
        return ds
    name = split if split in ds else aliases.get(split, split)
    if name not in ds:
        raise ConfigError("dataset.split", f"{split!r} is not in {list(ds)}")
    return ds[name]

"""Content identities, torch-free: of one file (a checkpoint, an annotation file) and of a dataset's files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_FINGERPRINTS: dict[tuple, str] = {}

#: files larger than this (image archives, webdataset shards, packed arrays) count by name and size only
HASHED_FILE_MAX_BYTES = 64 * 2**20
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def file_fingerprint(path: str | os.PathLike) -> str:
    """The content identity for cache keys: sha256 of the whole file, computed once per (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        with open(path, "rb") as f:
            _FINGERPRINTS[key] = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    return _FINGERPRINTS[key]


def _entry(path: Path, name: str) -> str:
    """One file's line: images and large files by size, every other file (the annotations) by content."""
    size = path.stat().st_size
    if path.suffix.lower() in IMAGE_SUFFIXES or size > HASHED_FILE_MAX_BYTES:
        return f"{name} {size}"
    return f"{name} {file_fingerprint(path)}"


def _entries(path: Path) -> list[str]:
    if path.is_file():
        return [_entry(path, path.name)]
    return sorted(_entry(Path(top) / f, os.path.relpath(os.path.join(top, f), path))
                  for top, _, files in os.walk(path, followlinks=True) for f in files)


def _names_path(key: str, value) -> bool:
    """``root``, or a value written as a path (``a/b``, ``~/x``): a split or column name such as ``test`` is
    not taken for a folder of that name in the working directory."""
    return isinstance(value, str) and bool(value) and (key == "root" or "/" in value or value.startswith("~"))


def data_fingerprint(dataset_params: dict) -> str:
    """The identity of a dataset's files on disk: 16 hex digits, "" when its config names no local path.

    One rule for every dataset kind instead of a list of annotation files per loader: every file under each
    folder or file the dataset config names (``root``, ``images``, ``annotation``, ...; see _names_path) is listed, sorted by
    its relative path; images and files over HASHED_FILE_MAX_BYTES count by size (cheap on 100k images),
    the rest, which are the annotations, class names and captions, by their content hash (cached per path,
    size and mtime, like a checkpoint's). An edited annotation or a replaced image changes it; a copy of the
    data elsewhere (another root, other mtimes) does not.
    """
    named = {key: Path(value).expanduser() for key, value in dataset_params.items() if _names_path(key, value)}
    lines = [f"[{key}]\n" + "\n".join(_entries(path)) for key, path in sorted(named.items()) if path.exists()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16] if lines else ""

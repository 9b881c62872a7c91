"""Caption helpers the CLIPScore corpora (``clipscore_corpora``) and the retrieval galleries
(``retrieval_galleries``) share: what counts as a caption, matching one across files, image folders
indexed by file stem, and JSON reading with one clear error."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clipbench.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def is_caption(text: Any) -> bool:
    """A usable caption: a string with some non-space text."""
    return isinstance(text, str) and bool(text.strip())


def check_caption(text: Any, where: str, allow_empty: bool = False) -> str:
    """A caption must be a (non-empty, unless ``allow_empty``) string; the error names where it came from.
    Loaders whose task skips and counts empty captions allow them."""
    if allow_empty and isinstance(text, str):
        return text
    if not is_caption(text):
        raise DataError(f"{where}: caption must be a non-empty string, got {text!r}")
    return text


def normalise_caption(text: str) -> str:
    """For matching the same caption across files: lower case, single spaces, no space before punctuation."""
    text = " ".join(text.lower().split())
    text = re.sub(r"\s+([.,!?;:])", r"\1", text)
    return text.rstrip(" .")


def without(references: Iterable[str], candidate: str) -> list[str]:
    """``references`` minus any that is the candidate itself."""
    key = normalise_caption(candidate)
    return [r for r in references if normalise_caption(r) != key]


def image_index(folder: Path) -> dict[str, Path]:
    """Image files directly in ``folder``, by file stem."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def read_json(path: Path):
    """A JSON file; invalid JSON is one error naming the file and line, and so is a key written twice in one
    object (``json.load`` would keep only the last, silently dropping a caption)."""
    repeated: dict[str, None] = {}

    def no_repeats(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                repeated[key] = None
            seen[key] = value
        return seen

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if repeated:
        keys = list(repeated)
        raise DataError(f"{path}: {len(keys)} key(s) appear twice in one object (first: {keys[0]!r}); "
                        "each image id must appear once")
    return data

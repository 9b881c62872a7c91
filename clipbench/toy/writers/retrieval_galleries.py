"""Karpathy's caption split files (read by ``clipbench.data.retrieval_galleries``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def write_karpathy(
    path: str | Path, dataset: str, items: Sequence[tuple[str, str, Sequence[str]]], filepath: str | None = None
) -> Path:
    """``dataset_<name>.json``: items are (filename, split, captions); COCO adds ``filepath`` (e.g. val2014)."""
    images = []
    sent_id = 0
    for i, (filename, split, caps) in enumerate(items):
        sentences = []
        for c in caps:
            sentences.append({"tokens": c.lower().strip(" .").split(), "raw": c, "imgid": i, "sentid": sent_id})
            sent_id += 1
        entry = {"filename": filename, "imgid": i, "split": split, "sentences": sentences,
                 "sentids": [s["sentid"] for s in sentences]}
        if filepath is not None:
            entry["filepath"] = filepath
        images.append(entry)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "dataset": dataset}))
    return path

"""The refer release, jxu124/refcoco-style HF rows and ReCLIP jsonl (read by ``clipbench.data.refer``)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

from clipbench.data.refer import HF_SPLITS, INSTANCES_FILE, REFS_FILE


def write_refer(folder: str | Path, refs: Sequence[dict], images: Sequence[dict], annotations: Sequence[dict],
                categories: Sequence[dict] = (), split_by: str = "unc") -> Path:
    """Write ``refs(<split_by>).p`` (pickle protocol 2, as the Python-2 release) and ``instances.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / REFS_FILE.format(split_by=split_by), "wb") as f:
        pickle.dump(list(refs), f, protocol=2)
    instances = {"images": list(images), "annotations": list(annotations), "categories": list(categories)}
    (folder / INSTANCES_FILE).write_text(json.dumps(instances))
    return folder


def write_refcoco_hf(path: str | Path, rows_by_split: dict[str, Sequence[dict]]) -> Path:
    """Save jxu124/refcoco-style rows (ref_id, ann_id, image_id, bbox [x,y,w,h], sentences, image_path, ...)
    as a ``save_to_disk`` DatasetDict with the hub's split names."""
    import datasets

    dd = datasets.DatasetDict({HF_SPLITS.get(s, s): datasets.Dataset.from_list(list(rows)) for s, rows in rows_by_split.items()})
    dd.save_to_disk(str(path))
    return Path(path)


def write_reclip_jsonl(path: str | Path, rows: Sequence[dict]) -> Path:
    """One JSON object per line: {file_name, image_id, ann_id, anns: [{id, bbox}], sentences: [{raw}]}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

"""COCO-style region JSON, CUB-200-2011 and Stanford Dogs (read by ``clipbench.data.regions``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from clipbench.data.regions import CUB_DIR, CUB_FILES
from clipbench.metrics.boxes import Box


def write_coco_regions(path: str | Path, images: Sequence[dict], annotations: Sequence[dict], categories: Sequence[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": list(images), "annotations": list(annotations), "categories": list(categories)}))
    return path


def write_cub(root: str | Path, items: Sequence[tuple[str, Sequence[float], int, bool]], class_folders: Sequence[str]) -> Path:
    """Write CUB_200_2011's text files; ``items`` are (relative image path, [x, y, w, h], class index, is_train)."""
    base = Path(root) / CUB_DIR
    base.mkdir(parents=True, exist_ok=True)
    images, boxes, labels, classes, is_train = CUB_FILES
    rows = list(enumerate(items, start=1))
    (base / images).write_text("".join(f"{i} {p}\n" for i, (p, _, _, _) in rows))
    (base / boxes).write_text("".join(f"{i} {' '.join(f'{float(v):.1f}' for v in b)}\n" for i, (_, b, _, _) in rows))
    (base / labels).write_text("".join(f"{i} {c + 1}\n" for i, (_, _, c, _) in rows))
    (base / is_train).write_text("".join(f"{i} {int(t)}\n" for i, (_, _, _, t) in rows))
    (base / classes).write_text("".join(f"{i} {name}\n" for i, name in enumerate(class_folders, start=1)))
    return base


def write_voc_annotation(path: Path, filename: str, size: tuple[int, int], objects: Sequence[tuple[str, Box]]) -> None:
    """A Stanford Dogs / VOC XML (no file suffix, as the release names them)."""
    w, h = size
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{int(b[0])}</xmin><ymin>{int(b[1])}</ymin><xmax>{int(b[2])}</xmax><ymax>{int(b[3])}</ymax></bndbox></object>"
        for name, b in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><folder>{path.parent.name}</folder><filename>{filename}</filename><source><database>ImageNet database"
        f"</database></source><size><width>{w}</width><height>{h}</height><depth>3</depth></size><segment>0</segment>{objs}</annotation>"
    )


def write_dogs_list(path: Path, rels: Sequence[str], labels: Sequence[int]) -> None:
    """A list as the release's .mat (file_list, annotation_list, labels 1-based) or a plain .txt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".txt":
        path.write_text("".join(f"{r}\n" for r in rels))
        return
    import numpy as np
    import scipy.io

    files = np.empty((len(rels), 1), dtype=object)
    anns = np.empty((len(rels), 1), dtype=object)
    for i, rel in enumerate(rels):
        files[i, 0] = np.array([rel])
        anns[i, 0] = np.array([str(Path(rel).with_suffix(""))])
    scipy.io.savemat(str(path), {"file_list": files, "annotation_list": anns, "labels": np.array(labels, dtype=float)[:, None] + 1})

"""ModelNet40 (h5 and normal_resampled txt) and ScanObjectNN releases (read by ``clipbench.data.pointclouds``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipbench.data.pointclouds import (
    MODELNET_H5_CLASSES,
    MODELNET_H5_DIR,
    MODELNET_H5_LIST,
    MODELNET_TXT_CLASSES,
    MODELNET_TXT_DIR,
    MODELNET_TXT_LIST,
    read_lines,
    scanobjectnn_file,
)


def _write_h5(path: Path, clouds: np.ndarray, labels: np.ndarray, **extra: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.asarray(clouds, dtype=np.float32))
        f.create_dataset("label", data=labels)
        for key, value in extra.items():
            f.create_dataset(key, data=value)


def write_modelnet40(
    root: str | Path,
    split: str,
    clouds: np.ndarray,
    labels: Sequence[int],
    classnames: Sequence[str],
    files: int = 1,
) -> Path:
    """Write ``modelnet40_ply_hdf5_2048/`` as the release does: list files name ``data/...`` paths."""
    folder = Path(root) / MODELNET_H5_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODELNET_H5_CLASSES).write_text("".join(f"{c}\n" for c in classnames))
    clouds, labels = np.asarray(clouds), np.asarray(labels)
    entries = []
    for i, chunk in enumerate(np.array_split(np.arange(len(labels)), files)):
        name = f"ply_data_{split}{i}.h5"
        _write_h5(folder / name, clouds[chunk], labels[chunk].astype(np.uint8).reshape(-1, 1))
        entries.append(f"data/{MODELNET_H5_DIR}/{name}")
    (folder / MODELNET_H5_LIST.format(split=split)).write_text("".join(f"{e}\n" for e in entries))
    return folder


def write_modelnet40_txt(
    root: str | Path,
    split: str,
    clouds: Sequence[np.ndarray],
    labels: Sequence[int],
    classnames: Sequence[str],
    normals: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write ``modelnet40_normal_resampled/`` like the release: x,y,z,nx,ny,nz rows, ids ``<class>_<NNNN>``."""
    folder = Path(root) / MODELNET_TXT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODELNET_TXT_CLASSES).write_text("".join(f"{c}\n" for c in classnames))
    list_path = folder / MODELNET_TXT_LIST.format(split=split)
    ids = read_lines(list_path) if list_path.is_file() else []
    counters: dict[str, int] = {}
    for existing in ids:
        cls, num = existing.rsplit("_", 1)
        counters[cls] = max(counters.get(cls, 0), int(num))
    for i, (cloud, label) in enumerate(zip(clouds, labels)):
        cls = classnames[int(label)]
        counters[cls] = counters.get(cls, 0) + 1
        shape_id = f"{cls}_{counters[cls]:04d}"
        xyz = np.asarray(cloud, dtype=np.float32)
        nrm = np.asarray(normals[i], dtype=np.float32) if normals is not None else np.zeros_like(xyz)
        (folder / cls).mkdir(exist_ok=True)
        np.savetxt(folder / cls / f"{shape_id}.txt", np.concatenate([xyz, nrm], axis=1), fmt="%.6f", delimiter=",")
        ids.append(shape_id)
    list_path.write_text("".join(f"{i}\n" for i in ids))
    return folder


def write_scanobjectnn(root: str | Path, variant: str, split: str, clouds: np.ndarray, labels: Sequence[int]) -> Path:
    """Write one ScanObjectNN h5 (``data``, ``label``, ``mask``) where the release keeps it."""
    path = scanobjectnn_file(Path(root), variant, split)
    clouds = np.asarray(clouds, dtype=np.float32)
    _write_h5(path, clouds, np.asarray(labels, dtype=np.int64), mask=np.zeros(clouds.shape[:2], dtype=np.int64))
    return path

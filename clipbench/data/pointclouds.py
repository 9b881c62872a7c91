"""Point-cloud classification datasets in their release layouts.

* ``modelnet40``: ``modelnet40_ply_hdf5_2048/`` (shape_names.txt, train_files.txt, test_files.txt,
  ply_data_*.h5 holding ``data`` (N, 2048, 3) float32 and ``label`` (N, 1)).
* ``modelnet40_txt``: ``modelnet40_normal_resampled/`` (modelnet40_shape_names.txt,
  modelnet40_{train,test}.txt, ``<class>/<id>.txt`` with comma-separated x,y,z,nx,ny,nz rows).
* ``scanobjectnn``: the h5 release (``main_split/``, ``main_split_nobg/``) in variants
  obj_only, obj_bg and pb_t50_rs.

Every dataset returns clouds of exactly ``num_points`` points (see ``prepare_cloud``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipbench.data.base import (
    is_regular_file,
    register_dataset,
    release_folder,
    require_dir,
    require_release,
)
from clipbench.errors import ConfigError, DataError

SAMPLINGS = ("first", "fps")


@dataclass
class PointCloudConfig:
    """Keys every point-cloud dataset shares."""

    name: str = "modelnet40"
    root: str | None = None
    split: str = "test"
    num_points: int = 1024  # points per cloud fed to the projection
    sampling: str = "first"  # first: the first num_points points (PointCLIP) | fps: farthest-point sampling

    def validate(self) -> None:
        if self.split not in ("train", "test"):
            raise ConfigError("dataset.split", f"{self.split!r} is not allowed for {self.name}; use train or test")
        if self.num_points < 1:
            raise ConfigError("dataset.num_points", f"must be >= 1, got {self.num_points}")
        if self.sampling not in SAMPLINGS:
            raise ConfigError("dataset.sampling", f"{self.sampling!r} is not allowed; use one of {list(SAMPLINGS)}")


# ---------------------------------------------------------------- sampling


def farthest_point_sample(points: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` points chosen by farthest-point sampling, starting from point 0 (deterministic)."""
    n = len(points)
    chosen = np.zeros(count, dtype=np.int64)
    nearest = np.full(n, np.inf)
    current = 0
    for i in range(count):
        chosen[i] = current
        nearest = np.minimum(nearest, ((points - points[current]) ** 2).sum(axis=1))
        current = int(nearest.argmax())
    return chosen


def prepare_cloud(raw: np.ndarray, num_points: int, sampling: str = "first") -> tuple[np.ndarray | None, str]:
    """(num_points, 3) float32 from a raw (N, >=3) cloud, or (None, reason) when unusable.

    Points with a NaN/inf coordinate are dropped first. ``first`` keeps the first num_points
    of the rest (PointCLIP), ``fps`` picks them by farthest-point sampling. A cloud with fewer
    points is padded by repeating its points in order (index i -> i mod n). A cloud with no
    finite point is unusable (the caller counts it as skipped). Returns (cloud, "padded"|"").
    """
    xyz = np.asarray(raw, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        return None, "malformed cloud"
    xyz = xyz[:, :3]
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    n = len(xyz)
    if n == 0:
        return None, "empty or non-finite cloud"
    if n < num_points:
        return xyz[np.arange(num_points) % n], "padded"
    if sampling == "fps" and n > num_points:
        return xyz[np.sort(farthest_point_sample(xyz, num_points))], ""
    return np.ascontiguousarray(xyz[:num_points]), ""


class PointCloudDataset:
    """Indexable clouds with labels and class names; ``cloud(i)`` is (num_points, 3) or None."""

    classnames: list[str]

    def __init__(self, cfg: PointCloudConfig):
        self.cfg = cfg

    def __len__(self) -> int:
        raise NotImplementedError

    def raw_cloud(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def label(self, index: int) -> int:
        raise NotImplementedError

    def cloud(self, index: int) -> tuple[np.ndarray | None, str]:
        return prepare_cloud(self.raw_cloud(index), self.cfg.num_points, self.cfg.sampling)

    def other_split(self, split: str) -> PointCloudDataset:
        """The same release and settings, another split (e.g. train for view-weight search)."""
        cfg = dataclasses.replace(self.cfg, split=split)
        cfg.validate()
        return DATASET_BUILDERS[cfg.name](cfg)


class ArrayPointClouds(PointCloudDataset):
    """Clouds held as one (N, P, C) array, as the h5 releases store them."""

    def __init__(self, cfg: PointCloudConfig, data: np.ndarray, labels: np.ndarray, classnames: Sequence[str]):
        super().__init__(cfg)
        self.data = data
        self.labels = np.asarray(labels).reshape(-1).astype(np.int64)
        self.classnames = list(classnames)
        if len(self.data) != len(self.labels):
            raise DataError(f"{cfg.name}: {len(self.data)} clouds but {len(self.labels)} labels")
        bad = (self.labels < 0) | (self.labels >= len(self.classnames))
        if bad.any():
            raise DataError(
                f"{cfg.name}: label {int(self.labels[bad][0])} outside the {len(self.classnames)} class names"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def raw_cloud(self, index: int) -> np.ndarray:
        return self.data[index]

    def label(self, index: int) -> int:
        return int(self.labels[index])


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["data"][:], dtype=np.float32), np.asarray(f["label"][:]).reshape(-1)
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a point-cloud h5 with 'data' and 'label' ({exc})") from None


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- ModelNet40 (h5)

MODELNET_H5_DIR = "modelnet40_ply_hdf5_2048"
MODELNET_H5_CLASSES = "shape_names.txt"
MODELNET_H5_LIST = "{split}_files.txt"  # names the split's h5 files
MODELNET_H5_HOW = (
    "download modelnet40_ply_hdf5_2048.zip (PointNet release) and point dataset.root at the folder holding "
    f"{MODELNET_H5_DIR}/"
)


@dataclass
class ModelNet40Config(PointCloudConfig):
    name: str = "modelnet40"

    def validate(self) -> None:
        super().validate()
        require_release(self.root, MODELNET_H5_DIR, [MODELNET_H5_CLASSES, MODELNET_H5_LIST.format(split=self.split)], MODELNET_H5_HOW)


def resolve_listed(entry: str, root: Path, list_file: Path) -> Path:
    """A path from a list file: relative to dataset.root, to its parent layout, or next to the list.

    The release lists ``data/modelnet40_ply_hdf5_2048/ply_data_test0.h5``; dataset.root holds
    ``modelnet40_ply_hdf5_2048/``, so the leading ``data/`` is dropped when the full path is absent.
    """
    rel = Path(entry)
    candidates = [rel] if rel.is_absolute() else [root / rel, root / Path(*rel.parts[1:]), list_file.parent / rel.name]
    for path in candidates:
        if is_regular_file(path):
            return path
    raise DataError(f"{list_file} names {entry}, which is not under {root} (looked at {candidates[0]})")


def load_modelnet40(cfg: ModelNet40Config) -> ArrayPointClouds:
    root = Path(str(cfg.root)).expanduser()
    folder = release_folder(root, MODELNET_H5_DIR)
    classnames = read_lines(folder / MODELNET_H5_CLASSES)
    list_file = folder / MODELNET_H5_LIST.format(split=cfg.split)
    files = [resolve_listed(entry, root, list_file) for entry in read_lines(list_file)]
    if not files:
        raise DataError(f"{list_file} lists no h5 files")
    parts = [_read_h5(path) for path in files]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    return ArrayPointClouds(cfg, data, labels, classnames)


# ---------------------------------------------------------------- ModelNet40 (normal_resampled txt)

MODELNET_TXT_DIR = "modelnet40_normal_resampled"
MODELNET_TXT_CLASSES = "modelnet40_shape_names.txt"
MODELNET_TXT_LIST = "modelnet40_{split}.txt"  # the split's shape ids, <class>_<NNNN>
MODELNET_TXT_HOW = (
    "download modelnet40_normal_resampled.zip (PointNet++ release) and point dataset.root at the folder holding "
    f"{MODELNET_TXT_DIR}/"
)


@dataclass
class ModelNet40TxtConfig(PointCloudConfig):
    name: str = "modelnet40_txt"

    def validate(self) -> None:
        super().validate()
        require_release(self.root, MODELNET_TXT_DIR, [MODELNET_TXT_CLASSES, MODELNET_TXT_LIST.format(split=self.split)],
                        MODELNET_TXT_HOW)


class ModelNet40Txt(PointCloudDataset):
    """One .txt file per shape, read when the shape is asked for."""

    def __init__(self, cfg: ModelNet40TxtConfig):
        super().__init__(cfg)
        self.folder = release_folder(str(cfg.root), MODELNET_TXT_DIR)
        self.classnames = read_lines(self.folder / MODELNET_TXT_CLASSES)
        index = {name: i for i, name in enumerate(self.classnames)}
        self.ids = read_lines(self.folder / MODELNET_TXT_LIST.format(split=cfg.split))
        self.labels = []
        for shape_id in self.ids:
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in index:
                raise DataError(f"{MODELNET_TXT_LIST.format(split=cfg.split)}: {shape_id} has no class {cls!r} in {MODELNET_TXT_CLASSES}")
            self.labels.append(index[cls])

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, index: int) -> Path:
        shape_id = self.ids[index]
        return self.folder / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt"

    def raw_cloud(self, index: int) -> np.ndarray:
        import pandas as pd

        try:  # pandas' C parser: ~10x faster than np.loadtxt on the release's 10,000-row files
            return pd.read_csv(self.path(index), header=None, dtype=np.float32).to_numpy()
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            return np.empty((0, 6), np.float32)  # missing or unparsable: an unusable cloud, counted by the task

    def label(self, index: int) -> int:
        return self.labels[index]


# ---------------------------------------------------------------- ScanObjectNN (h5)

SCANOBJECTNN_CLASSES = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
]
# variant -> (folder, file suffix); files are <training|test>_objectdataset<suffix>.h5
SCANOBJECTNN_VARIANTS = {
    "obj_only": ("main_split_nobg", ""),
    "obj_bg": ("main_split", ""),
    "pb_t50_rs": ("main_split", "_augmentedrot_scale75"),
}
SCANOBJECTNN_HOW = (
    "download ScanObjectNN's h5_files.zip and point dataset.root at the folder holding main_split/ and main_split_nobg/"
)


def scanobjectnn_file(root: Path, variant: str, split: str) -> Path:
    folder, suffix = SCANOBJECTNN_VARIANTS[variant]
    base = root / "h5_files" if (root / "h5_files").is_dir() else root
    return base / folder / f"{'training' if split == 'train' else 'test'}_objectdataset{suffix}.h5"


@dataclass
class ScanObjectNNConfig(PointCloudConfig):
    name: str = "scanobjectnn"
    variant: str = "obj_only"  # obj_only | obj_bg | pb_t50_rs

    def validate(self) -> None:
        super().validate()
        if self.variant not in SCANOBJECTNN_VARIANTS:
            raise ConfigError("dataset.variant", f"{self.variant!r} is not allowed; use one of {list(SCANOBJECTNN_VARIANTS)}")
        path = scanobjectnn_file(require_dir(self.root, "dataset.root", SCANOBJECTNN_HOW), self.variant, self.split)
        if not path.is_file():
            raise ConfigError("dataset.root", f"{path} does not exist; {SCANOBJECTNN_HOW}")


def load_scanobjectnn(cfg: ScanObjectNNConfig) -> ArrayPointClouds:
    data, labels = _read_h5(scanobjectnn_file(Path(str(cfg.root)).expanduser(), cfg.variant, cfg.split))
    return ArrayPointClouds(cfg, data, labels, SCANOBJECTNN_CLASSES)


# ---------------------------------------------------------------- registry

DATASET_BUILDERS = {
    "modelnet40": register_dataset("modelnet40", ModelNet40Config, tasks={"pointcloud"})(load_modelnet40),
    "modelnet40_txt": register_dataset("modelnet40_txt", ModelNet40TxtConfig, tasks={"pointcloud"})(ModelNet40Txt),
    "scanobjectnn": register_dataset("scanobjectnn", ScanObjectNNConfig, tasks={"pointcloud"})(load_scanobjectnn),
}

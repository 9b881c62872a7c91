"""Point-cloud loaders on files generated in each real release format; sampling and bad clouds."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from clipbench.data import DATASETS
from clipbench.data.pointclouds import (
    SCANOBJECTNN_CLASSES,
    ModelNet40Config,
    ModelNet40TxtConfig,
    ScanObjectNNConfig,
    farthest_point_sample,
    prepare_cloud,
)
from clipbench.errors import ConfigError, DataError
from clipbench.toy.writers.pointclouds import write_modelnet40, write_modelnet40_txt, write_scanobjectnn

CLASSES = ["airplane", "flower_pot", "night_stand"]


def _clouds(n: int, points: int = 40, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.3, (n, points, 3)).astype(np.float32), [int(x) for x in rng.integers(0, 3, n)]


def _build(cfg):
    cfg.validate()
    return DATASETS.get(cfg.name).build(cfg)


def test_modelnet40_h5_release_layout_and_list_paths_resolved_against_root(tmp_path, monkeypatch):
    clouds, labels = _clouds(7)
    folder = write_modelnet40(tmp_path, "test", clouds, labels, CLASSES, files=2)
    # the release's own layout: list files name data/modelnet40_ply_hdf5_2048/..., labels (N, 1) uint8
    assert (folder / "test_files.txt").read_text().splitlines() == [
        "data/modelnet40_ply_hdf5_2048/ply_data_test0.h5", "data/modelnet40_ply_hdf5_2048/ply_data_test1.h5"]
    with h5py.File(folder / "ply_data_test0.h5") as f:
        assert f["data"].shape == (4, 40, 3) and f["data"].dtype == np.float32
        assert f["label"].shape == (4, 1) and f["label"].dtype == np.uint8
    monkeypatch.chdir(tmp_path.parent)  # the working directory must not matter
    ds = _build(ModelNet40Config(root=str(tmp_path), num_points=16))
    assert len(ds) == 7 and ds.classnames == CLASSES
    assert [ds.label(i) for i in range(7)] == labels
    cloud, note = ds.cloud(5)
    np.testing.assert_array_equal(cloud, clouds[5][:16])  # the first num_points points
    assert note == ""


def test_modelnet40_list_naming_a_missing_h5_is_one_clear_error(tmp_path):
    clouds, labels = _clouds(3)
    folder = write_modelnet40(tmp_path, "test", clouds, labels, CLASSES)
    (folder / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test9.h5\n")
    with pytest.raises(DataError) as err:
        _build(ModelNet40Config(root=str(tmp_path)))
    message = str(err.value)
    assert "ply_data_test9.h5" in message and "test_files.txt" in message and "\n" not in message


def test_modelnet40_missing_root_or_split_file(tmp_path):
    with pytest.raises(ConfigError, match="dataset.root.*modelnet40_ply_hdf5_2048"):
        ModelNet40Config(root=str(tmp_path / "nope")).validate()
    write_modelnet40(tmp_path, "test", *_clouds(2), CLASSES)
    with pytest.raises(ConfigError, match="train_files.txt"):
        ModelNet40Config(root=str(tmp_path), split="train").validate()
    with pytest.raises(ConfigError, match="dataset.sampling"):
        ModelNet40Config(root=str(tmp_path), sampling="random").validate()


def test_modelnet40_txt_release_layout(tmp_path):
    clouds, labels = _clouds(5, points=30, seed=1)
    normals = [np.ones((30, 3), np.float32)] * 5
    folder = write_modelnet40_txt(tmp_path, "test", clouds, labels, CLASSES, normals)
    ids = (folder / "modelnet40_test.txt").read_text().split()
    first = ids[0]
    cls = first.rsplit("_", 1)[0]
    assert cls in CLASSES and first.endswith("_0001")
    row = (folder / cls / f"{first}.txt").read_text().splitlines()[0].split(",")
    assert len(row) == 6 and float(row[3]) == 1.0  # x,y,z,nx,ny,nz
    ds = _build(ModelNet40TxtConfig(root=str(tmp_path), num_points=20))
    assert len(ds) == 5 and ds.classnames == CLASSES
    assert [ds.label(i) for i in range(5)] == labels
    cloud, _ = ds.cloud(2)
    np.testing.assert_allclose(cloud, clouds[2][:20], atol=1e-6)


def test_modelnet40_txt_missing_shape_file_is_a_counted_bad_cloud(tmp_path):
    clouds, labels = _clouds(2, seed=2)
    folder = write_modelnet40_txt(tmp_path, "test", clouds, labels, CLASSES)
    ds = _build(ModelNet40TxtConfig(root=str(folder)))  # root may also be the release folder itself
    ds.path(0).unlink()
    assert ds.cloud(0) == (None, "empty or non-finite cloud")
    ds.path(1).write_text("0.1,0.2,oops,0,0,1\n")
    assert ds.cloud(1) == (None, "empty or non-finite cloud")
    ds.path(1).write_text("nan,0.2,0.3,0,0,1\n0.5,0.5,0.5,0,0,1\n")
    cloud, note = ds.cloud(1)
    assert note == "padded" and (cloud == np.float32(0.5)).all()  # the NaN row dropped, the other repeated


@pytest.mark.parametrize("variant,relative", [
    ("obj_only", "main_split_nobg/test_objectdataset.h5"),
    ("obj_bg", "main_split/test_objectdataset.h5"),
    ("pb_t50_rs", "main_split/test_objectdataset_augmentedrot_scale75.h5"),
])
def test_scanobjectnn_variants_read_their_release_files(tmp_path, variant, relative):
    clouds, labels = _clouds(4, seed=3)
    labels = [14, 0, 7, 3]
    path = write_scanobjectnn(tmp_path / "h5_files", variant, "test", clouds, labels)
    assert path == tmp_path / "h5_files" / relative
    with h5py.File(path) as f:
        assert set(f) == {"data", "label", "mask"} and f["label"].shape == (4,)
    ds = _build(ScanObjectNNConfig(root=str(tmp_path), variant=variant, num_points=8))
    assert ds.classnames == SCANOBJECTNN_CLASSES and len(ds.classnames) == 15
    assert [ds.classnames[ds.label(i)] for i in range(4)] == ["toilet", "bag", "door", "cabinet"]
    np.testing.assert_array_equal(ds.cloud(1)[0], clouds[1][:8])


def test_scanobjectnn_train_split_file_name_and_bad_variant(tmp_path):
    write_scanobjectnn(tmp_path, "obj_bg", "train", *_clouds(2, seed=4))
    assert (tmp_path / "main_split" / "training_objectdataset.h5").is_file()
    assert len(_build(ScanObjectNNConfig(root=str(tmp_path), variant="obj_bg", split="train"))) == 2
    with pytest.raises(ConfigError, match="dataset.variant"):
        ScanObjectNNConfig(root=str(tmp_path), variant="hardest").validate()
    with pytest.raises(ConfigError, match="test_objectdataset.h5 does not exist"):
        ScanObjectNNConfig(root=str(tmp_path), variant="obj_bg").validate()


def test_other_split_keeps_settings(tmp_path):
    write_modelnet40(tmp_path, "test", *_clouds(3), CLASSES)
    write_modelnet40(tmp_path, "train", *_clouds(6, seed=9), CLASSES)
    test = _build(ModelNet40Config(root=str(tmp_path), num_points=5, sampling="fps"))
    train = test.other_split("train")
    assert len(train) == 6 and train.cfg.num_points == 5 and train.cfg.sampling == "fps"


def test_prepare_cloud_drops_non_finite_pads_by_repetition_and_rejects_empty():
    cloud = np.array([[0, 0, 0], [np.nan, 1, 1], [1, 1, 1], [2, np.inf, 0], [3, 3, 3]], np.float32)
    kept, note = prepare_cloud(cloud, 2)
    np.testing.assert_array_equal(kept, [[0, 0, 0], [1, 1, 1]])
    assert note == ""
    padded, note = prepare_cloud(cloud, 7)
    np.testing.assert_array_equal(padded, [[0, 0, 0], [1, 1, 1], [3, 3, 3]] * 2 + [[0, 0, 0]])
    assert note == "padded"
    assert prepare_cloud(np.full((4, 3), np.nan), 2) == (None, "empty or non-finite cloud")
    assert prepare_cloud(np.empty((0, 3)), 2) == (None, "empty or non-finite cloud")
    # extra columns (normals) are dropped
    assert prepare_cloud(np.ones((3, 6)), 3)[0].shape == (3, 3)


def test_farthest_point_sampling_hand_case():
    # from point 0 at the origin: farthest is (10,0,0); then (0,4,0) is farther from both than (1,0,0)
    pts = np.array([[0, 0, 0], [1, 0, 0], [10, 0, 0], [0, 4, 0]], np.float32)
    assert farthest_point_sample(pts, 3).tolist() == [0, 2, 3]
    kept, _ = prepare_cloud(pts, 3, "fps")
    np.testing.assert_array_equal(kept, pts[[0, 2, 3]])  # kept in file order

import numpy as np
import pytest
from conftest import colour_images
from PIL import Image

from clipbench.data.classification import Cifar100, HFClassification, HFConfig, ImageFolder
from clipbench.errors import ConfigError, DataError
from clipbench.toy.writers.classification import write_cifar100


def test_cifar_fixture_reads_back_identically_and_torchvision_agrees(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    images, labels, names = colour_images(12, seed=3)
    names = ["red circle", "green_square", "blue star", "yellow cross"]
    write_cifar100(tmp_path, "test", images, labels, names)
    ours = Cifar100(tmp_path, "test", check_integrity=False)
    assert ours.classnames == ["red circle", "green square", "blue star", "yellow cross"]
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(CIFAR100, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    theirs = CIFAR100(str(tmp_path), train=False, download=False)
    assert theirs.classes == ["red_circle", "green_square", "blue_star", "yellow_cross"]
    for i in range(12):
        img, lab = theirs[i]
        assert lab == ours.label(i) == labels[i]
        assert np.array_equal(np.asarray(img), np.asarray(ours.image(i)))
        assert np.array_equal(np.asarray(img), images[i])


def test_cifar_integrity_check_names_the_fix_and_agrees_with_torchvision(tmp_path, monkeypatch):
    import hashlib

    from torchvision.datasets.utils import check_integrity

    import clipbench.data.classification as classification

    images, labels, names = colour_images(4)
    write_cifar100(tmp_path, "test", images, labels, names)
    base = tmp_path / "cifar-100-python"
    for name in ("test", "meta"):  # torchvision's own check rejects the generated files too
        assert not check_integrity(str(base / name), classification.CIFAR_MD5[name])
    with pytest.raises(ConfigError, match="check_integrity=false"):
        Cifar100(tmp_path, "test", check_integrity=True)
    # with the generated files' own md5 as the release's, the same check passes
    own = {n: hashlib.md5((base / n).read_bytes()).hexdigest() for n in ("test", "meta")}
    monkeypatch.setattr(classification, "CIFAR_MD5", own)
    assert len(Cifar100(tmp_path, "test", check_integrity=True)) == 4


def test_cifar_pickle_with_globals_is_refused(tmp_path):
    import pickle

    base = tmp_path / "cifar-100-python"
    base.mkdir()
    with open(base / "test", "wb") as f:
        pickle.dump({"data": print}, f)
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a"]}))
    with pytest.raises(DataError, match="not a valid"):
        Cifar100(tmp_path, "test", check_integrity=False)


def test_write_cifar_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ConfigError):
        write_cifar100(tmp_path, "test", np.zeros((2, 16, 16, 3)), [0, 1], ["a", "b"])


def test_imagefolder_counts_unreadable_as_none(tmp_path):
    for cls in ("cat_big", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / cls / "ok.png")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not an image")
    ds = ImageFolder(tmp_path)
    assert ds.classnames == ["cat big", "dog"]
    assert len(ds) == 3
    assert sum(ds.image(i) is None for i in range(3)) == 1


def test_hf_dataset_from_save_to_disk(tmp_path):
    import datasets

    images, labels, names = colour_images(6, seed=5)
    features = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in images], "fine": labels}, features=features)
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "hf"))
    loaded = HFClassification(HFConfig(path=str(tmp_path / "hf"), split="test", image_column="img", label_column="fine"))
    assert loaded.classnames == names and len(loaded) == 6
    assert [loaded.label(i) for i in range(6)] == labels
    assert np.array_equal(np.asarray(loaded.image(2)), images[2])
    with pytest.raises(ConfigError, match="dataset.image_column"):
        HFClassification(HFConfig(path=str(tmp_path / "hf"), image_column="nope", label_column="fine"))

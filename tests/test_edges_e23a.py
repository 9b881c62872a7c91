"""Numbers that stay right at the edges: diverged weights, 16-bit images, duplicate image ids, top-k over few
classes, exact recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import base_args, run_cli
from helpers import compose_config, tmp_overrides
from PIL import Image
from rec_fixtures import refer_records, write_images

from clipbench.errors import DataError


def _in_process(tmp_path, *overrides) -> dict[str, dict]:
    """runner.run in this process; its rows by metric."""
    from clipbench.runner import run

    return {r["metric"]: r for r in run(compose_config(tmp_overrides(tmp_path, *overrides)), tmp_path / "run")}


def _toyclip_with(tmp_path, key: str, value: float):
    """The bundled toy checkpoint with every entry of ``key`` set to ``value``, saved under tmp_path."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from clipbench.config import ASSETS_DIR

    with safe_open(str(ASSETS_DIR / "toyclip.safetensors"), "pt") as f:
        state, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    state[key] = torch.full_like(state[key], value)
    path = tmp_path / f"toyclip_{key}.safetensors"
    save_file(state, str(path), metadata)
    return path


def _on_toyclip(overrides: list[str], checkpoint) -> list[str]:
    return [o for o in overrides if not o.startswith("model.")] + ["model.arch=toyclip", f"model.pretrained={checkpoint}"]


@pytest.mark.parametrize("key, value, what", [
    ("visual.proj", float("nan"), "image features"),
    ("text_projection", float("inf"), "text features"),
])
def test_non_finite_weights_stop_the_run_naming_the_tensor(tmp_path, cifar_root, key, value, what):
    from clipbench.runner import run

    checkpoint = _toyclip_with(tmp_path, key, value)
    overrides = _on_toyclip(tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=8"),
                            checkpoint)
    with pytest.raises(DataError, match=rf"non-finite values \(NaN or inf\) in the {what} .*{key}"):
        run(compose_config(overrides), tmp_path / "run")
    assert not (tmp_path / "results.csv").exists()


def test_non_finite_weights_are_one_line_and_a_failed_exit(tmp_path, cifar_root):
    checkpoint = _toyclip_with(tmp_path, "visual.proj", float("nan"))
    args = _on_toyclip(base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=8"), checkpoint)
    proc = run_cli(*args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: non-finite values (NaN or inf) in the image features")
    assert "visual.proj" in proc.stderr and not (tmp_path / "results.csv").exists()


def test_a_duplicate_image_id_in_instances_is_one_data_error_naming_it(tmp_path):
    from clipbench.config import to_schema
    from clipbench.data import DATASETS
    from clipbench.toy.writers.refer import write_refer

    refs, images, annotations = refer_records()
    images.append({**images[0], "file_name": "another_picture.jpg"})  # a second record under id 101
    write_refer(tmp_path / "refcoco", refs, images, annotations)
    spec = DATASETS.get("refcoco")
    cfg = to_schema(spec.config, {"name": "refcoco", "root": str(tmp_path), "images": str(write_images(tmp_path / "im"))}, "dataset")
    with pytest.raises(DataError, match=r"instances\.json: image id 101 appears 2 times"):
        spec.build(cfg)


def test_top_k_is_reported_only_below_the_class_count(tmp_path):
    for name, colour in (("red", (200, 10, 10)), ("blue", (10, 10, 200))):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (20, 20), colour).save(tmp_path / "imgs" / name / f"{k}.png")
    rows = _in_process(tmp_path, "dataset=imagefolder", f"dataset.root={tmp_path / 'imgs'}", "task.templates=simple",
                       "task.topk=[1,2,5]", "ci.resamples=0")
    assert "top1" in rows and "top2" not in rows and "top5" not in rows  # top-2 of 2 classes is 1.0 by construction


def test_retrieval_recall_is_exact_in_float64():
    from clipbench.metrics.retrieval import retrieval_metrics

    n = 150
    features = torch.eye(n)
    owner = [(t + 1) % n if t < 6 else t for t in range(n)]  # 6 captions belong to the next image: 144 hits of 150
    metrics = retrieval_metrics(features, features, owner, ks=(1,))
    assert metrics["image_retrieval_recall@1"] == 144 / 150


def _grey_gradient() -> np.ndarray:
    """An 8-bit greyscale image using the whole range (most of it above 255 once widened to 16 bits)."""
    ramp = np.linspace(0, 255, 24).round().astype(np.uint8)
    return np.add.outer(ramp, ramp[::-1]) // 2


@pytest.fixture(scope="module")
def bit_depth_folders(tmp_path_factory):
    """The same images as 8-bit and as 16-bit (value * 257) greyscale PNGs, in two imagefolder roots."""
    root = tmp_path_factory.mktemp("depths")
    for k, name in enumerate(("dark", "light")):
        pixels = _grey_gradient() // (2 - k)
        for depth, array in (("8bit", pixels), ("16bit", pixels.astype(np.uint16) * 257)):
            (root / depth / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.roll(array, 5 * i, axis=1)).save(root / depth / name / f"{i}.png")
    return root


def test_a_16_bit_png_reads_as_its_8_bit_twin(bit_depth_folders):
    from clipbench.data.base import open_rgb

    wide, narrow = bit_depth_folders / "16bit" / "light" / "0.png", bit_depth_folders / "8bit" / "light" / "0.png"
    with Image.open(wide) as im:
        assert im.mode.startswith("I")  # read back as a high-depth mode, not 8-bit
    assert np.array_equal(np.asarray(open_rgb(wide)), np.asarray(open_rgb(narrow)))


@pytest.mark.parametrize("mode, scale", [("I;16B", 257), ("I", 257), ("F", 1 / 255)])
def test_every_high_depth_mode_is_scaled_to_8_bits(mode, scale):
    from clipbench.data.base import to_rgb

    pixels = _grey_gradient()
    wide = pixels.astype({"I;16B": ">u2", "I": np.int32, "F": np.float32}[mode]) * scale
    image = Image.fromarray(wide.astype(wide.dtype), mode) if mode != "I;16B" else Image.frombytes(mode, (24, 24), wide.tobytes())
    assert image.mode == mode
    assert np.array_equal(np.asarray(to_rgb(image))[..., 0], pixels)


def test_16_bit_images_give_the_predictions_of_their_8_bit_twins(tmp_path, bit_depth_folders):
    import pandas as pd

    scores = {}
    for depth in ("8bit", "16bit"):
        _in_process(tmp_path / depth, "dataset=imagefolder", f"dataset.root={bit_depth_folders / depth}",
                    "task.templates=simple", "save_predictions=true", "ci.resamples=0")
        scores[depth] = pd.read_csv(tmp_path / depth / "run" / "predictions.csv")[["pred", "scores"]]
    pd.testing.assert_frame_equal(scores["16bit"], scores["8bit"])

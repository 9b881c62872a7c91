"""Numbers that stay right at the edges: diverged weights, REC ties and methods that cannot pick a proposal,
16-bit images, duplicate image ids, top-k over few classes, methods that change nothing, exact recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, base_args, run_cli
from helpers import compose_config, tmp_overrides
from PIL import Image
from rec_fixtures import refer_records, write_images

from clipbench.errors import ConfigError, DataError


def _run_rows(tmp_path, *overrides) -> list[dict]:
    """runner.run in this process over the full list of ``overrides``; its rows."""
    from clipbench.runner import run

    return run(compose_config(list(overrides)), tmp_path / "run")


def _in_process(tmp_path, *overrides) -> dict[str, dict]:
    """runner.run in this process on the small test model; its rows by metric."""
    return {r["metric"]: r for r in _run_rows(tmp_path, *tmp_overrides(tmp_path, *overrides))}


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


@pytest.fixture(scope="module")
def refer_data(tmp_path_factory):
    """A small refer release (rec_fixtures) and its images."""
    from clipbench.toy.writers.refer import write_refer

    root = tmp_path_factory.mktemp("refer")
    write_refer(root / "refcoco", *refer_records())
    return root, write_images(root / "images")


def _rec(tmp_path, refer_data, *extra) -> list[str]:
    root, images = refer_data
    return tmp_overrides(tmp_path, "task=rec", "dataset=refcoco", f"dataset.root={root}", f"dataset.images={images}", *extra)


@pytest.mark.parametrize("method", [
    ["method=clip"], ["method=clip", "method.resize=square"], ["method=combine", "method.members=[clip]"],
    ["method=ensemble", "method.method=clip", "method.models=[{arch: RN50}]"],
])
def test_rec_refuses_a_method_that_scores_every_proposal_alike(tmp_path, refer_data, method):
    from clipbench.runner import validate

    with pytest.raises(ConfigError, match=r"^method: .*scores every proposal of an image alike.*use method=falip"):
        validate(compose_config(_rec(tmp_path, refer_data, *method)))


def test_falip_subtract_on_zeroshot_is_refused_while_validating(tmp_path, cifar_root):
    from clipbench.runner import validate

    overrides = tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "method=falip_subtract")
    with pytest.raises(ConfigError, match=r"^method\.subtract: .*does not apply to task=zeroshot"):
        validate(compose_config(overrides))


@pytest.mark.parametrize("task", ["zeroshot", "region_cls", "pointcloud"])
def test_every_task_but_rec_refuses_the_caption_bank_subtraction(task):
    from clipbench.config.methods import FalipConfig
    from clipbench.tasks import TASKS

    with pytest.raises(ConfigError, match="method.subtract"):
        TASKS.get(task).check_method(FalipConfig(subtract=True))
    TASKS.get(task).check_method(FalipConfig())
    TASKS.get("rec").check_method(FalipConfig(subtract=True))


def test_clipbench_list_offers_each_task_only_the_methods_it_accepts():
    from clipbench.listing import task_rows

    methods = {row["task"]: row["methods (method=)"].split() for row in task_rows()}
    assert "clip" not in methods["rec"] and {"falip", "falip_subtract", "crop"} <= set(methods["rec"])
    for task in ("zeroshot", "region_cls", "pointcloud"):
        assert "falip_subtract" not in methods[task] and "falip" in methods[task]


def _plain_clip_picks(root: Path, images: Path, reverse: bool):
    """Plain CLIP on task=rec in process (validation refuses it) over the fixture release, its annotations
    listed in order or reversed: (sample id -> predicted annotation id, result)."""
    from clipbench.config import to_schema
    from clipbench.config.methods import ClipConfig
    from clipbench.config.tasks import RecConfig
    from clipbench.data import DATASETS
    from clipbench.methods.clip import ClipMethod
    from clipbench.models import load_model
    from clipbench.tasks import TASKS, RunContext
    from clipbench.toy.writers.refer import write_refer

    refs, records, annotations = refer_records()
    write_refer(root / "refcoco", refs, records, annotations[::-1] if reverse else annotations)
    spec = DATASETS.get("refcoco")
    dataset = spec.build(to_schema(spec.config, {"name": "refcoco", "root": str(root), "images": str(images)}, "dataset"))
    model = load_model(TINY_ARCH, None)
    ctx = RunContext(device=torch.device("cpu"), batch_size=4, save_predictions=True, progress=False)
    result = TASKS.get("rec").evaluate(model, dataset, ClipMethod(ClipConfig(), model), RecConfig(), ctx)
    proposals = {str(e.image_id): e.proposals for e in dataset.images}
    return {r["sample_id"]: proposals[str(r["image_id"])][r["pred"]].ann_id for r in result.predictions}, result


@pytest.mark.filterwarnings("ignore:model.pretrained is null")
def test_rec_ties_are_broken_whatever_the_annotation_order_and_counted(tmp_path, refer_data):
    _, images = refer_data
    listed, result = _plain_clip_picks(tmp_path / "listed", images, reverse=False)
    reversed_, _ = _plain_clip_picks(tmp_path / "reversed", images, reverse=True)
    assert listed == reversed_  # the first listed would flip with the order
    assert result.metrics["tied"] == result.n == 6  # every sentence was a tie


def test_rec_rows_count_the_tied_sentences(tmp_path, refer_data):
    rows = {r["metric"]: r for r in _run_rows(tmp_path, *_rec(tmp_path, refer_data, "method=crop", "ci.resamples=0"))}
    assert rows["tied"]["value"] == 0 and rows["tied"]["n"] == rows["accuracy"]["n"] == 6
    assert rows["tied"]["ci_low"] is None  # a count, not an estimate


def test_the_sweep_summary_shows_tied_counts_as_counts():
    import pandas as pd

    from clipbench.results.csv_store import RESULT_COLUMNS
    from clipbench.results.table import sweep_summary

    def rows(run_id, tied):
        base = dict.fromkeys(RESULT_COLUMNS, "") | {"run_id": run_id, "task": "rec", "dataset": "refcoco",
                                                    "model_arch": "toyclip", "method": "falip", "method_params": "{}"}
        return [base | {"metric": "accuracy", "value": 0.5}, base | {"metric": "skipped", "value": 0.0},
                base | {"metric": "tied", "value": tied}]

    assert "tied" not in sweep_summary(pd.DataFrame(rows("a", 0.0) + rows("b", 0.0)))
    text = sweep_summary(pd.DataFrame(rows("a", 0.0) + rows("b", 4.0)))
    header = next(line for line in text.splitlines() if "accuracy" in line)
    assert header.split("|")[-2].strip() == "tied" and "4.0000" not in text  # a count column, not a score


def test_cached_text_features_holding_nan_are_recomputed(tmp_path):
    from clipbench.config import ASSETS_DIR
    from clipbench.models import load_model, text_cache

    model = load_model("toyclip", str(ASSETS_DIR / "toyclip.safetensors"))
    fresh = text_cache.text_features(model, ["a red circle"], str(tmp_path))
    (path,) = (tmp_path / "text").glob("*.pt")
    torch.save(torch.full_like(fresh, float("nan")), path)  # e.g. written before non-finite features stopped a run
    text_cache._MEMORY.clear()
    assert torch.equal(text_cache.text_features(model, ["a red circle"], str(tmp_path)), fresh)


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

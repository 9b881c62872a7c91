"""The installed command as users run it: errors are one clear line; multirun sweeps work."""

import re

import pandas as pd
import pytest
from conftest import TINY_ARCH, base_args, run_cli


def _error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_bad_values_fail_before_work_with_one_line(tmp_path, cifar_root):
    cases = {
        "model.arch": ["model.arch=NoSuchModel", f"dataset.root={cifar_root}"],
        "dataset.root": ["dataset.root=/missing"],
        "task.templates": ["task.templates=nosuchset", f"dataset.root={cifar_root}"],
    }
    for key, overrides in cases.items():
        proc = run_cli(*base_args(tmp_path, "dataset.check_integrity=false", *overrides))
        assert proc.returncode != 0
        lines = _error_lines(proc)
        assert len(lines) == 1 and key in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "results.csv").exists()
    missing = _error_lines(run_cli(*base_args(tmp_path, "dataset.root=/missing")))[0]
    assert "download=true" in missing  # says how to get the data


HEAVY_MODULES = {"torch", "torchvision", "open_clip", "transformers", "timm"}


def _imported_modules(proc) -> set[str]:
    """The modules a ``python -X importtime`` run imported, from its stderr."""
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def test_config_errors_come_before_torch_is_imported(tmp_path, cifar_root, toy_root):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    cases = {
        "does not exist": ["+toy=zeroshot", "dataset.root=/missing"],
        "is a file, not a folder": ["+toy=rec", f"dataset.root={not_a_folder}"],
        "unknown key": ["no_such_key=1"],
        "fails the release checksum": ["+toy=zeroshot", f"dataset.root={cifar_root}", "dataset.check_integrity=true"],
        # past the dataset: the method's keys, the architecture's name and its tower are read without torch
        "out of range: the image tower has 3 blocks": ["+toy=zeroshot", f"dataset.root={cifar_root}", "method=falip",
                                                       "method.layers=[7]"],
        "is not an open_clip architecture": ["+toy=zeroshot", f"dataset.root={cifar_root}", "model.arch=NoSuchModel"],
        "'pointclip_v3' is not allowed": ["+toy=pointcloud", f"paths.toy={toy_root}", "task.projection=pointclip_v3"],
    }
    for message, overrides in cases.items():
        proc = run_cli(*base_args(tmp_path, *overrides), python_flags=("-X", "importtime"))
        assert proc.returncode == 2 and message in _error_lines(proc)[0], proc.stderr[-2000:]
        assert "clipbench.cli" in _imported_modules(proc)
        assert not _imported_modules(proc) & HEAVY_MODULES, overrides
    assert {"clipbench.methods", "clipbench.models.archs"} <= _imported_modules(proc)  # the probe saw validation


def test_unknown_key_is_rejected(tmp_path, cifar_root):
    proc = run_cli(*base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "+task.tempaltes=cifar"))
    assert proc.returncode != 0 and "task" in _error_lines(proc)[0] and "tempaltes" in _error_lines(proc)[0]


def test_multirun_sweep_writes_every_job_and_a_summary(tmp_path, cifar_root):
    proc = run_cli("-m", *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=6", "seed=0,1"), check=True)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert sorted(frame.seed.unique()) == [0, 1] and frame.config_hash.nunique() == 2
    assert "multirun summary" in proc.stdout


def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, cifar_root):
    proc = run_cli("-m", *base_args(tmp_path, "dataset.check_integrity=false", "limit=4", f"dataset.root={cifar_root},/missing"))
    failures = pd.read_csv(tmp_path / "sweep" / "failures.csv")
    assert len(failures) == 1 and "dataset.root" in failures.error[0]
    assert len(pd.read_csv(tmp_path / "results.csv")) == 3  # the good job's rows landed (4 classes: no top5)
    assert "1 job(s) failed" in proc.stdout


def test_unsupported_method_for_a_task_fails_before_work(tmp_path):
    import pytest
    from helpers import compose_config, tmp_overrides

    from clipbench.errors import ConfigError
    from clipbench.runner import validate

    for name in ("shape_names.txt", "test_files.txt"):  # the release's list files: the root itself passes
        (tmp_path / name).write_text("")
    cfg = compose_config(tmp_overrides(tmp_path, "task=pointcloud", "dataset=modelnet40", f"dataset.root={tmp_path}", "method=crop"))
    with pytest.raises(ConfigError, match=re.escape("task=pointcloud supports method=clip|falip, not 'crop'")):
        validate(cfg)


def test_run_key_errors_name_the_key_as_typed(tmp_path):
    from helpers import compose_config, tmp_overrides

    from clipbench.errors import ConfigError
    from clipbench.runner import validate

    for override, prefix in (("limit=abc", "limit: "), ("batch_size=0", "batch_size: ")):
        cfg = compose_config(tmp_overrides(tmp_path, f"dataset.root={tmp_path}", override))
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        assert str(info.value).startswith(prefix), str(info.value)


def _run_until_loading(tmp_path, monkeypatch, *overrides):
    """runner.run with dataset building and model loading replaced by failures: an error raised first comes before both."""
    from helpers import compose_config, tmp_overrides

    import clipbench.models
    from clipbench import runner

    def no_loading(*args, **kwargs):
        raise AssertionError("the dataset or the model was loaded before the config error")

    monkeypatch.setattr(clipbench.models, "load_model", no_loading)
    monkeypatch.setattr(runner, "build_dataset", no_loading)
    runner.run(compose_config(tmp_overrides(tmp_path, *overrides)), tmp_path / "run")


def test_errors_come_before_the_model_and_the_dataset(tmp_path, monkeypatch, cifar_root):
    from clipbench.errors import ConfigError

    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        _run_until_loading(tmp_path, monkeypatch, f"dataset.root={not_a_folder}")
    with pytest.raises(ConfigError, match="does not exist"):
        _run_until_loading(tmp_path, monkeypatch, "dataset.root=/missing")
    root = f"dataset.root={cifar_root}", "dataset.check_integrity=false"  # generated files, not the release
    # layer and head ranges are checked from the architecture's config
    with pytest.raises(ConfigError, match=r"method.layers: \[7\] out of range: the image tower has 3 blocks"):
        _run_until_loading(tmp_path, monkeypatch, *root, "method=falip", "method.layers=[7]")
    with pytest.raises(ConfigError, match=r"method.heads: head indices \[5\] out of range: each block has 3 heads"):
        _run_until_loading(tmp_path, monkeypatch, *root, "method=falip", "method.layers=[-1]", "method.heads=[5]")
    with pytest.raises(ConfigError, match="device: cuda:7 was requested"):
        _run_until_loading(tmp_path, monkeypatch, *root, "device=cuda:7")
    with pytest.raises(AssertionError, match="was loaded"):  # a valid config does reach the loading
        _run_until_loading(tmp_path, monkeypatch, *root)


def test_a_failed_integrity_check_comes_before_the_model(tmp_path, monkeypatch, cifar_root):
    from helpers import compose_config, tmp_overrides

    import clipbench.models
    from clipbench.errors import ConfigError
    from clipbench.runner import run

    monkeypatch.setattr(clipbench.models, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    with pytest.raises(ConfigError, match="fails the release checksum"):  # generated files are not the release
        run(compose_config(tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=true")), tmp_path / "run")


def test_missing_cuda_device_is_a_config_error():
    import torch

    from clipbench.errors import ConfigError
    from clipbench.runtime import resolve_device

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=f"device: cuda:{visible} was requested but {visible} CUDA device"):
        resolve_device(f"cuda:{visible}")
    with pytest.raises(ConfigError, match="use cuda:<index>"):
        resolve_device("cuda:x")


def test_top_level_typos_are_one_line_naming_the_key_as_typed(tmp_path):
    from clipbench.cli import unknown_top_level_key

    for typo in ("batch_sz=3", "+limt=2"):
        proc = run_cli(typo)
        assert proc.returncode == 2 and _error_lines(proc) == [_error_lines(proc)[0]], proc.stderr
        assert _error_lines(proc)[0].startswith(f"error: {typo.split('=')[0].lstrip('+')}: unknown key")
    assert unknown_top_level_key(["-m", "+toy=rec", "method.alpha=0.1,0.2", "hydra.run.dir=x", "++limit=3", "experiment=toy_default",
                                 "hydra/launcher=joblib", "+hydra/sweeper=job_list"]) is None
    assert unknown_top_level_key(["--cfg", "job", "method.alpha=1", "resum=true"]) == "resum"
    proc = run_cli("toy=zeroshot")
    assert proc.returncode == 2 and _error_lines(proc) == ["error: toy: a preset added on top of the defaults; write +toy=zeroshot"]


def test_tower_shapes_read_without_open_clip_match_open_clips_own_build():
    import open_clip
    from open_clip.model import CLIPVisionCfg

    from clipbench.models.factory import VIT_DEFAULTS, arch_config, available_archs, vit_tower_shape

    assert {k: getattr(CLIPVisionCfg(), k) for k in VIT_DEFAULTS} == VIT_DEFAULTS
    archs = available_archs()
    assert {"toyclip", TINY_ARCH, "clipbench-test-coca", "clipbench-test-convnext"} <= set(archs)  # the toy and test towers
    for arch in archs:
        assert arch_config(arch) == open_clip.get_model_config(arch), arch  # the same JSON, read without open_clip
        vision = CLIPVisionCfg(**open_clip.get_model_config(arch)["vision_cfg"])
        # open_clip's _build_vision_tower: a ViT unless timm or a ResNet (list of layers); heads = width // head_width
        vit = not vision.timm_model_name and isinstance(vision.layers, int)
        assert vit_tower_shape(arch) == ((vision.layers, vision.width // vision.head_width) if vit else None), arch
        assert arch_config(arch) is not None, arch
    assert arch_config("NoSuchModel") is None

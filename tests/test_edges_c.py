"""Hostile input: a results CSV never decides where files land, interrupted runs end in one line."""

import json
from pathlib import Path

import pytest

from clipbench.report.build import build_report
from clipbench.results.csv_store import RESULT_COLUMNS, append_rows


def _row(experiment, value):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(run_id=f"r{value}", timestamp="2026-01-01T00:00:00+00:00", split="val", n=10, seed=0, device="cpu",
               config_hash=f"h{value}", experiment=experiment, task="rec", dataset="refcoco", model_arch="toyclip",
               method="falip", method_params=json.dumps({"alpha": 0.5}), metric="accuracy", value=value)
    return row


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/clipbench_abs_escape/x"])
def test_report_keeps_every_file_under_out_whatever_the_experiment_name(tmp_path, name):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    csv = work / "results.csv"
    append_rows(csv, [_row(name, 0.5), _row("plain", 0.25)])
    out = work / "report"
    before = {p for p in tmp_path.rglob("*")}
    index = build_report(csv, out, runs=[])
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p == out or out in p.parents for p in new), sorted(map(str, new - {out}))
    text = index.read_text()
    assert f"## {name}" in text and "## plain" in text  # the heading still names the experiment as run
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == 2 and "plain" in folders
    assert not Path("/tmp/clipbench_abs_escape").exists()


def test_experiments_whose_names_clean_to_one_folder_stay_apart(tmp_path):
    csv = tmp_path / "results.csv"
    append_rows(csv, [_row("a/b", 0.5), _row("a_b", 0.25)])
    build_report(csv, tmp_path / "out", runs=[])
    folders = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert len(folders) == 2
    headings = {f.name: (f / "table.md").read_text().splitlines()[0] for f in folders}
    assert sorted(headings.values()) == ["# a/b", "# a_b"]


def test_malformed_model_config_json_is_one_line(tmp_path, monkeypatch, cifar_root):
    from conftest import base_args, run_cli

    folder = tmp_path / "model_configs"
    folder.mkdir()
    (folder / "broken.json").write_text('{"embed_dim": 8,')
    monkeypatch.setenv("CLIPBENCH_MODEL_CONFIGS", str(folder))
    data = (f"dataset.root={cifar_root}", "dataset.check_integrity=false")
    for args in (base_args(tmp_path, *data, "model.arch=broken"), base_args(tmp_path, *data)):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"CLIPBENCH_MODEL_CONFIGS: {folder / 'broken.json'} is not valid JSON" in proc.stderr
        assert not (tmp_path / "results.csv").exists()


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, cifar_root):
    import subprocess
    import sys

    from conftest import ROOT, base_args

    args = base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false")
    code = ("import sys\nimport clipbench.runner\n"
            "def interrupted(*a, **k):\n    raise KeyboardInterrupt\n"
            "clipbench.runner.run = interrupted\n"
            f"sys.argv = ['clipbench', *{args!r}]\n"
            "from clipbench.cli import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("interrupted:")
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def test_dead_wandb_endpoint_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    import socket
    import threading

    import pandas as pd
    from omegaconf import OmegaConf

    from clipbench.config import WandbConfig
    from clipbench.results.wandb_logger import log_run

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def accept_and_never_answer():
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept_and_never_answer, daemon=True).start()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    wcfg = OmegaConf.structured(WandbConfig(mode="online", init_timeout=2.0))
    with caplog.at_level("WARNING"):
        logged = log_run(wcfg, "dead-endpoint", {"a": 1}, {"top1": 0.5}, {"t": pd.DataFrame({"x": [1]})}, None, tmp_path)
    assert logged
    assert "W&B did not answer within 2 s" in caplog.text
    assert list((tmp_path / "wandb").glob("offline-run-*")), list((tmp_path / "wandb").iterdir())


def test_a_file_name_too_long_for_the_filesystem_is_a_skipped_sample(tmp_path, toy_root, monkeypatch):
    from test_bad_input import _gallery_copy, _retrieval

    def too_long(data):
        data["images"][0]["filename"] = "x" * 300 + ".jpg"  # over the 255-byte name limit: ENAMETOOLONG

    ann, images, _ = _gallery_copy(toy_root, tmp_path / "g", edit=too_long)
    assert _retrieval(tmp_path, toy_root, monkeypatch, ann, images)["skipped"] == (1, 30)


@pytest.mark.filterwarnings("ignore:model.pretrained is null")
def test_heads_skips_a_fifo_and_a_decompression_bomb_like_the_runs(tmp_path, capsys):
    import os
    import threading

    from PIL import Image
    from test_falip_head_sensitivity import write_fixture

    from clipbench.heads import main

    images, boxes = write_fixture(tmp_path)
    os.mkfifo(images / "fifo.png")
    Image.new("L", (13400, 13400)).save(images / "bomb.png")  # 180 MP, over PIL's limit; a small file
    pairs = json.loads(boxes.read_text()) | {"fifo.png": [[0, 0, 8, 8]], "bomb.png": [[0, 0, 8, 8]]}
    boxes.write_text(json.dumps(pairs))
    result = []
    args = ["--images", str(images), "--boxes", str(boxes), "--out", str(tmp_path / "out")]
    worker = threading.Thread(target=lambda: result.append(main(args)), daemon=True)
    worker.start()
    worker.join(240)  # a hang guard: opening a FIFO without a writer blocks forever
    assert not worker.is_alive() and result == [0]
    assert "4 image+box pairs (2 skipped)" in capsys.readouterr().out


def test_search_over_only_unreadable_images_is_one_line(tmp_path, capsys):
    from conftest import TINY_ARCH

    from clipbench.search import main

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not an image")
    (folder / "b.png").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["--images", str(folder), "--query", "x", "--arch", TINY_ARCH, "--cache-dir", str(tmp_path / "cache"),
              "--out", str(tmp_path / "sheet.png"), "--no-progress"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: --images: none of the 2 image(s) in {folder} could be read"


def _validate_and_stop_before_loading(tmp_path, monkeypatch, *overrides):
    """runner.run with dataset building and model loading replaced by failures: a ConfigError/DataError
    raised while validating comes before both."""
    from helpers import compose_config, tmp_overrides

    import clipbench.models
    from clipbench import runner

    def no_loading(*args, **kwargs):
        raise AssertionError("the dataset or the model was loaded before the check")

    monkeypatch.setattr(clipbench.models, "load_model", no_loading)
    monkeypatch.setattr(runner, "build_dataset", no_loading)
    runner.run(compose_config(tmp_overrides(tmp_path, *overrides)), tmp_path / "run")


@pytest.mark.parametrize("edit, message", [
    (lambda labels: labels.__setitem__(0, 100), r"1 label\(s\) outside 0..99 \(first: 100\)"),
    (lambda labels: labels.__setitem__(1, -1), r"1 label\(s\) outside 0..99 \(first: -1\)"),
    (lambda labels: labels.append(3), r"41 labels for 40 images"),
])
def test_cifar_labels_are_checked_while_validating(tmp_path, monkeypatch, edit, message):
    from conftest import colour_images

    from clipbench.errors import DataError
    from clipbench.toy.writers.classification import write_cifar100

    images, labels, names = colour_images(40)
    names = list(names) + [f"extra {i}" for i in range(100 - len(names))]
    labels = list(labels)
    edit(labels)
    write_cifar100(tmp_path / "cifar", "test", images, labels, names)
    with pytest.raises(DataError, match=message):
        _validate_and_stop_before_loading(tmp_path, monkeypatch, f"dataset.root={tmp_path / 'cifar'}",
                                          "dataset.check_integrity=false")


@pytest.mark.parametrize("override, key", [
    ("task.templates=['a photo of {} with {braces}']", "task.templates"),
    ("task.templates=['an unbalanced { brace around {}']", "task.templates"),
])
def test_a_template_with_a_second_field_is_refused_while_validating(tmp_path, monkeypatch, cifar_root, override, key):
    from clipbench.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        _validate_and_stop_before_loading(tmp_path, monkeypatch, f"dataset.root={cifar_root}",
                                          "dataset.check_integrity=false", override)


def test_rec_and_prompt_text_templates_refuse_a_second_field():
    from clipbench.config.methods import ShadeConfig
    from clipbench.config.tasks import RecConfig
    from clipbench.data.templates import has_one_field
    from clipbench.errors import ConfigError

    assert has_one_field("a photo of {}") and has_one_field("{{literal}} {}")
    with pytest.raises(ConfigError, match="task.template"):
        RecConfig(template="a photo of {} in {place}").validate()
    with pytest.raises(ConfigError, match="method.text_template"):
        ShadeConfig(text_template="{} {}").validate()

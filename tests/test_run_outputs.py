"""What a run reports beyond the CSV: W&B config and tables, ad-hoc experiment names, quiet logs."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import compose_config, tmp_overrides

from clipbench.runner import run


class FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.logged: dict = {}

    def log(self, values: dict) -> None:
        self.logged.update(values)

    def finish(self) -> None:
        pass


@pytest.fixture
def wandb_runs(monkeypatch):
    import wandb

    runs: list[FakeRun] = []

    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    return runs


@pytest.mark.parametrize("toy, table, method", [("retrieval", "metrics", "clip"), ("rec", "predictions", "crop"),
                                                ("region_cls", "predictions", "clip")])
def test_wandb_gets_config_hash_git_sha_and_the_task_tables(tmp_path, toy_root, monkeypatch, wandb_runs, toy, table, method):
    import wandb

    cfg = compose_config(tmp_overrides(tmp_path, f"paths.toy={toy_root}", f"+toy={toy}", f"method={method}", "logger=both",
                                       "limit=4", "save_predictions=true"))
    rows = run(cfg, tmp_path / "run")
    (logged,) = wandb_runs
    assert logged.init["config"]["config_hash"] == rows[0]["config_hash"]
    assert logged.init["config"]["git_sha"] == rows[0]["git_sha"] != ""
    assert isinstance(logged.logged[table], wandb.Table)
    metrics = logged.logged["metrics"]
    assert isinstance(metrics, wandb.Table) and {r[0] for r in metrics.data} == {r["metric"] for r in rows}


def test_experiment_name_groups_an_ad_hoc_run(tmp_path, cifar_root, wandb_runs):
    cfg = compose_config(tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=4",
                                       "experiment_name=my_study", "logger=both"))
    run(cfg, tmp_path / "run")
    assert set(pd.read_csv(tmp_path / "results.csv").experiment) == {"my_study"}
    assert wandb_runs[0].init["group"] == "my_study"


@pytest.mark.parametrize("spelling", ["null", "none", "None"])
def test_random_init_banner_for_every_spelling_of_no_weights(tmp_path, cifar_root, capsys, spelling):
    overrides = tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=4")
    run(compose_config([*overrides, f"model.pretrained={spelling}"]), tmp_path / "run")
    assert capsys.readouterr().out.count("RANDOMLY INITIALISED. Its numbers measure nothing.") == 1


def test_progress_off_a_terminal_is_a_few_plain_lines():
    import io

    from clipbench.progress import LoggedProgress, tqdm

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not isinstance(tqdm(range(3), file=Terminal()), LoggedProgress)
    log = io.StringIO()
    for _ in tqdm(range(40), desc="zeroshot", unit="batch", file=log):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split(",")[0] for line in lines] == [f"zeroshot: {n}/40 batch ({p}%)" for n, p in ((10, 25), (20, 50), (30, 75), (40, 100))]
    quiet = io.StringIO()
    for _ in tqdm(range(5), file=quiet, disable=True):
        pass
    assert quiet.getvalue() == ""


def test_a_failed_run_leaves_its_error_in_the_run_log(tmp_path):
    from conftest import base_args, run_cli

    proc = run_cli(*base_args(tmp_path, "dataset.root=/missing"))
    assert proc.returncode == 2
    (log,) = (tmp_path / "run").glob("*.log")
    assert log.name == "clipbench.log"  # the Hydra app is named clipbench
    assert "error: dataset.root: /missing does not exist" in log.read_text()


def test_sweep_workers_are_quiet(tmp_path, cifar_root):
    from conftest import base_args, run_cli

    proc = run_cli("-m", *base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=4",
                                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), check=True)  # one job, in a loky worker
    out = proc.stdout + proc.stderr
    assert out.count("RANDOMLY INITIALISED") == 1  # one banner, no repeated warnings
    assert "No pretrained weights loaded" not in out
    assert "Parsing model identifier" not in out and "[root][INFO]" not in out  # open_clip's INFO chatter
    assert out.count("weights random init") == 1  # one line says what was loaded


def test_wandb_run_is_named_tagged_summarised_and_shows_rec_examples(tmp_path, toy_root, wandb_runs):
    import numpy as np
    import wandb

    from clipbench.config import to_schema
    from clipbench.data import DATASETS
    from clipbench.models.weights import model_label
    from clipbench.runner import build_dataset, resolve_groups
    from clipbench.tasks.rec import EXAMPLE_SIDE, GOLD_COLOUR, PRED_COLOUR

    cfg = compose_config(tmp_overrides(tmp_path, f"paths.toy={toy_root}", "+toy=rec", "method=crop", "logger=both", "limit=12",
                                       "logger.wandb.examples=3", "experiment_name=wb", "save_predictions=true"))
    rows = run(cfg, tmp_path / "run")
    (logged,) = wandb_runs
    label = model_label(rows[0]["model_arch"], rows[0]["model_pretrained"])
    assert logged.init["name"] == f"crop | {label} | rec/refcoco | {rows[0]['run_id']}"
    assert {"task:rec", "dataset:refcoco", f"model:{label}", "method:crop", "experiment:wb"} <= set(logged.init["tags"])
    accuracy = next(r for r in rows if r["metric"] == "accuracy")
    assert accuracy["ci_low"] == accuracy["ci_low"] and accuracy["ci_high"] == accuracy["ci_high"]  # not NaN: an interval
    for key in ("ci_low", "ci_high", "n"):
        assert logged.logged[f"accuracy/{key}"] == accuracy[key]
    table = logged.logged["predictions"]
    assert isinstance(table, wandb.Table) and table.columns == ["sample_id", "expression", "correct", "image"]
    resolved = resolve_groups(cfg)
    dataset = build_dataset(to_schema(DATASETS.get("refcoco").config, resolved.dataset, "dataset"))
    sentences = list(dataset.sentences())[:3]  # the toy scenes' first sentences, none skipped
    assert [row[:2] for row in table.data] == [[s.sample_id, s.text] for s in sentences]  # capped at 3
    predicted = pd.read_csv(tmp_path / "run" / "predictions.csv").set_index("sample_id")
    boxes = {s.sample_id: (entry, s) for entry in dataset.images for s in entry.sentences}
    for sample_id, _, correct, image in table.data:
        entry, sentence = boxes[sample_id]
        assert correct == predicted.at[sample_id, "correct"]
        pixels = np.asarray(image.image.convert("RGB"))
        assert max(pixels.shape[:2]) <= EXAMPLE_SIDE
        scale = max(pixels.shape[:2]) / max(dataset.image(entry).size)
        for box, colour in ((entry.proposals[predicted.at[sample_id, "pred"]].box, PRED_COLOUR), (sentence.gold_box, GOLD_COLOUR)):
            x0, y0 = (min(int(v * scale), n - 1) for v, n in zip(box[:2], pixels.shape[1::-1]))
            edge = pixels[y0:y0 + 2, x0:x0 + 2].reshape(-1, 3).tolist()
            if colour == GOLD_COLOUR and correct:
                continue  # the red predicted box lies on top of the gold one
            assert list(colour) in edge, (sample_id, colour, edge)


def test_negative_wandb_examples_stop_before_any_work(tmp_path, cifar_root):
    from clipbench.errors import ConfigError

    cfg = compose_config(tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "logger=both", "logger.wandb.examples=-1"))
    with pytest.raises(ConfigError, match="logger.wandb.examples"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "results.csv").exists()

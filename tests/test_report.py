import json
import subprocess
import sys

import pandas as pd
import pytest

from clipbench.errors import DataError
from clipbench.logging.results import RESULT_COLUMNS, append_rows
from clipbench.report.build import build_report, compare, load_results
from clipbench.report.reported import REPORTED_COLUMNS, load_reported

TAG = "openai"  # the tag as results rows record it; these tests load no weights


def _row(**kw):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(run_id="r", timestamp="2026-01-01T00:00:00+00:00", split="test", n=100, seed=0, device="cpu")
    row.update(kw)
    return row


def test_every_reported_file_parses_and_covers_the_reference():
    frame = load_reported()
    assert len(frame) == 87
    assert set(frame.file) == {"falip.csv", "visual_prompts.csv", "zeroshot.csv", "pointclip.csv", "clipscore.csv"}
    vit_b32 = frame[(frame.dataset == "cifar100") & (frame.model == "ViT-B-32") & (frame.paper.str.startswith("open_clip"))]
    assert vit_b32.value.tolist() == [64.23]
    assert not frame[frame.paper.str.startswith("FALIP")].verified.any()  # secondary numbers are flagged


def test_malformed_reported_row_names_file_and_row(tmp_path):
    path = tmp_path / "bad.csv"
    good = "p,t,zeroshot,cifar100,test,clip,ViT-B-32,s,top1,64.2,percent,src,true"
    path.write_text(",".join(REPORTED_COLUMNS) + "\n" + good + "\n" + good.replace("64.2", "sixty") + "\n")
    with pytest.raises(DataError, match=r"bad.csv row 3: value 'sixty'"):
        load_reported([path])
    path.write_text(",".join(REPORTED_COLUMNS) + "\n" + good + ",extra\n")
    with pytest.raises(DataError, match="row 2: expected 13 fields"):
        load_reported([path])


def test_comparison_matches_only_runs_with_real_weights(tmp_path):
    csv = tmp_path / "results.csv"
    append_rows(csv, [
        _row(config_hash="a", experiment="cifar100_model_variants", task="zeroshot", dataset="cifar100", model_arch="ViT-B-32",
             model_pretrained=TAG, method="clip", method_params="{}", metric="top1", value=0.65),
        _row(config_hash="b", experiment="cifar100_model_variants", task="zeroshot", dataset="cifar100", model_arch="ViT-B-32",
             model_pretrained="", method="clip", method_params="{}", metric="top1", value=0.01),
        _row(config_hash="a", experiment="cifar100_model_variants", task="zeroshot", dataset="cifar100", model_arch="ViT-B-32",
             model_pretrained=TAG, method="clip", method_params="{}", metric="skipped", value=0.0),
    ])
    table = compare(load_results(csv), load_reported())
    assert len(table) == 3  # no skipped row; the real run meets both papers' numbers, the random one none
    real = table[table.model_pretrained == TAG].sort_values("reported")
    assert real.reported.tolist() == pytest.approx([0.6423, 0.651])
    assert real["diff"].tolist() == pytest.approx([0.65 - 0.6423, 0.65 - 0.651])
    assert pd.isna(table[table.model_pretrained == ""].iloc[0].reported)


def test_report_writes_tables_plots_and_index(tmp_path):
    csv = tmp_path / "results.csv"
    rows = []
    for alpha in (0.1, 0.2, 0.4):
        for layer in (8, 9):
            for head in (0, 1):
                params = json.dumps({"alpha": alpha, "layers": [layer], "heads": [[head]]})
                rows.append(_row(config_hash=f"{alpha}{layer}{head}", experiment="falip_head_sensitivity", task="rec",
                                 dataset="refcoco", split="val", model_arch="ViT-B-16", model_pretrained=TAG,
                                 method="falip", method_params=params, metric="accuracy", value=alpha + layer / 100 + head / 1000))
    append_rows(csv, rows)
    index = build_report(csv, tmp_path / "out")
    text = index.read_text()
    assert "falip_head_sensitivity/comparison.md" in text and "alpha_curves.png" in text and "layer_head_heatmap.png" in text
    exp = tmp_path / "out" / "falip_head_sensitivity"
    for name in ("comparison.md", "comparison.tex", "table.md", "table.tex", "alpha_curves.png", "layer_head_heatmap.png"):
        assert (exp / name).stat().st_size > 0, name
    assert r"\begin{tabular}" in (exp / "table.tex").read_text()


def test_empty_results_give_a_clear_message(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text(",".join(RESULT_COLUMNS) + "\n")
    proc = subprocess.run([sys.executable, "-m", "clipbench.report.build", "--results", str(csv), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "holds no results yet" in proc.stderr and "Traceback" not in proc.stderr


def test_report_logs_its_tables_to_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    csv = tmp_path / "results.csv"
    append_rows(csv, [_row(config_hash="a", experiment="toy_default", task="zeroshot", dataset="cifar100", model_arch="toyclip",
                           model_pretrained="", method="clip", method_params="{}", metric="top1", value=0.9)])
    build_report(csv, tmp_path / "out", use_wandb=True)
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_tables_keep_apart_rows_that_differ_only_in_task_params_or_method_config(tmp_path):
    from clipbench.report.build import paper_layout

    csv = tmp_path / "results.csv"
    common = dict(experiment="pointclip", task="pointcloud", dataset="modelnet40", model_arch="ViT-B-16",
                  model_pretrained=TAG, method="clip", metric="top1", dataset_params='{"name": "modelnet40", "split": "test"}')
    append_rows(csv, [
        _row(config_hash="v1", method_params='{"config": "clip"}', value=0.81,
             task_params='{"name": "pointcloud", "projection": "pointclip_v1", "views": null}', **common),
        _row(config_hash="v2", method_params='{"config": "clip"}', value=0.16,
             task_params='{"name": "pointcloud", "projection": "pointclip_v2", "views": null}', **common),
        _row(config_hash="v2b", method_params='{"config": "clip_b"}', value=0.5,
             task_params='{"name": "pointcloud", "projection": "pointclip_v2", "views": null}', **common),
    ])
    results = load_results(csv)
    layout = paper_layout(compare(results, load_reported()))
    shown = sorted(zip(layout.method_config, layout.setting, layout["modelnet40 test top1"].round(1)))
    assert shown == [("clip", "task.projection=pointclip_v1", 81.0), ("clip", "task.projection=pointclip_v2", 16.0),
                     ("clip_b", "task.projection=pointclip_v2", 50.0)]
    table = compare(results, load_reported())
    assert set(zip(table.setting, table.reproduced)) >= {("task.projection=pointclip_v1", 0.81), ("task.projection=pointclip_v2", 0.16)}

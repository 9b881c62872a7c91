import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from clipbench.errors import DataError
from clipbench.report.build import build_report, compare, load_results
from clipbench.report.reported import REPORTED_COLUMNS, load_reported
from clipbench.results.csv_store import RESULT_COLUMNS, append_rows

TAG = "openai"  # the tag as results rows record it; these tests load no weights


def _row(**kw):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(run_id="r", timestamp="2026-01-01T00:00:00+00:00", split="test", n=100, seed=0, device="cpu")
    row.update(kw)
    return row


def test_every_reported_file_parses_and_covers_the_reference():
    frame = load_reported()
    assert len(frame[frame.file != "open_clip.csv"]) == 87
    assert set(frame.file) == {"falip.csv", "visual_prompts.csv", "zeroshot.csv", "pointclip.csv", "clipscore.csv", "open_clip.csv"}
    vit_b32 = frame[(frame.dataset == "cifar100") & (frame.model == "ViT-B-32") & (frame.file == "zeroshot.csv") & (frame.paper.str.startswith("open_clip"))]
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


def _run_with_outcomes(tmp_path, run_id, hits, **kw):
    from clipbench.metrics.uncertainty import OUTCOMES_FILE, Outcome, bootstrap_interval, save_outcomes

    run_dir = tmp_path / "runs" / run_id
    run_dir.mkdir(parents=True)
    outcome = Outcome(hits, sample_id=[str(i) for i in range(len(hits))])
    save_outcomes(run_dir / OUTCOMES_FILE, {"accuracy": outcome}, run_id)
    low, high = bootstrap_interval(outcome)
    return _row(run_id=run_id, config_hash=run_id, experiment="toy_default", task="rec", dataset="refcoco", split="testA",
                model_arch="toyclip", model_pretrained="/abs/path/to/toyclip.safetensors", metric="accuracy",
                value=float(np.mean(hits)), n=len(hits), ci_low=low, ci_high=high, **kw)


def test_report_marks_differences_significant_after_holm(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random(300) < 0.6).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:40]] = 1  # 40 pairs only the better method gets right
    noisy = base.copy()
    noisy[np.flatnonzero(base == 0)[:3]] = 1
    noisy[np.flatnonzero(base == 1)[:2]] = 0
    csv = tmp_path / "results.csv"
    append_rows(csv, [
        _run_with_outcomes(tmp_path, "base", base, method="clip", method_params="{}"),
        _run_with_outcomes(tmp_path, "better", better, method="falip", method_params='{"alpha": 1.0}'),
        _run_with_outcomes(tmp_path, "noisy", noisy, method="blur", method_params='{"sigma": 8}'),
    ])
    build_report(csv, tmp_path / "out", runs=[tmp_path / "runs"])
    shown = (tmp_path / "out" / "toy_default" / "comparison.md").read_text()
    lines = {m: next(line for line in shown.splitlines() if f"| {m} " in line) for m in ("clip", "falip", "blur")}
    assert " *" in lines["falip"] and " *" not in lines["blur"] and " *" not in lines["clip"]
    # Holm over the two tests: McNemar exact on 40 vs 0 discordant pairs, and on 3 vs 2
    p_better = 2 * 0.5**40
    p_noisy = min(1.0, 2 * sum(math.comb(5, i) for i in range(3)) / 2**5)
    assert f"{min(1, 2 * p_better):.3g}" in lines["falip"] and f"{max(2 * p_better, p_noisy):.3g}" in lines["blur"]
    assert "toyclip toyclip.safetensors" in lines["clip"] and "/abs/path" not in shown  # model label, not a path
    assert f"{100 * base.mean():.1f} [" in lines["clip"]  # percent with its interval
    layout = (tmp_path / "out" / "toy_default" / "table.md").read_text()
    assert "{" not in layout and "method_params" not in layout  # no raw JSON
    assert (tmp_path / "out" / "toy_default" / "per_task_methods.png").stat().st_size > 0


def test_comparison_says_whether_the_reported_number_is_inside_the_interval(tmp_path):
    csv = tmp_path / "results.csv"
    append_rows(csv, [_row(config_hash="a", experiment="cifar100_model_variants", task="zeroshot", dataset="cifar100",
                           model_arch="ViT-B-32", model_pretrained=TAG, method="clip", method_params="{}", metric="top1",
                           value=0.65, ci_low=0.645, ci_high=0.66)])
    table = compare(load_results(csv), load_reported()).sort_values("reported")
    assert table["inside"].tolist() == [False, True]  # 64.23 lies below the interval, 65.1 inside
    build_report(csv, tmp_path / "out", runs=[])
    text = (tmp_path / "out" / "cifar100_model_variants" / "comparison.md").read_text()
    assert "reported in CI" in text and "| no " in text and "| yes " in text


def test_tables_show_percent_only_for_fractions_and_escape_latex(tmp_path):
    csv = tmp_path / "results.csv"
    common = dict(experiment="toy_clipscore", task="clipscore", dataset="flickr8k_expert", split="", model_arch="toyclip",
                  model_pretrained="", method="clip", method_params="{}")
    append_rows(csv, [_row(config_hash="a", metric="length", value=10.0436, **common),
                      _row(config_hash="a", metric="kendall_tau_c", value=0.7067, **common),
                      _row(config_hash="b", metric="top1", value=0.5, **(common | {"method_params": '{"x": "a_{b}"}'}))])
    build_report(csv, tmp_path / "out", runs=[])
    md = (tmp_path / "out" / "toy_clipscore" / "comparison.md").read_text()
    assert "10.04" in md and "1004.36" not in md and "0.7067" in md and "| 50.0" in md
    tex = (tmp_path / "out" / "toy_clipscore" / "table.tex").read_text()
    assert "booktabs" in tex and r"a\_\{b\}" in tex and "toyclip (random init)" in tex


def test_report_logs_numbers_and_plots_to_the_configured_project(tmp_path, monkeypatch):
    import wandb

    logged, inits = {}, {}

    class FakeRun:
        def log(self, data):
            logged.update(data)

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kw: inits.update(kw) or FakeRun())
    csv = tmp_path / "results.csv"
    rng = np.random.default_rng(1)
    rows = [_run_with_outcomes(tmp_path, m, (rng.random(50) < 0.5).astype(float), method=m, method_params="{}")
            for m in ("clip", "falip")]
    append_rows(csv, rows)
    (tmp_path / "runs" / "falip" / "config.yaml").write_text("logger:\n  wandb:\n    project: my-project\n")
    build_report(csv, tmp_path / "out", use_wandb=True, runs=[tmp_path / "runs"])
    assert inits["project"] == "my-project"
    frame = logged["comparison"].get_dataframe()
    assert frame["reproduced"].dtype.kind == "f" and frame["ci_low"].dtype.kind == "f"
    assert any(isinstance(v, wandb.Image) for k, v in logged.items() if k.startswith("plots/"))


def _grey_pixels(path) -> int:
    import matplotlib.image

    pixels = (matplotlib.image.imread(path)[..., :3] * 255).round()
    return int((np.abs(pixels - 0xD0) <= 1).all(axis=-1).sum())


@pytest.mark.parametrize("with_a_null_cell", [True, False])
def test_heatmap_greys_cells_no_different_from_the_baseline(tmp_path, with_a_null_cell):
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.4).astype(float)
    rows = [_run_with_outcomes(tmp_path, "base", base, method="clip", method_params="{}")]
    for layer in (10, 11):
        for head in (0, 1):
            hits = base.copy()
            if not (with_a_null_cell and (layer, head) == (11, 1)):
                hits[np.flatnonzero(base == 0)[: 60 + 10 * head]] = 1
            params = json.dumps({"alpha": 1.0, "layers": [layer], "heads": [[head]]})
            rows.append(_run_with_outcomes(tmp_path, f"l{layer}h{head}", hits, method="falip", method_params=params))
    append_rows(tmp_path / "results.csv", rows)
    build_report(tmp_path / "results.csv", tmp_path / "out", runs=[tmp_path / "runs"])
    grey = _grey_pixels(tmp_path / "out" / "toy_default" / "layer_head_heatmap.png")
    assert (grey > 5000) if with_a_null_cell else (grey < 500)  # one grey cell vs none (edge pixels aside)


def test_per_model_bars_need_two_models(tmp_path):
    rows = [_row(config_hash=f"{m}", experiment="cifar100_model_variants", task="zeroshot", dataset="cifar100",
                 model_arch=m, model_pretrained=TAG, method="clip", method_params="{}", metric="top1", value=v,
                 ci_low=v - 0.01, ci_high=v + 0.01) for m, v in (("ViT-B-32", 0.65), ("ViT-B-16", 0.68))]
    append_rows(tmp_path / "results.csv", rows)
    build_report(tmp_path / "results.csv", tmp_path / "out", runs=[])
    assert (tmp_path / "out" / "cifar100_model_variants" / "per_model.png").stat().st_size > 0


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
    table = compare(load_results(csv), load_reported())
    layout = paper_layout(table)["pointcloud"]
    shown = sorted(zip(layout["method"], layout["settings"], layout["modelnet40 test top1"]))
    assert shown == [("clip", "projection=pointclip_v1", "81.0"), ("clip", "projection=pointclip_v2", "16.0"),
                     ("clip_b", "projection=pointclip_v2", "50.0")]
    # each run once, beside the numbers reported for its own projection only (ViT-B/16: V1 16.5, V2 64.22)
    assert sorted(zip(table["method_label"], table["reproduced"], table["reported"].round(4).fillna(-1))) == [
        ("clip", 0.16, 0.6422), ("clip", 0.81, 0.165), ("clip_b", 0.5, 0.6422)]

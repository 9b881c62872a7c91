"""Model comparisons: a models list in one sweep, paired tests between models on the same samples, an explicit
baseline, every experiment and rerun accounted for, variants.md, and metrics in their natural order."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from clipbench.errors import ConfigError
from clipbench.report.build import build_report, compare, load_results, main, paper_layout
from clipbench.report.reported import load_reported
from clipbench.results.csv_store import append_rows
from clipbench.results.table import in_natural_order, sweep_summary
from hydra_plugins.clipbench_sweeper.job_list_sweeper import expand_jobs, model_job
from tests.conftest import TINY_ARCH, base_args, run_cli
from tests.test_report import _row, _run_with_outcomes
from tests.tiny_towers import save_tiny_hf_clip

MODELS = ["clipbench-test-vit (random init)", "tiny-clip (hf)", "toyclip toyclip_copy.safetensors"]


@pytest.fixture(scope="module")
def two_grids(tmp_path_factory, cifar_root):
    """One sweep, run as a user would: three models (random-init open_clip, an HF CLIP saved with save_pretrained,
    a local checkpoint) from a command-line models list, times two experiment names of the same grid."""
    from clipbench.config import ASSETS_DIR

    tmp = tmp_path_factory.mktemp("grids")
    hf = save_tiny_hf_clip(tmp / "tiny-clip")
    ckpt = shutil.copy(ASSETS_DIR / "toyclip.safetensors", tmp / "toyclip_copy.safetensors")
    models = f"[{{arch:{TINY_ARCH}}},{{source:hf,arch:'{hf}'}},{{arch:toyclip,pretrained:'{ckpt}'}}]"
    args = [a for a in base_args(tmp) if not a.startswith("model.")]
    run_cli("-m", "hydra/sweeper=job_list", f"hydra.sweeper.models={models}", "experiment_name=grid_a,grid_b",
            f"dataset.root={cifar_root}", "dataset.check_integrity=false", *args, check=True)
    return tmp


def test_a_report_of_two_grids_shows_every_experiment_with_labels_and_paired_tests(two_grids):
    out = two_grids / "report"
    build_report(two_grids / "results.csv", out, runs=[two_grids / "sweep"])
    index = (out / "README.md").read_text()
    for experiment in ("grid_a", "grid_b"):
        assert f"## {experiment}" in index
        table = (out / experiment / "table.md").read_text()
        assert all(f"| {label} " in table for label in MODELS), table
        rows = {label: next(line for line in table.splitlines() if line.startswith(f"| {label} ")) for label in MODELS}
        assert "| baseline " in rows[MODELS[0]]  # the first model listed
        assert "random init" not in rows[MODELS[1]].split("|")[1] + rows[MODELS[2]].split("|")[1]
        assert f"| {MODELS[0]} clip " in rows[MODELS[1]] and " * " not in rows[MODELS[0]]
        assert "100.0 [100.0, 100.0] *" in rows[MODELS[2]]  # the trained checkpoint beats random weights
        variants = (out / experiment / "variants.md").read_text()
        assert "| average " in variants and all(label in variants for label in MODELS)
    # top1 and mean per-class recall (4 classes: no top5) of two models against the baseline, in each experiment
    assert index.count("4 paired tests") == 2


def test_an_explicit_baseline_is_used_and_named(two_grids, capsys):
    out = two_grids / "report_hf"
    main(["--results", str(two_grids / "results.csv"), "--out", str(out), "--runs", str(two_grids / "sweep"),
          "--baseline", "tiny-clip (hf)"])
    table = (out / "grid_a" / "table.md").read_text()
    assert "| tiny-clip (hf) " in next(line for line in table.splitlines() if "| baseline " in line)
    assert table.count("| tiny-clip (hf) clip ") == 2
    assert "* baseline: tiny-clip (hf)" in (out / "README.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--results", str(two_grids / "results.csv"), "--out", str(out), "--baseline", "ViT-H-14 laion"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--baseline: 'ViT-H-14 laion' names no model" in err[0] and "tiny-clip (hf)" in err[0]


def _run_with_outcomes_as(run_id, hits, tmp, **kw):
    row = _run_with_outcomes(tmp, run_id, hits, method="clip", method_params="{}")
    row.update(experiment="adhoc_models", **kw)
    return row


def test_models_on_the_same_samples_are_paired_against_the_experiments_own_baseline(tmp_path):
    rng = np.random.default_rng(1)
    base = (rng.random(200) < 0.5).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:40]] = 1
    rows = [_run_with_outcomes_as(r, h, tmp_path, model_arch=m, config_hash=r, model_pretrained=CHECKPOINT)
            for r, h, m in (("a", better, "ViT-B-16"), ("b", base, "ViT-B-32"), ("c", base.copy(), "RN50"))]
    append_rows(tmp_path / "results.csv", rows)
    (tmp_path / "runs" / "b" / "config.yaml").write_text("baseline: ViT-B-32 ft.pt\n")
    build_report(tmp_path / "results.csv", tmp_path / "out", runs=[tmp_path / "runs"])
    shown = (tmp_path / "out" / "adhoc_models" / "comparison.md").read_text()
    lines = {m: next(line for line in shown.splitlines() if line.count("|") > 4 and line.split("|")[4].strip() == f"{m} ft.pt")
             for m in ("ViT-B-16", "ViT-B-32", "RN50")}
    assert "| baseline " in lines["ViT-B-32"] and "| ViT-B-32 ft.pt clip " in lines["ViT-B-16"]
    assert " *" in lines["ViT-B-16"] and " *" not in lines["RN50"]  # 40 discordant pairs vs none
    assert "2 paired tests" in (tmp_path / "out" / "README.md").read_text()


CHECKPOINT = "/ckpt/ft.pt"  # a label only: no file is read


def test_reruns_and_rows_sharing_a_label_are_never_dropped_silently(tmp_path):
    common = dict(task="zeroshot", dataset="cifar100", model_arch="ViT-B-32", model_pretrained="/ckpt/ft.safetensors",
                  method="clip", method_params="{}", metric="top1")
    append_rows(tmp_path / "results.csv", [
        _row(run_id="first", config_hash="h1", timestamp="2026-01-01T00:00:00+00:00", value=0.5, **common),
        _row(run_id="again", config_hash="h1", timestamp="2026-01-02T00:00:00+00:00", value=0.5, **common),
        _row(run_id="seed1", config_hash="h2", timestamp="2026-01-03T00:00:00+00:00", value=0.6, seed=1, **common),
    ])
    build_report(tmp_path / "results.csv", tmp_path / "out", runs=[])
    index = (tmp_path / "out" / "README.md").read_text()
    assert "config `h1` (ViT-B-32 ft.safetensors, clip) ran 2 times: kept the latest run `again`" in index
    assert "earlier runs left out: `first`" in index
    table = (tmp_path / "out" / "adhoc" / "table.md").read_text()
    assert "config h1" in table and "config h2" in table and "50.0" in table and "60.0" in table


def test_metrics_are_in_natural_order_in_summaries_tables_and_plots(tmp_path):
    shuffled = ["skipped", "text_retrieval_recall@10", "recall@10", "mean_per_class_recall", "top5", "recall@5",
                "image_retrieval_recall@5", "kendall_tau_c", "lp_top1", "top1", "recall@1", "image_retrieval_recall@1"]
    assert in_natural_order(shuffled) == [
        "top1", "top5", "mean_per_class_recall", "lp_top1", "recall@1", "recall@5", "recall@10",
        "image_retrieval_recall@1", "image_retrieval_recall@5", "text_retrieval_recall@10", "kendall_tau_c", "skipped"]
    metrics = ["recall@10", "recall@5", "recall@1", "mean_per_class_recall", "top5", "top1"]
    rows = [_row(run_id="r", config_hash="h", task="t", dataset="d", model_arch="ViT-B-32",
                 model_pretrained="/ckpt/ft.safetensors", method="clip", method_params="{}", metric=m, value=0.1 * i) for i, m in enumerate(metrics)]
    append_rows(tmp_path / "results.csv", rows)
    layout = paper_layout(compare(load_results(tmp_path / "results.csv"), load_reported()))["t"]
    assert [c.split()[-1] for c in layout.columns[2:]] == metrics[::-1]
    summary = sweep_summary(pd.read_csv(tmp_path / "results.csv", dtype={"method_params": str}).fillna(""))
    header = next(line for line in summary.splitlines() if "top1" in line)
    assert [header.index(m + " ") for m in metrics[::-1]] == sorted(header.index(m + " ") for m in metrics)


def test_heatmap_names_the_baseline_it_really_tested_against(tmp_path, monkeypatch):
    from clipbench.report import plots

    titles = []
    monkeypatch.setattr(plots.plt.Axes, "set_title", lambda self, text, **kw: titles.append(text), raising=True)
    rng = np.random.default_rng(0)
    hits = (rng.random(50) < 0.5).astype(float)
    rows = [_run_with_outcomes(tmp_path, f"l{layer}h{head}", hits, method="falip",
                               method_params=json.dumps({"alpha": 1.0, "layers": [layer], "heads": [[head]]}))
            for layer in (10, 11) for head in (0, 1)]  # no plain clip run: the first run listed is the baseline
    append_rows(tmp_path / "results.csv", rows)
    build_report(tmp_path / "results.csv", tmp_path / "out", runs=[tmp_path / "runs"])
    title = next(t for t in titles if "mask on one" in t)
    assert "no-FALIP" not in title and "vs toyclip toyclip.safetensors falip" in title


def test_a_models_list_gives_each_model_its_own_settings():
    entries = ["vit_b_32", {"arch": "ViT-B-16", "pretrained": "/ck pts/ft.safetensors"},
               {"source": "hf", "arch": "openai/clip-vit-base-patch16", "overrides": ["batch_size=8"]}]
    jobs = expand_jobs([["task=zeroshot"]], ["seed=0,1"], models=entries)
    assert len(jobs) == 6 and jobs[0] == ["model=vit_b_32", "task=zeroshot", "seed=0"]
    assert "model.pretrained='/ck pts/ft.safetensors'" in jobs[2] and "model.source=open_clip" in jobs[2]
    assert {"model.source=hf", "model.pretrained=null", "batch_size=8"} <= set(jobs[4])
    with pytest.raises(ConfigError, match="hydra.sweeper.models.*not tag"):
        model_job({"arch": "ViT-B-32", "tag": "openai"})


def test_resuming_a_grid_under_another_experiment_name_still_runs_it(tmp_path):
    from clipbench.results.csv_store import claim_config, release_claim

    path = tmp_path / "results.csv"
    append_rows(path, [_row(run_id="a", config_hash="h", experiment="grid_a", metric="top1", value=0.5)])
    assert claim_config(path, "h", experiment="grid_a") == f"already has results in {path}"
    assert claim_config(path, "h", experiment="grid_b") is None  # grid_b has no rows of its own yet
    release_claim(path, "h", experiment="grid_b")
    assert claim_config(path, "h", experiment="") is None  # nor has the ad-hoc group

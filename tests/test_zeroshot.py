"""Zero-shot classification end to end, checked against an independent recomputation."""

import json

import pandas as pd
import torch
import torch.nn.functional as F
from conftest import TINY_ARCH
from helpers import compose_config, tmp_overrides
from PIL import Image

from clipbench.data.classification import Cifar100
from clipbench.data.templates import CIFAR_TEMPLATES
from clipbench.models import load_model
from clipbench.results.csv_store import RESULT_COLUMNS
from clipbench.runner import run


def _run(tmp_path, cifar_root, *extra):
    cfg = compose_config(tmp_overrides(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", *extra))
    return run(cfg, tmp_path / "run")


def test_scores_match_an_independent_computation(tmp_path, cifar_root):
    rows = _run(tmp_path, cifar_root, "save_predictions=true")
    model = load_model(TINY_ARCH, None)  # the same cached instance the run used
    ds = Cifar100(cifar_root, "test", check_integrity=False)
    # classifier: normalised mean of normalised template embeddings, one class at a time
    weights = []
    for name in ds.classnames:
        tokens = model.tokenizer([t.format(name) for t in CIFAR_TEMPLATES])
        with torch.no_grad():
            emb = F.normalize(model.model.encode_text(tokens), dim=-1).mean(0)
        weights.append(F.normalize(emb, dim=0))
    weights = torch.stack(weights, dim=1)
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert list(preds.columns) == ["sample_id", "target", "pred", "scores"]
    assert len(preds) == len(ds)
    for i in (0, 7, 39):
        with torch.no_grad():
            feat = F.normalize(model.model.encode_image(model.preprocess(ds.image(i))[None]), dim=-1)
        expected = (model.model.logit_scale.exp() * feat @ weights)[0]
        got = torch.tensor(json.loads(preds.loc[preds.sample_id == i, "scores"].item()))
        assert torch.allclose(got, expected, atol=1e-4)
    top1 = (preds.target == preds.pred).mean()
    by_metric = {r["metric"]: r for r in rows}
    assert abs(by_metric["top1"]["value"] - top1) < 1e-6
    assert by_metric["top1"]["n"] == 40 and by_metric["skipped"]["value"] == 0
    assert by_metric["top1"]["items_per_s"] > 0 and by_metric["top1"]["peak_mem_mb"] > 0
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame.columns) == RESULT_COLUMNS
    assert set(frame.metric) == {"top1", "mean_per_class_recall", "skipped"}  # 4 classes: no top5
    assert (tmp_path / "run" / "config.yaml").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["metrics"]["top1"] == by_metric["top1"]["value"] and metrics["peak_mem_mb"] > 0


def test_text_cache_avoids_re_encoding(tmp_path, cifar_root, monkeypatch):
    from safetensors.torch import save_file

    from clipbench.models import factory, text_cache

    weights = tmp_path / "tiny.safetensors"
    save_file(dict(load_model(TINY_ARCH, None, reuse=False).model.state_dict()), str(weights))
    calls = []
    original = factory.LoadedModel.encode_text
    monkeypatch.setattr(factory.LoadedModel, "encode_text", lambda self, t, **k: calls.append(len(t)) or original(self, t, **k))
    _run(tmp_path, cifar_root, "limit=8", f"model.pretrained={weights}")
    _run(tmp_path, cifar_root, "limit=8", f"model.pretrained={weights}", "seed=1")
    assert calls == [4 * 18]  # the second run reuses the classifier from memory
    text_cache._MEMORY.clear()
    factory._MODEL_CACHE.clear()
    _run(tmp_path, cifar_root, "limit=8", f"model.pretrained={weights}")
    assert calls == [4 * 18]  # ... and from disk in a fresh model instance
    assert list((tmp_path / "cache" / "text").glob("classifier-*.pt"))
    _run(tmp_path, cifar_root, "limit=8", f"model.pretrained={weights}", "task.templates=simple")
    assert calls == [4 * 18, 4]  # a different template set is a different key


def test_random_init_models_never_share_cached_texts():
    a, b = load_model(TINY_ARCH, None, reuse=False), load_model(TINY_ARCH, None, reuse=False)
    assert a.fingerprint != b.fingerprint


def test_limit_and_resume(tmp_path, cifar_root, capsys):
    rows = _run(tmp_path, cifar_root, "limit=5", "resume=true")
    assert rows[0]["n"] == 5
    again = _run(tmp_path, cifar_root, "limit=5", "resume=true")
    assert again == [] and "skipping" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(rows)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    for cls in ("red", "blue"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (20, 20), (200, 10, 10) if cls == "red" else (10, 10, 200)).save(tmp_path / "imgs" / cls / f"{k}.png")
    (tmp_path / "imgs" / "red" / "bad.png").write_bytes(b"\x89PNG broken")
    cfg = compose_config(tmp_overrides(tmp_path, "dataset=imagefolder", f"dataset.root={tmp_path / 'imgs'}", "task.templates=simple"))
    rows = {r["metric"]: r for r in run(cfg, tmp_path / "run")}
    assert rows["skipped"]["value"] == 1 and rows["top1"]["n"] == 6 and rows["skipped"]["n"] == 7


def test_wandb_failure_keeps_csv_results(tmp_path, cifar_root, monkeypatch):
    import wandb

    def broken(*a, **k):
        raise RuntimeError("service down")

    monkeypatch.setattr(wandb, "init", broken)
    rows = _run(tmp_path, cifar_root, "limit=4", "logger=wandb")
    frame = pd.read_csv(tmp_path / "results.csv")
    assert len(frame) == len(rows) and set(frame.run_id) == {rows[0]["run_id"]}


def test_wandb_offline_logs_run(tmp_path, cifar_root, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    _run(tmp_path, cifar_root, "limit=4", "logger=both")
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "no offline W&B run in the run directory"
    assert len(pd.read_csv(tmp_path / "results.csv")) == 3  # top1, mean per-class recall, skipped


def test_sweep_jobs_share_the_built_dataset(tmp_path, cifar_root, monkeypatch):
    from clipbench import runner
    from clipbench.data import DATASETS

    spec = DATASETS.get("cifar100")
    builds = []
    monkeypatch.setattr(spec, "build", lambda cfg: builds.append(cfg) or Cifar100(cfg.root, cfg.split, check_integrity=False))
    runner._DATASET_CACHE.clear()
    _run(tmp_path, cifar_root, "limit=4", "seed=0")
    _run(tmp_path, cifar_root, "limit=4", "seed=1", "task.templates=simple")
    assert len(builds) == 1
    _run(tmp_path, cifar_root, "limit=4", "dataset.check_integrity=false", "dataset.split=test", "seed=2")
    assert len(builds) == 1  # same dataset config again: still shared
    runner._DATASET_CACHE.clear()


def test_zeroshot_scores_a_model_ensemble(tmp_path, cifar_root):
    rows = _run(tmp_path, cifar_root, "limit=6", "method=ensemble", f"method.models=[{{arch: {TINY_ARCH}, pretrained: null}}]",
                "method.method=crop")
    assert {r["metric"] for r in rows} >= {"top1", "mean_per_class_recall"} and rows[0]["n"] == 6

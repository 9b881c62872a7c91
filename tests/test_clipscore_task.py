"""task=clipscore end to end through the CLI, on generated images named like the real releases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from caption_fixtures import FLICKR_NAMES, ReferenceScorer, write_shape_images, write_tiny_checkpoint
from conftest import base_args, run_cli
from scipy.stats import kendalltau

from clipbench.data.clipscore_corpora import CaptionPair
from clipbench.toy.writers.clipscore_corpora import (
    write_caption_files,
    write_composite_csv,
    write_flickr8k,
    write_pascal50s,
)

PREFIX = "A photo depicts "
CAPTIONS = ["a red circle", "a green disc on grey", "a blue ball", "a yellow circle on noise",
            "two dogs playing in the snow", "a man rides a bike", "a red ball", "a round shape"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipscore")
    ckpt = write_tiny_checkpoint(root / "tiny.safetensors")
    paths = write_shape_images(root / "images", FLICKR_NAMES)
    return root, ckpt, dict(zip(FLICKR_NAMES, paths)), ReferenceScorer(ckpt)


def _args(tmp_path, ckpt, *extra):
    args = base_args(tmp_path, "task=clipscore", f"model.pretrained={ckpt}", *extra)
    return [a for a in args if a != "model.pretrained=null"]


def _results(tmp_path) -> dict[str, tuple[float, int]]:
    frame = pd.read_csv(tmp_path / "results.csv")
    return {r.metric: (r.value, r.n) for r in frame.itertuples()}


def _expected(ref: ReferenceScorer, image_path, candidate, references):
    img = ref.images([image_path])[0]
    txt = ref.texts([PREFIX + candidate])[0]
    a = 2.5 * max(float(img @ txt), 0.0)
    if not references:
        return a, None
    b = float((ref.texts([PREFIX + r for r in references]) @ txt).max())
    return a, (2 * a * b / (a + b) if a + b != 0 else 0.0)


def test_caption_files_scores_match_direct_computation(world, tmp_path):
    root, ckpt, images, ref = world
    ids = FLICKR_NAMES[:4]
    candidates = {i: CAPTIONS[k] for k, i in enumerate(ids)} | {"9999999999_missing0000": "a lost image"}
    candidates[ids[3]] += " with many more words" * 4  # longer than the tiny model's 16-token context
    references = {i: [CAPTIONS[(k + 1) % 8], CAPTIONS[(k + 4) % 8]] for k, i in enumerate(candidates)}
    cand_path, ref_path = write_caption_files(tmp_path / "json", candidates, references)
    proc = run_cli(*_args(tmp_path, ckpt, "dataset=captions", f"dataset.candidates={cand_path}",
                          f"dataset.images={root / 'images'}", f"dataset.references={ref_path}"), check=True)
    assert "skipped 1 missing or unreadable image(s)" in proc.stdout
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"sample_id": str})
    assert list(pred.columns) == ["sample_id", "clip_s_w2.5", "refclip_s_w2.5"]
    assert pred.sample_id.tolist() == ids
    expected = [_expected(ref, images[i], candidates[i], references[i]) for i in ids]
    assert pred["clip_s_w2.5"].tolist() == pytest.approx([e[0] for e in expected], abs=1e-5)
    assert pred["refclip_s_w2.5"].tolist() == pytest.approx([e[1] for e in expected], abs=1e-5)
    assert any(e[0] > 0 for e in expected) and any(e[0] == 0 for e in expected)  # both sides of the clamp
    res = _results(tmp_path)
    assert res["clip_s_w2.5"] == (pytest.approx(np.mean([e[0] for e in expected]), abs=1e-5), 4)
    assert res["refclip_s_w2.5"][0] == pytest.approx(np.mean([e[1] for e in expected]), abs=1e-5)
    assert res["length"][0] == pytest.approx(np.mean([len(candidates[i].split()) for i in ids]))
    assert res["skipped"][0] == 1
    assert res["truncated_captions"][0] == 1  # counted against the model's own context length


def test_empty_caption_is_skipped_and_counted(world, tmp_path):
    root, ckpt, images, ref = world
    ids = FLICKR_NAMES[:3]
    candidates = {ids[0]: CAPTIONS[0], ids[1]: "  ", ids[2]: CAPTIONS[2]}
    references = {ids[0]: [CAPTIONS[3], ""], ids[1]: [CAPTIONS[4]], ids[2]: [CAPTIONS[5]]}
    cand_path, ref_path = write_caption_files(tmp_path / "json", candidates, references)
    proc = run_cli(*_args(tmp_path, ckpt, "dataset=captions", f"dataset.candidates={cand_path}",
                          f"dataset.images={root / 'images'}", f"dataset.references={ref_path}"), check=True)
    assert "empty caption: 1" in proc.stdout and "empty reference (dropped, not a caption): 1" in proc.stdout
    res = _results(tmp_path)
    assert res["skipped"][0] == 1
    expected = [_expected(ref, images[i], candidates[i], [r for r in references[i] if r]) for i in (ids[0], ids[2])]
    assert res["clip_s_w2.5"] == (pytest.approx(np.mean([e[0] for e in expected]), abs=1e-5), 2)
    assert res["refclip_s_w2.5"][0] == pytest.approx(np.mean([e[1] for e in expected]), abs=1e-5)


def _flickr8k(tmp_path):
    """Six images with five captions each; candidates from other images (and one own, dropped by Expert)."""
    names = FLICKR_NAMES[:6]
    captions = {f"{n}.jpg": [CAPTIONS[(i + j) % 8] + f" {j}" for j in range(5)] for i, n in enumerate(names)}
    rng = np.random.default_rng(1)
    expert, crowd = [], []
    for i, n in enumerate(names):
        for j in (1, 2, 3):
            other = names[(i + j) % 6]
            expert.append((f"{n}.jpg", f"{other}.jpg#{j}", rng.integers(1, 5, 3).tolist()))
            crowd.append((f"{n}.jpg", f"{other}.jpg#{j}", int(rng.integers(0, 4)), 3))
        expert.append((f"{n}.jpg", f"{n}.jpg#0", [4, 4, 4]))  # its own reference: dropped
        crowd.append((f"{n}.jpg", f"{n}.jpg#0", 3, 0))
    write_flickr8k(tmp_path / "flickr8k", captions, expert, crowd)
    return tmp_path / "flickr8k"


def test_flickr8k_expert_kendall_tau_c(world, tmp_path):
    root, ckpt, _, _ = world
    data_root = _flickr8k(tmp_path)
    images = tmp_path / "imgs"
    images.mkdir()
    for n in FLICKR_NAMES[:5]:  # the sixth image is missing: skipped and counted
        (images / f"{n}.jpg").write_bytes((root / "images" / f"{n}.jpg").read_bytes())
    proc = run_cli(*_args(tmp_path, ckpt, "dataset=flickr8k_expert", f"dataset.root={data_root}",
                          f"dataset.images={images}", "save_predictions=true"), check=True)
    assert "skipped 1 missing or unreadable image(s) and their 3 caption(s)" in proc.stdout
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"sample_id": str})
    assert len(pred) == 15
    assert not any(c.startswith(s) for c, s in zip(pred.candidate_id, pred.sample_id))
    ratings = [json.loads(t) for t in pred.target]
    res = _results(tmp_path)
    for scorer in ("clip_s_w2.5", "refclip_s_w2.5", "length"):
        x = np.repeat(pred[scorer].to_numpy(float), 3)
        y = np.concatenate(ratings)
        tau = kendalltau(x, y, variant="c").statistic
        assert res[f"{scorer}_kendall_tau_c"] == (pytest.approx(tau, abs=1e-4), 45)
    assert res["kendall_tau_c"] == res["clip_s_w2.5_kendall_tau_c"]  # primary scorer: clip_s
    assert res["skipped"] == (3, 18)  # caption pairs: 3 skipped + 15 scored


def test_flickr8k_cf_kendall_tau_b_with_refclip_primary(world, tmp_path):
    root, ckpt, images, ref = world
    data_root = _flickr8k(tmp_path)
    run_cli(*_args(tmp_path, ckpt, "dataset=flickr8k_cf", f"dataset.root={data_root}",
                   f"dataset.images={root / 'images'}", "save_predictions=true", "task.scorer=refclip_s"), check=True)
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"sample_id": str})
    assert len(pred) == 24  # own-reference candidates are kept for CF
    res = _results(tmp_path)
    y = [json.loads(t)[0] for t in pred.target]
    assert res["kendall_tau_b"] == (pytest.approx(kendalltau(pred["refclip_s_w2.5"], y, variant="b").statistic, abs=1e-4), 24)
    assert res["clip_s_w2.5_kendall_tau_b"][0] == pytest.approx(kendalltau(pred["clip_s_w2.5"], y, variant="b").statistic, abs=1e-4)
    # an own-reference candidate is scored against its other four captions only
    own = pred[pred.candidate_id == f"{FLICKR_NAMES[2]}.jpg#0"].iloc[0]
    caps = [CAPTIONS[(2 + j) % 8] + f" {j}" for j in range(5)]
    a, r = _expected(ref, images[FLICKR_NAMES[2]], caps[0], caps[1:])
    assert own["refclip_s_w2.5"] == pytest.approx(r, abs=1e-5)


def test_malformed_ratings_line_is_one_clear_error(world, tmp_path):
    root, ckpt, _, _ = world
    data_root = _flickr8k(tmp_path)
    path = data_root / "ExpertAnnotations.txt"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].rsplit("\t", 1)[0]  # a line with a rating missing
    path.write_text("\n".join(lines) + "\n")
    proc = run_cli(*_args(tmp_path, ckpt, "dataset=flickr8k_expert", f"dataset.root={data_root}",
                          f"dataset.images={root / 'images'}"))
    assert proc.returncode == 2
    assert "ExpertAnnotations.txt:5: malformed line" in proc.stderr and "Traceback" not in proc.stderr


def test_composite_kendall_tau_c(world, tmp_path):
    root, ckpt, _, _ = world
    names = FLICKR_NAMES[:3]
    refs = {f"{n}.jpg": [CAPTIONS[i], CAPTIONS[i + 1], CAPTIONS[i + 2]] for i, n in enumerate(names)}
    write_flickr8k(tmp_path / "f8k", refs)
    hits = [(f"http://x/{n}.jpg", [CAPTIONS[i], CAPTIONS[7 - i], CAPTIONS[5]], [5, 2, 1 + i]) for i, n in enumerate(names)]
    write_composite_csv(tmp_path / "comp" / "8k_correctness.csv", hits)
    run_cli(*_args(tmp_path, ckpt, "dataset=composite", f"dataset.root={tmp_path / 'comp'}", "dataset.subsets=[8k]",
                   f"dataset.images={root / 'images'}", f"dataset.flickr8k_captions={tmp_path / 'f8k' / 'Flickr8k.token.txt'}",
                   "save_predictions=true"), check=True)
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"sample_id": str})
    y = [json.loads(t)[0] for t in pred.target]
    assert y == [5, 2, 1, 5, 2, 2, 5, 2, 3]
    res = _results(tmp_path)
    assert res["kendall_tau_c"] == (pytest.approx(kendalltau(pred["clip_s_w2.5"], y, variant="c").statistic, abs=1e-4), 9)
    assert "refclip_s_w2.5_kendall_tau_c" in res


def test_pascal50s_accuracy_per_category(world, tmp_path):
    root, ckpt, images, ref = world
    cats = ["HC", "HI", "HM", "MM"]
    pairs = []
    for i in range(8):
        n_b = [40, 8, 30, 2, 44, 12, 26, 20][i]  # no ties: the majority is fixed
        pairs.append(CaptionPair(FLICKR_NAMES[i], CAPTIONS[i], CAPTIONS[(i + 3) % 8] + " today",
                                 [CAPTIONS[(i + j) % 8] + f" ref {j}" for j in range(48)],
                                 [1] * n_b + [0] * (48 - n_b), cats[i % 4]))
    write_pascal50s(tmp_path / "pascal", pairs)
    run_cli(*_args(tmp_path, ckpt, "dataset=pascal50s", f"dataset.root={tmp_path / 'pascal'}",
                   f"dataset.images={root / 'images'}", "dataset.draws=2", "dataset.references=48"), check=True)
    res = _results(tmp_path)
    correct = {c: [] for c in cats}
    correct_ref = {c: [] for c in cats}
    for p in pairs:  # with all 48 references drawn, every draw scores alike
        label = int(sum(p.winners) > 24)
        sa, sb = (_expected(ref, images[p.image_id], c, p.references) for c in (p.caption_a, p.caption_b))
        correct[p.category].append(0.5 if sa[0] == sb[0] else float(int(sb[0] > sa[0]) == label))
        correct_ref[p.category].append(0.5 if sa[1] == sb[1] else float(int(sb[1] > sa[1]) == label))
    for c in cats:
        assert res[f"clip_s_w2.5_accuracy_{c}"] == (pytest.approx(np.mean(correct[c])), 2)
        assert res[f"accuracy_{c}"] == res[f"clip_s_w2.5_accuracy_{c}"]
        assert res[f"refclip_s_w2.5_accuracy_{c}"][0] == pytest.approx(np.mean(correct_ref[c]))
    assert res["accuracy_mean"][0] == pytest.approx(np.mean([np.mean(correct[c]) for c in cats]))
    assert "length_accuracy_mean" in res
    from clipbench.metrics.uncertainty import OUTCOMES_FILE, load_outcomes

    _, outcomes = load_outcomes(tmp_path / "run" / OUTCOMES_FILE)  # per-pair credit behind every accuracy
    frame = pd.read_csv(tmp_path / "results.csv").set_index("metric")
    for c in cats + ["mean"]:
        assert outcomes[f"accuracy_{c}"].point() == pytest.approx(frame.at[f"accuracy_{c}", "value"])
        assert frame.at[f"accuracy_{c}", "ci_low"] <= frame.at[f"accuracy_{c}", "value"] <= frame.at[f"accuracy_{c}", "ci_high"]
    assert outcomes["accuracy_mean"].statistic == "mean_of_groups" and len(outcomes["accuracy_mean"]) == 8


def test_model_preprocess_is_clipscore_preprocessing(world):
    """CLIP-S images go through Resize bicubic + CenterCrop + CLIP normalisation at the model's size."""
    from clipbench.models import load_model

    root, ckpt, images, ref = world
    model = load_model("clipbench-test-vit", str(ckpt), "fp32", "cpu")
    from PIL import Image

    im = Image.open(images[FLICKR_NAMES[0]]).convert("RGB")
    assert torch.allclose(model.preprocess(im), ref.transform(im), atol=1e-6)


def test_correlation_experiment_sweeps_four_protocols_by_three_scorers():
    from conftest import ROOT
    from helpers import compose_config
    from omegaconf import OmegaConf

    from clipbench.data import DATASETS

    params = OmegaConf.load(ROOT / "experiments" / "clipscore_correlation.yaml").hydra.sweeper.params
    datasets, scorers = params["dataset"].split(","), params["task.scorer"].split(",")
    assert datasets == ["flickr8k_expert", "flickr8k_cf", "composite", "pascal50s"]
    assert scorers == ["clip_s", "refclip_s", "length"]
    for ds in datasets:
        cfg = compose_config(["experiment=clipscore_correlation", f"dataset={ds}", f"task.scorer={scorers[1]}"])
        assert (cfg.task.name, cfg.dataset.name, cfg.task.scorer) == ("clipscore", ds, "refclip_s")
        assert (cfg.model.arch, cfg.model.pretrained) == ("ViT-B-32", "openai")
        assert "clipscore" in DATASETS.get(ds).tasks

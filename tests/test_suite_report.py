"""open_clip's published tables as reported rows, and the per-experiment models x datasets table."""

import csv
import json
from pathlib import Path

import pytest

from clipbench.paths import reported_dir
from clipbench.report.build import build_report, compare, load_results
from clipbench.report.reported import load_reported
from clipbench.results.csv_store import RESULT_COLUMNS, append_rows

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_clip"
CATALOGUE = json.dumps({"catalogue": "clip_benchmark", "name": "x"})


def _row(**kw):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(run_id="r", timestamp="2026-01-01T00:00:00+00:00", split="test", n=100, seed=0, device="cpu",
               task="zeroshot", method="clip", method_params="{}", experiment="model_variants", dataset_params=CATALOGUE)
    row.update(kw)
    return row


def test_open_clip_rows_keyed_by_arch_tag_dataset_metric():
    frame = load_reported([reported_dir() / "open_clip.csv"])
    keys = frame[["model", "setting", "dataset", "metric"]]
    assert not keys.duplicated().any()
    imagenet = frame[(frame.model == "ViT-B-32") & (frame.setting == "pretrained=laion2b_s34b_b79k") & (frame.dataset == "imagenet1k")]
    coco = frame[(frame.model == "ViT-B-32") & (frame.setting == "pretrained=laion2b_s34b_b79k")
                 & (frame.dataset == "mscoco_captions") & (frame.metric == "text_retrieval_recall@5")]
    assert len(imagenet) == 1 and len(coco) == 1
    if SOURCE.is_dir():  # the published files, read independently
        with open(SOURCE / "openclip_classification_results.csv", newline="") as f:
            src = next(r for r in csv.DictReader(f) if r["name"] == "ViT-B-32" and r["pretrained"] == "laion2b_s34b_b79k")
        with open(SOURCE / "openclip_retrieval_results.csv", newline="") as f:
            ret = next(r for r in csv.DictReader(f) if r["name"] == "ViT-B-32" and r["pretrained"] == "laion2b_s34b_b79k")
        assert imagenet.value.item() == pytest.approx(float(src["ImageNet 1k"]))
        assert coco.value.item() == pytest.approx(float(ret["MSCOCO text retr. R@5"]))
        assert len(frame[frame.table == "openclip_classification_results"]) >= 35 * 120


def _tags_with(reported, arch: str, datasets: tuple[str, ...]) -> list[str]:
    """The pretrained tags of ``arch`` that open_clip's table reports on every one of ``datasets``."""
    per_setting = reported[reported.model == arch].groupby("setting").dataset.agg(set)
    return sorted(s.split("=", 1)[1] for s, have in per_setting.items() if s.startswith("pretrained=") and set(datasets) <= have)


def test_comparison_matches_the_run_s_own_tag_only(tmp_path):
    reported = load_reported([reported_dir() / "open_clip.csv"])
    tags = _tags_with(reported, "ViT-B-32", ("imagenet1k",))
    assert len(tags) >= 2  # other tags of the same arch exist, and must not match
    path = tmp_path / "results.csv"
    append_rows(path, [_row(config_hash="a", dataset="imagenet1k", model_arch="ViT-B-32", model_pretrained=tags[-1],
                            metric="top1", value=0.66)])
    table = compare(load_results(path), load_reported())
    expected = reported[(reported.model == "ViT-B-32") & (reported.setting == f"pretrained={tags[-1]}")
                        & (reported.dataset == "imagenet1k")].value.item()
    assert len(table) == 1 and table.reported.item() == pytest.approx(expected)


def test_variants_table_has_models_as_rows_an_average_and_the_plot(tmp_path):
    path = tmp_path / "results.csv"
    reported = load_reported([reported_dir() / "open_clip.csv"])
    rows, expected = [], {}
    two_tags = _tags_with(reported, "ViT-B-32", ("imagenet1k", "imagenetv2", "imagenet-r"))[:2]
    for tag, shift in zip(two_tags, (0.01, -0.02)):
        for i, name in enumerate(("imagenet1k", "imagenetv2", "imagenet-r")):
            ref = reported[(reported.model == "ViT-B-32") & (reported.setting == f"pretrained={tag}") & (reported.dataset == name)]
            value = ref.value.item() + shift
            expected[(tag, name)] = (value, ref.value.item())
            rows.append(_row(config_hash=f"{tag}{i}", dataset=f"wds/{name}", model_arch="ViT-B-32", model_pretrained=tag,
                             metric="top1", value=value))
            rows.append(_row(config_hash=f"{tag}{i}", dataset=f"wds/{name}", model_arch="ViT-B-32", model_pretrained=tag,
                             metric="top5", value=0.99))
    append_rows(path, rows)
    index = build_report(path, tmp_path / "out").read_text()
    exp = tmp_path / "out" / "model_variants"
    assert "model_variants/variants.md" in index and (exp / "reproduced_vs_reported.png").stat().st_size > 0
    lines = (exp / "variants.md").read_text().splitlines()
    header = [c.strip() for c in lines[4].strip("|").split("|")]
    assert header[:2] == ["model", "method"] and "average" in header
    body = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[6:]}
    assert set(body) == {f"ViT-B-32 {tag}" for tag in two_tags}
    for tag in two_tags:
        cells = dict(zip(header, body[f"ViT-B-32 {tag}"]))
        value, ref = expected[(tag, "imagenetv2")]
        assert cells["imagenetv2"] == f"{value * 100:.2f} ({ref * 100:.2f})"
        mean = sum(expected[(tag, n)][0] for n in ("imagenet1k", "imagenetv2", "imagenet-r")) / 3 * 100
        assert float(cells["average"]) == pytest.approx(mean, abs=0.006)
        ref_mean = sum(expected[(tag, n)][1] for n in ("imagenet1k", "imagenetv2", "imagenet-r")) / 3 * 100
        assert float(cells["reported average"]) == pytest.approx(ref_mean, abs=0.006)

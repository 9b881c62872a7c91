"""Caption loaders on the real Flickr8k judgment files and on generated files in each release's format."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import numpy as np
import pytest

from clipbench.data.clipscore_corpora import (
    FLICKR8K_CF,
    FLICKR8K_EXPERT,
    FLICKR8K_TOKENS,
    CaptionPair,
    CompositeConfig,
    Pascal50sConfig,
    build_composite,
    build_pascal50s,
    read_candidates_json,
    read_caption_tokens,
    read_composite_csv,
    read_flickr8k_judgments,
    read_pascal50s,
    read_references_json,
)
from clipbench.data.retrieval_galleries import HFCaptionsConfig, read_hf_captions, read_karpathy
from clipbench.errors import DataError
from clipbench.toy.writers.clipscore_corpora import (
    write_caption_files,
    write_coco_captions,
    write_composite_csv,
    write_flickr8k,
    write_pascal50s,
)
from clipbench.toy.writers.retrieval_galleries import write_karpathy

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
if not REAL.is_dir():
    REAL = Path("/work/shared/data/flickr8k")
# The real judgment files sit in shared/ beside the checkout; CI always has them, so there they must exist.
REAL_MISSING = not (REAL / FLICKR8K_EXPERT).is_file()
if REAL_MISSING and os.environ.get("CI"):
    raise RuntimeError(f"the real Flickr8k judgment files are missing from {REAL}")
needs_real = pytest.mark.skipif(REAL_MISSING, reason="real Flickr8k files not present (outside CI only)")


@pytest.fixture(scope="module")
def real_tokens():
    if not (REAL / FLICKR8K_TOKENS).is_file():
        pytest.skip("real Flickr8k files not present")
    return read_caption_tokens(REAL / FLICKR8K_TOKENS)


@needs_real
def test_real_flickr8k_expert_counts(real_tokens):
    items = read_flickr8k_judgments(REAL / FLICKR8K_EXPERT, real_tokens, "expert")
    assert len(items) == 5664
    assert sum(len(it.ratings) for it in items) == 16992
    assert all(it.candidate_id.split("#")[0] != f"{it.image_id}.jpg" for it in items)
    assert all(len(it.references) == 5 and len(it.ratings) == 3 for it in items)
    assert len({it.image_id for it in items}) == 1000
    first = items[0]  # first line of the release
    assert (first.image_id, first.candidate_id, first.ratings) == ("1056338697_4f7d7ce270", "2549968784_39bfbe44f9.jpg#2", [1, 1, 1])
    assert first.candidate == real_tokens["2549968784_39bfbe44f9.jpg"][2]


@needs_real
def test_real_flickr8k_registered_datasets(tmp_path):
    from clipbench.data import DATASETS

    expert = DATASETS.get("flickr8k_expert")
    cfg = expert.config(root=str(REAL), images=str(tmp_path))
    cfg.validate()
    data = expert.build(cfg)
    assert (data.protocol, data.tau_variant, len(data.items)) == ("kendall", "c", 5664)
    assert sum(len(it.ratings) for it in data.items) == 16992
    assert len(data.images) == 1000 and data.images["1056338697_4f7d7ce270"] == tmp_path / "1056338697_4f7d7ce270.jpg"
    cf = DATASETS.get("flickr8k_cf")
    data = cf.build(cf.config(root=str(REAL), images=str(tmp_path)))
    assert (data.tau_variant, len(data.items), sum(len(it.ratings) for it in data.items)) == ("b", 47830, 47830)


def official_token_index(root: Path) -> tuple[dict, dict]:
    """download.py's reading of Flickr8k.token.txt: image stem -> captions, caption id -> caption."""
    import collections

    flickr8k_image2ann = collections.defaultdict(list)
    captionid2caption = {}
    with open(root / FLICKR8K_TOKENS) as f:
        for line in f:
            image, ann = line.strip().split("\t")
            flickr8k_image2ann[image.split("#")[0]].append(ann)
            captionid2caption[image] = ann
    return {k.split(".")[0]: v for k, v in flickr8k_image2ann.items()}, captionid2caption


def official_crowdflower_index(root: Path) -> dict:
    """jmhessel/clipscore flickr8k_example/download.py, the CrowdFlower part, step by step."""
    flickr8k_image2ann, captionid2caption = official_token_index(root)
    all_8k_crowdflower = []
    with open(root / FLICKR8K_CF) as f:
        for line in f:
            image_id, caption_id, yes_prec, n_yes, n_no = line.strip().split("\t")
            all_8k_crowdflower.append({"image_id": image_id, "caption": captionid2caption[caption_id], "yes_prec": float(yes_prec)})
    all_index = {}
    for d in all_8k_crowdflower:
        if d["image_id"] not in all_index:
            all_index[d["image_id"]] = {"human_judgement": [], "ground_truth": list(flickr8k_image2ann[d["image_id"].split(".")[0]])}
        if d["caption"] in all_index[d["image_id"]]["ground_truth"]:
            all_index[d["image_id"]]["ground_truth"].remove(d["caption"])
        all_index[d["image_id"]]["human_judgement"].append({"caption": d["caption"], "rating": d["yes_prec"]})
    return all_index


def official_expert_judgments(root: Path) -> list[tuple]:
    """download.py, the Expert part: a candidate whose text is one of the image's references is skipped."""
    flickr8k_image2ann, captionid2caption = official_token_index(root)
    out = []
    with open(root / FLICKR8K_EXPERT) as f:
        for line in f:
            image_id, caption_id, ex1, ex2, ex3 = line.strip().split("\t")
            caption = captionid2caption[caption_id]
            if caption in flickr8k_image2ann[image_id.split(".")[0]]:
                continue
            refs = flickr8k_image2ann[image_id.split(".")[0]]
            out += [(image_id.split(".")[0], caption, float(e), refs) for e in (ex1, ex2, ex3)]
    return out


def assert_expert_matches_the_official_judgments(root: Path):
    items = read_flickr8k_judgments(root / FLICKR8K_EXPERT, read_caption_tokens(root / FLICKR8K_TOKENS), "expert")
    assert [(it.image_id, it.candidate, r, it.references) for it in items for r in it.ratings] == official_expert_judgments(root)


@needs_real
def test_real_flickr8k_expert_matches_the_official_protocol():
    assert_expert_matches_the_official_judgments(REAL)


def test_expert_skips_a_candidate_by_its_text(tmp_path):
    captions = {"1_a.jpg": ["a cat", "a dog"], "2_b.jpg": ["a dog", "a car"]}
    write_flickr8k(tmp_path, captions, expert=[("1_a.jpg", "2_b.jpg#0", [1, 2, 1]), ("1_a.jpg", "2_b.jpg#1", [3, 3, 4])])
    assert_expert_matches_the_official_judgments(tmp_path)
    assert [it.candidate for it in read_flickr8k_judgments(tmp_path / FLICKR8K_EXPERT, read_caption_tokens(tmp_path / FLICKR8K_TOKENS), "expert")] == ["a car"]


def assert_crowdflower_matches_the_official_index(root: Path):
    items = read_flickr8k_judgments(root / FLICKR8K_CF, read_caption_tokens(root / FLICKR8K_TOKENS), "crowdflower")
    official = [(image, j["caption"], j["rating"], v["ground_truth"]) for image, v in official_crowdflower_index(root).items()
                for j in v["human_judgement"]]
    ours = sorted((f"{it.image_id}.jpg", it.candidate, it.ratings[0], it.references) for it in items)
    assert ours == sorted(official)
    return items


@needs_real
def test_real_flickr8k_cf_references_match_the_official_protocol():
    items = assert_crowdflower_matches_the_official_index(REAL)
    assert len(items) == 47830 and all(len(it.ratings) == 1 and 0 <= it.ratings[0] <= 1 for it in items)
    assert items[0].ratings == [1.0]
    per_image = {it.image_id: len(it.references) for it in items}
    assert sorted(collections.Counter(per_image.values()).items()) == [(3, 2), (4, 719), (5, 279)]


def test_crowdflower_references_are_the_images_shared_reduced_list(tmp_path):
    # image 1 rates its own caption #1, a caption of image 2 whose text equals its own #3 (both removed from
    # every one of its judgments, the duplicate "a dog" once), and an unrelated caption
    captions = {"1_a.jpg": ["a cat", "a dog", "a dog", "a bird", "a fish"], "2_b.jpg": ["a bird", "a car", "a bus", "a van", "a man"]}
    rows = [("1_a.jpg", "2_b.jpg#1", 1, 2), ("1_a.jpg", "1_a.jpg#1", 3, 0), ("1_a.jpg", "2_b.jpg#0", 0, 3), ("2_b.jpg", "1_a.jpg#4", 1, 1)]
    write_flickr8k(tmp_path, captions, crowdflower=rows)
    items = assert_crowdflower_matches_the_official_index(tmp_path)
    assert [it.references for it in items[:3]] == [["a cat", "a dog", "a fish"]] * 3
    assert items[3].references == captions["2_b.jpg"]


def test_malformed_rating_line_names_file_and_line(tmp_path):
    write_flickr8k(tmp_path, {"1_a.jpg": ["a cat", "a dog"], "2_b.jpg": ["a car", "a bus"]},
                   expert=[("1_a.jpg", "2_b.jpg#0", [1, 2, 1]), ("2_b.jpg", "1_a.jpg#1", [3, 3, 4])])
    tokens = read_caption_tokens(tmp_path / FLICKR8K_TOKENS)
    assert len(read_flickr8k_judgments(tmp_path / FLICKR8K_EXPERT, tokens, "expert")) == 2
    path = tmp_path / FLICKR8K_EXPERT
    path.write_text(path.read_text() + "2_b.jpg\t1_a.jpg#0\t3\tx\t4\n")
    with pytest.raises(DataError, match=rf"{FLICKR8K_EXPERT}:3: expert rating 'x'"):
        read_flickr8k_judgments(path, tokens, "expert")
    path.write_text("1_a.jpg 2_b.jpg#0 1 1 1\n")
    with pytest.raises(DataError, match=rf"{FLICKR8K_EXPERT}:1: malformed line"):
        read_flickr8k_judgments(path, tokens, "expert")
    path.write_text("1_a.jpg\t9_z.jpg#0\t1\t1\t1\n")
    with pytest.raises(DataError, match="9_z.jpg#0"):
        read_flickr8k_judgments(path, tokens, "expert")


def test_caption_json_inputs_and_bad_captions(tmp_path):
    cands, refs = write_caption_files(tmp_path, {"img1": "a cat", "img2": "a dog"}, {"img1": ["x"], "img2": ["y", "z"]})
    assert read_candidates_json(cands) == {"img1": "a cat", "img2": "a dog"}
    assert read_references_json(refs)["img2"] == ["y", "z"]
    cands.write_text(json.dumps({"img1": "a cat", "img7": "  "}))
    assert read_candidates_json(cands)["img7"] == "  "  # read; task=clipscore skips and counts it
    cands.write_text(json.dumps({"img3": 5}))
    with pytest.raises(DataError, match="img3"):
        read_candidates_json(cands)


def test_composite_release_format_round_trip(tmp_path):
    hits8k = [("http://host/flickr8k/100_aa.jpg", ["A dog runs .", "a cat sleeps", "two men"], [4, 1, 2])]
    hits30k = [("http://host/f30k/555.jpg", ["a red bus", "a bus", "A bird", "a train"], [5, 3, 1, 2])]
    write_composite_csv(tmp_path / "8k_correctness.csv", hits8k)
    write_composite_csv(tmp_path / "30k_correctness.csv", hits30k)
    rows = read_composite_csv(tmp_path / "8k_correctness.csv")
    assert rows == [("100_aa.jpg", ["A dog runs .", "a cat sleeps", "two men"], [4.0, 1.0, 2.0], 2)]
    # references: the rated ground-truth caption ("A dog runs .") leaves its image's references
    write_flickr8k(tmp_path / "f8k", {"100_aa.jpg": ["A dog runs.", "a brown dog", "dog on grass"]})
    images = tmp_path / "images"
    images.mkdir()
    cfg = CompositeConfig(root=str(tmp_path), images=str(images), subsets=["8k", "30k"],
                          flickr8k_captions=str(tmp_path / "f8k" / FLICKR8K_TOKENS))
    data = build_composite(cfg)
    assert len(data.items) == 7
    assert data.tau_variant == "c"
    dog = data.items[0]
    assert dog.candidate == "A dog runs ." and dog.ratings == [4.0]
    assert dog.references == ["a brown dog", "dog on grass"]
    assert data.items[1].references == ["A dog runs.", "a brown dog", "dog on grass"]
    assert data.items[3].references == []  # no flickr30k captions given
    assert data.images["555"] == images / "555.jpg"


def test_composite_bad_rating_names_line(tmp_path):
    path = write_composite_csv(tmp_path / "8k_correctness.csv", [("http://h/1.jpg", ["a", "b", "c"], [1, 2, 3])] * 2)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(";1;2;3;", ";1;two;3;")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"8k_correctness.csv:3: Answer.Q2Answer 'two'"):
        read_composite_csv(path)


def test_coco_captions_json(tmp_path):
    from clipbench.data.clipscore_corpora import read_coco_captions

    path = write_coco_captions(tmp_path / "captions_val2014.json", {"COCO_val2014_000000000042.jpg": ["a", "b"]})
    assert read_coco_captions(path) == {"COCO_val2014_000000000042": ["a", "b"]}


def _pairs(n: int) -> list[CaptionPair]:
    cats = ["HC", "HI", "HM", "MM"]
    out = []
    for i in range(n):
        winners = [1] * (30 if i % 2 else 10) + [0] * (18 if i % 2 else 38)
        out.append(CaptionPair(f"2008_{i:06d}", f"caption a {i}", f"caption b {i}",
                               [f"ref {i}-{j}" for j in range(48)], winners, cats[i % 4]))
    return out


def test_pascal50s_mat_round_trip(tmp_path):
    from scipy.io import loadmat

    pairs = _pairs(4)
    write_pascal50s(tmp_path / "pyCIDErConsensus", pairs)
    raw = loadmat(str(tmp_path / "pyCIDErConsensus" / "consensus_pascal.mat"))["triplets"]
    assert raw.shape == (1, 4 * 48)  # the release's 1 x (48 * pairs) struct array
    assert raw[0, 0][0][0][0][0] == "ref 0-0"  # field values are 1x1 cells holding the string
    back = read_pascal50s(tmp_path)  # finds the pyCIDErConsensus/ subfolder
    assert [p.category for p in back] == ["HC", "HI", "HM", "MM"]
    assert back[1].winners == pairs[1].winners and sum(back[1].winners) == 30
    assert back[2].references[5] == "ref 2-5"
    assert (back[3].image_id, back[3].caption_a, back[3].caption_b) == ("2008_000003", "caption a 3", "caption b 3")
    images = tmp_path / "img"
    images.mkdir()
    data = build_pascal50s(Pascal50sConfig(root=str(tmp_path), images=str(images)))
    assert data.protocol == "pairwise" and data.images["2008_000000"] == images / "2008_000000.jpg"


def test_pascal50s_inconsistent_files_error(tmp_path):
    from scipy.io import loadmat, savemat

    write_pascal50s(tmp_path, _pairs(2))
    trip = loadmat(str(tmp_path / "consensus_pascal.mat"))["triplets"][:, :50]
    savemat(tmp_path / "consensus_pascal.mat", {"triplets": trip})
    with pytest.raises(DataError, match="48 triplets per pair"):
        read_pascal50s(tmp_path)


def test_karpathy_split_and_subset(tmp_path):
    items = [(f"{i}.jpg", "test" if i < 3 else "train", [f"cap {i} a", f"cap {i} b"]) for i in range(5)]
    path = write_karpathy(tmp_path / "dataset_coco.json", "coco", items, filepath="val2014")
    data = read_karpathy(path, "test", tmp_path / "coco")
    assert len(data) == 3 and data.captions[:3] == ["cap 0 a", "cap 0 b", "cap 1 a"]
    assert data.text_to_image == [0, 0, 1, 1, 2, 2]
    assert data._images[2] == tmp_path / "coco" / "val2014" / "2.jpg"
    sub = data.subset(2)
    assert len(sub) == 2 and sub.text_to_image == [0, 0, 1, 1] and sub.key != data.key
    with pytest.raises(DataError, match="no images in split 'val'"):
        read_karpathy(path, "val", tmp_path)


def test_hf_caption_dataset_from_disk(tmp_path):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
    ds = datasets.Dataset.from_dict({"image": ims, "caption": [["a", "b"], ["c"], ["d", "e"]]})
    ds = ds.cast_column("image", datasets.Image())
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "hf"))
    data = read_hf_captions(HFCaptionsConfig(path=str(tmp_path / "hf")))
    assert data.captions == ["a", "b", "c", "d", "e"] and data.text_to_image == [0, 0, 1, 2, 2]
    assert data.image(1).size == (8, 8)


"""The toy CLIP's training recipe: which captions count as true of which images, the loss, and a short run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from helpers import load_script

from clipbench.toy import world as tw

train = load_script("train_toy_clip")
MIX = {"single": 3, "scene": 3, "size": 4, "list": 2, "depth": 2}


def test_every_caption_is_true_of_its_own_image_and_counts_match():
    rgb, depth, texts, pos = train.make_batch(seed=0, step=5, mix=MIX, size=32)
    n_rgb = MIX["single"] + MIX["scene"] + MIX["size"] + MIX["list"]
    assert rgb.shape == (n_rgb, 32, 32, 3) and depth.shape == (MIX["depth"], 3, 32, 32)
    assert pos.shape == (len(texts), len(texts)) == (n_rgb + MIX["depth"],) * 2
    assert bool(pos.diagonal().all())


def test_the_shrunk_target_is_a_negative_for_the_big_caption():
    rng = np.random.default_rng(3)
    for _ in range(20):
        (im_big, text_big, facts_big, claim_big), (im_small, text_small, facts_small, claim_small) = train.size_pair_items(rng)
        assert " big " in text_big and " small " in text_small and im_big.size == im_small.size
        assert text_big.split(" big ")[1] == text_small.split(" small ")[1]  # the same object
        pos = train.positives([facts_big, facts_small], [claim_big, claim_small])
        assert bool(pos.diagonal().all()) and not pos[1, 0]  # the shrunk scene has no big target
        # the same background: the images differ only around the target
        a, b = np.asarray(im_big, np.int16), np.asarray(im_small, np.int16)
        assert 0 < (np.abs(a - b).max(axis=2) > 0).mean() < 0.25


def test_scene_facts_by_hand():
    left = tw.ToyObject("red", "circle", [0, 40, 20, 20], radius=10.0)
    right = tw.ToyObject("blue", "star", [70, 30, 30, 30], radius=15.5)
    facts = train.object_bits([left, right], (100, 100))
    expected = train.bit(left.label) | train.bit(right.label)
    expected |= train.word_bit(left.label, "left") | train.word_bit(right.label, "right")
    expected |= train.word_bit(right.label, "big") | train.word_bit(left.label, "bottom")
    expected |= train.word_bit(right.label, "top")
    assert facts == expected  # the red circle (radius 10) is neither big nor small


def test_multi_positive_loss_is_clip_loss_when_captions_are_distinct():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    logits = 10.0 * img @ txt.t()
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    got = train.multi_positive_clip_loss(img, txt, 10.0, torch.eye(6, dtype=torch.bool))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    pos = torch.eye(6, dtype=torch.bool)
    pos[0, 1] = True  # caption 1 is also true of image 0
    log_i, log_t = F.log_softmax(logits, 1), F.log_softmax(logits.t(), 1)
    per_image = [-(log_i[0, 0] + log_i[0, 1]) / 2] + [-log_i[i, i] for i in range(1, 6)]
    per_caption = [-log_t[0, 0], -(log_t[1, 0] + log_t[1, 1]) / 2] + [-log_t[i, i] for i in range(2, 6)]
    by_hand = (sum(per_image) / 6 + sum(per_caption) / 6) / 2
    assert train.multi_positive_clip_loss(img, txt, 10.0, pos).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_a_zero_learning_rate_run_round_trips_the_shipped_weights(tmp_path):
    from safetensors import safe_open

    from clipbench.models.factory import load_model

    shipped = ROOT / "clipbench" / "assets" / "toyclip.safetensors"
    out = tmp_path / "toy.safetensors"
    args = ["--init", str(shipped), "--steps", "1", "--lr", "0", "--eval-every", "0", "--threads", "1",
            "--workers", "0", "--mix", "single=2,scene=2,size=2,list=2,depth=2", "--out", str(out),
            "--state", str(tmp_path / "state.pt")]
    assert train.main(args) == 0
    a = load_model("toyclip", str(shipped), reuse=False).model.state_dict()
    b = load_model("toyclip", str(out), reuse=False).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert '"steps_done": 1' in meta["training"] and "initialised_from" in meta["training"]

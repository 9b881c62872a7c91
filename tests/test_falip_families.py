"""FALIP's attention bias on every ViT family: timm towers inside open_clip (MAP head without CLS, CLS +
register tokens, EVA rotary blocks), CoCa's attentional pooler, and the refusal of conv towers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipbench.config.methods import FalipConfig
from clipbench.errors import ConfigError
from clipbench.methods import METHODS
from clipbench.models import load_model
from clipbench.models.attention import attention_tower, cls_attention
from tests.tiny_towers import save_tiny_hf_clip  # also registers the tiny timm towers

FAMILIES = ["clipbench-test-map", "clipbench-test-reg", "clipbench-test-eva", "clipbench-test-coca", "hf"]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_tiny_hf_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


CLS_FAMILIES = [f for f in FAMILIES if f != "clipbench-test-map"]  # the MAP tower pools with a probe, not a CLS token


def _load(name, hf_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "hf":
            return load_model(hf_folder, None, source="hf")
        return load_model(name, None)


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request, hf_folder):
    return _load(request.param, hf_folder)


@pytest.fixture(scope="module", params=CLS_FAMILIES)
def loaded_with_cls(request, hf_folder):
    return _load(request.param, hf_folder)


def family(loaded) -> str:
    return "hf" if attention_tower(loaded.model).kind == "hf" else loaded.arch


def build(loaded, **overrides):
    cfg = FalipConfig(**overrides)
    cfg.validate()
    return METHODS.get("falip").build(cfg, loaded)


def scenes(n=3, per=4, seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3), dtype=np.uint8))
              for _ in range(n)]
    regions = []
    for im in images:
        boxes = []
        for _ in range(per):
            x0, y0 = rng.uniform(0, im.width * 0.6), rng.uniform(0, im.height * 0.6)
            boxes.append([(x0, y0, x0 + rng.uniform(12, im.width - x0), y0 + rng.uniform(12, im.height - y0))])
        regions.append(boxes)
    return images, regions


def layer_options(loaded, rows):
    if rows == "cls" and not attention_tower(loaded.model).has_cls:
        return [{"rows": rows}, {"rows": rows, "heads": [0]}]  # the pooling probe
    return [{"rows": rows, **o} for o in ({"layers": [1, 2]}, {"layers": [0], "heads": [1]}, {"layers": [-1]})]


def test_tower_layout_comes_from_the_model(loaded):
    tower = attention_tower(loaded.model)
    expected = {  # (prefix tokens, CLS?, probe heads)
        "clipbench-test-map": (0, False, 2), "clipbench-test-reg": (3, True, None),
        "clipbench-test-eva": (1, True, None), "clipbench-test-coca": (1, True, None), "hf": (1, True, None),
    }[family(loaded)]
    assert (tower.prefix, tower.has_cls, tower.probe_heads) == expected
    assert (tower.depth, tower.num_heads, tower.tokens) == (3, 2, expected[0] + 16)
    assert (loaded.geometry.image_size, loaded.geometry.patch_size, loaded.geometry.grid_size) == (32, 8, 4)
    assert tower.rows_supported()  # the fast path computes only the CLS rows where it can
    assert tower.cls_pooled() == (family(loaded) in ("clipbench-test-reg", "clipbench-test-eva", "hf"))


@pytest.mark.parametrize("rows", ["cls", "all"])
def test_alpha_zero_is_the_plain_forward(loaded, rows):
    images, regions = scenes()
    for overrides in layer_options(loaded, rows):
        method = build(loaded, alpha=0.0, **overrides)
        got = torch.cat(method.encode_regions(images, regions))
        plain = loaded.encode_image(torch.stack([method.transform(im) for im, r in zip(images, regions) for _ in r]))
        assert torch.allclose(got, plain, atol=1e-6), overrides


@pytest.mark.parametrize("rows", ["cls", "all", "diagonal"])
def test_fast_path_equals_per_box_path(loaded, rows):
    images, regions = scenes(seed=1)
    for overrides in layer_options(loaded, rows):
        fast = torch.cat(build(loaded, alpha=3.0, fast=True, **overrides).encode_regions(images, regions))
        slow = torch.cat(build(loaded, alpha=3.0, fast=False, **overrides).encode_regions(images, regions))
        assert torch.allclose(fast, slow, atol=1e-5), overrides
        texts = torch.randn(5, fast.shape[1], generator=torch.Generator().manual_seed(0))
        assert torch.equal((fast @ texts.T).argmax(1), (slow @ texts.T).argmax(1))
        if rows == "diagonal" and overrides["layers"] == [-1]:
            continue  # patch rows of the last block never reach a CLS-pooled feature
        plain = build(loaded, alpha=0.0, **overrides).encode_regions(images, regions)
        assert not torch.allclose(fast, torch.cat(plain), atol=1e-4)  # the bias does something


def test_queries_keys_values_of_some_rows_are_those_of_all_rows(loaded):
    """``Tower.qkv`` on a run of rows (``start``) and a run of q/k/v (``want``): the matching slices of the
    full projection (the fast path projects the CLS row per region and the other rows once per image)."""
    tower = attention_tower(loaded.model)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        x, ctx = tower.embed(images)
        for i in range(tower.depth):
            full = dict(zip("qkv", tower.qkv(i, x, ctx), strict=True))
            for start, stop in ((0, 1), (1, tower.tokens), (0, tower.tokens)):
                for want in ("q", "k", "v", "qk", "kv", "qkv"):
                    got = tower.qkv(i, x[:, start:stop], ctx, start=start, want=want)
                    assert len(got) == len(want)
                    for c, t in zip(want, got, strict=True):
                        assert torch.allclose(t, full[c][:, :, start:stop], atol=1e-6), (i, start, want, c)
            x = tower.block(i, x, ctx)
        with pytest.raises(ValueError, match="run of 'qkv'"):
            tower.qkv(0, x, ctx, want="qv")
        if family(loaded) == "clipbench-test-eva":  # rotary embeddings are laid out for every patch row at once
            with pytest.raises(ValueError, match="every patch row"):
                tower.qkv(0, x[:, 2:], ctx, start=2)


def recorded_blocks(loaded):
    """Forward hooks on every block of the tower: its attn_mask keyword and its output tokens."""
    tower = attention_tower(loaded.model)
    records, handles = [], []
    for i, block in enumerate(tower.blocks):
        def hook(module, args, kwargs, out, i=i):
            mask = args[1] if tower.kind == "hf" else kwargs.get("attn_mask")
            records.append((i, mask, (out if tower.kind != "open_clip" or tower.batch_first else out.transpose(0, 1)).clone()))
        handles.append(block.register_forward_hook(hook, with_kwargs=True))
    return records, handles


def test_bias_on_one_patch_reaches_only_its_block_and_rows(loaded_with_cls):
    loaded = loaded_with_cls
    tower = attention_tower(loaded.model)
    assert tower.has_cls
    method = build(loaded, alpha=1.0, rows="cls", layers=[-1], fast=False)
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    weights = torch.zeros(1, 4, 4)
    weights[0, 2, 1] = 2.5  # patch (row 2, column 1) -> token prefix + 2*4 + 1
    outputs = {}
    for name, w in (("plain", torch.zeros_like(weights)), ("biased", weights)):
        records, handles = recorded_blocks(loaded)
        try:
            method.encode_with_weights(image, w)
        finally:
            for h in handles:
                h.remove()
        outputs[name] = records
    for (i, mask, plain_out), (_, _, biased_out) in zip(outputs["plain"], outputs["biased"]):
        if i < 2:
            assert mask is None and torch.equal(plain_out, biased_out)
    i, mask, biased_out = outputs["biased"][2]
    mask = mask.reshape(1, tower.num_heads, tower.tokens, tower.tokens)
    token = tower.prefix + 2 * 4 + 1
    assert torch.equal(torch.nonzero(mask[0, 0]), torch.tensor([[0, token]]))
    assert torch.allclose(mask[0, :, 0, token], torch.full((tower.num_heads,), 2.5))
    plain_out = outputs["plain"][2][2]
    assert torch.equal(plain_out[:, 1:], biased_out[:, 1:])  # only the CLS query saw the bias in the last block
    assert not torch.allclose(plain_out[:, 0], biased_out[:, 0])


def test_masked_block_matches_a_hand_written_timm_attention():
    """The registers tower's last block with the bias, against timm's Attention written out by hand."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model("clipbench-test-reg", None)
    tower = attention_tower(loaded.model)
    block = tower.blocks[2]
    x = torch.randn(2, tower.tokens, 32, generator=torch.Generator().manual_seed(4))
    bias = torch.zeros(2, 2, tower.tokens, tower.tokens)
    bias[:, :, 0, 5:9] = 1.7
    with torch.no_grad():
        got = tower.block(2, x, None, bias)
        a = block.attn
        qkv = a.qkv(block.norm1(x)).reshape(2, tower.tokens, 3, 2, 16).permute(2, 0, 3, 1, 4)
        q, k, v = a.q_norm(qkv[0]), a.k_norm(qkv[1]), qkv[2]
        attn = ((q @ k.transpose(-2, -1)) / 4.0 + bias).softmax(-1)
        y = x + block.ls1(a.proj((attn @ v).transpose(1, 2).reshape(2, tower.tokens, 32)))
        want = y + block.ls2(block.mlp(block.norm2(y)))
    assert torch.allclose(got, want, atol=1e-5)


def test_probe_bias_on_one_patch():
    """SigLIP-style MAP head: rows=cls biases the probe's attention, the blocks are untouched."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model("clipbench-test-map", None)
    tower = attention_tower(loaded.model)
    pool = tower.trunk.attn_pool
    seen = []
    handle = pool.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs.get("attn_mask")), with_kwargs=True)
    method = build(loaded, alpha=1.0, heads=[1])
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    weights = torch.zeros(1, 4, 4)
    weights[0, 1, 3] = 2.0
    records, handles = recorded_blocks(loaded)
    try:
        method.encode_with_weights(image, weights)
    finally:
        handle.remove()
        for h in handles:
            h.remove()
    assert all(mask is None for _, mask, _ in records)
    mask = seen[-1]
    assert mask.shape == (1, 2, 1, 16)
    assert torch.equal(torch.nonzero(mask[0]), torch.tensor([[1, 0, 1 * 4 + 3]]))  # head 1 only, patch (1, 3)
    # the probe by hand: softmax(q k^T * scale + bias) v through timm's AttentionPoolLatent weights
    with torch.no_grad():
        x = tower.trunk.norm(tower.trunk.blocks(tower.trunk.patch_embed(image) + tower.trunk.pos_embed))
        q = pool.q(pool.latent).reshape(1, 1, 2, 16).transpose(1, 2)
        kv = pool.kv(x).reshape(1, 16, 2, 2, 16).permute(2, 0, 3, 1, 4)
        out = ((q @ kv[0].transpose(-2, -1)) * 16**-0.5 + mask).softmax(-1) @ kv[1]
        out = pool.proj(out.transpose(1, 2).reshape(1, 1, 32))
        out = (out + pool.mlp(pool.norm(out)))[:, 0]
        want = F.normalize(loaded.model.visual.head(tower.trunk.head(tower.trunk.fc_norm(out))), dim=-1)
    assert torch.allclose(method.encode_with_weights(image, weights), want, atol=1e-5)


def test_map_tower_keys_without_meaning_are_config_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model("clipbench-test-map", None)
    with pytest.raises(ConfigError, match="method.layers.*no CLS token"):
        build(loaded, layers=[-1])
    with pytest.raises(ConfigError, match="method.heads.*2 heads"):
        build(loaded, heads=[5])
    assert build(loaded, rows="all", layers=[-1]).layers == (2,)


def test_cls_attention_on_every_family(loaded):
    maps = cls_attention(loaded, torch.randn(2, 3, 32, 32))
    tower = attention_tower(loaded.model)
    rows = tower.depth if tower.has_cls else 1
    assert maps.shape[:3] == (2, rows, 2) and torch.allclose(maps.sum(-1), torch.ones(2, rows, 2), atol=1e-5)


def test_hf_features_are_clipmodels_own(hf_folder):
    """model.source=hf: the checkpoint's processor and CLIPModel.get_image_features / get_text_features."""
    from transformers import AutoProcessor, CLIPModel

    loaded = load_model(hf_folder, None, source="hf")
    reference = CLIPModel.from_pretrained(hf_folder).eval()
    processor = AutoProcessor.from_pretrained(hf_folder)
    images, _ = scenes(n=2, per=1)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.stack([loaded.preprocess(im) for im in images]), pixels)
    with torch.no_grad():
        out = reference.get_image_features(pixel_values=pixels)
        want = out if isinstance(out, torch.Tensor) else out.pooler_output
        ids = processor.tokenizer(["a red cube", "two dogs"], padding="max_length", max_length=24, return_tensors="pt")
        text = reference.get_text_features(input_ids=ids["input_ids"])
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
    assert torch.allclose(loaded.encode_image(pixels, normalize=False), want, atol=1e-6)
    assert torch.allclose(loaded.encode_text(["a red cube", "two dogs"], normalize=False), text, atol=1e-6)
    falip = build(loaded, layers=[-2, -1]).encode_with_weights(pixels, torch.zeros(2, 4, 4))
    assert torch.allclose(falip, F.normalize(want, dim=-1), atol=1e-6)
    assert loaded.logit_scale == pytest.approx(float(reference.logit_scale.exp()))


def test_hf_source_config_errors(hf_folder, tmp_path):
    with pytest.raises(ConfigError, match="model.pretrained.*source=hf"):
        load_model(hf_folder, "openai", source="hf")
    with pytest.raises(ConfigError, match="model.arch.*not a folder"):
        load_model(str(tmp_path / "missing"), None, source="hf")
    with pytest.raises(ConfigError, match="model.source"):
        load_model(hf_folder, None, source="timm")


@pytest.mark.parametrize("arch", ["RN50", "clipbench-test-convnext"])
def test_conv_towers_are_refused_in_one_line(arch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model(arch, None)
    with pytest.raises(ConfigError, match="FALIP and head analysis need attention blocks") as info:
        build(loaded)
    assert "\n" not in str(info.value)


def test_hf_source_runs_tasks_from_the_cli(tmp_path, hf_folder, cifar_root, toy_root):
    from tests.conftest import run_cli

    common = ["model.source=hf", f"model.arch={hf_folder}", "model.pretrained=null", "device=cpu", "num_workers=0",
              f"results_csv={tmp_path / 'results.csv'}", f"cache_dir={tmp_path / 'cache'}", "progress=false",
              f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli(*common, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=8", check=True)
    run_cli(*common, "task=rec", "dataset=refcoco", f"dataset.root={toy_root}/refcoco", f"dataset.images={toy_root}/images",
            "method=falip", "method.layers=[-1]", "limit=4", check=True)
    import pandas as pd

    frame = pd.read_csv(tmp_path / "results.csv")
    assert set(frame.task) == {"zeroshot", "rec"} and set(frame.model_arch) == {hf_folder}
    assert (frame[frame.metric.isin(["top1", "accuracy"])].value.between(0, 1)).all()

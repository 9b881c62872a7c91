"""FALIP: official region weights and patch mapping, the attention-bias injection, and the exact fast path."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from clipbench.config.methods import FalipConfig
from clipbench.errors import ConfigError
from clipbench.methods import METHODS
from clipbench.methods.foveal_bias import (
    PatchGrid,
    box_patch_weights,
    input_box,
    patch_index,
    region_patch_weights,
    region_weights,
)
from clipbench.models import load_model
from clipbench.models.attention import (
    bias_from_patch_weights,
    cls_attention,
    encode_with_attention_bias,
    head_scale_matrix,
    resolve_layers,
)
from tests.conftest import TINY_ARCH

B16 = PatchGrid(224, 16, 14)


@pytest.fixture(scope="module")
def tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(TINY_ARCH, None)


def build(loaded, **overrides):
    cfg = FalipConfig(**overrides)
    cfg.validate()
    return METHODS.get("falip").build(cfg, loaded)


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(int(rng.integers(40, 120)), int(rng.integers(40, 120))) for _ in range(n)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def random_regions(images, per_image, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for im, k in zip(images, per_image):
        regs = []
        for _ in range(k):
            x0, y0 = rng.uniform(0, im.width * 0.6), rng.uniform(0, im.height * 0.6)
            regs.append([(x0, y0, x0 + rng.uniform(10, im.width - x0), y0 + rng.uniform(10, im.height - y0))])
        out.append(regs)
    return out


# ------------------------------------------------------------------ official weights and patch mapping


def test_region_weights_match_hand_computed_official_values():
    centre_row = region_weights(9, 5, alpha=0.2)[4]
    assert centre_row.tolist() == pytest.approx([0.16, 0.19, 0.20, 0.19, 0.16], abs=0.005)
    assert region_weights(1, 1, 0.2).item() == pytest.approx(0.2097, abs=1e-4)
    assert region_weights(1, 2, 0.2).tolist()[0] == pytest.approx([0.1974, 0.1974], abs=1e-4)
    assert region_weights(9, 5, 0.2).dtype == torch.float32
    corners = region_weights(9, 5, 0.2)[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max().item() < 1e-3  # ~alpha * 1e-6 / (max - min)


def test_other_shapes():
    assert torch.equal(region_weights(3, 4, 0.5, shape="uniform"), torch.full((3, 4), 0.5))
    ellipse = region_weights(5, 5, 1.0, shape="ellipse")
    assert ellipse[2].tolist() == [1, 1, 1, 1, 1] and ellipse[0, 0] == 0 and ellipse[0, 2] == 1


def test_patch_index_official_formula():
    assert [patch_index(v, 16) for v in (0, 1, 16, 16.5, 32, 223, 224)] == [0, 0, 0, 1, 1, 13, 13]


def official_falip_mask(box, width: int, height: int, v: float = 0.2) -> torch.Tensor:
    """pumpkin805/FALIP executor.py for ViT-B/16: the box clamped to the image, transform_box2token_base,
    generate_gaussian_mask_region and the ``mask[0, j[0]:j[1]] = gauss[index]`` loop, step by step."""
    box = (max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height))
    size = 224
    scale0, scale1 = size / width, size / height
    x0, y0 = min(box[0] * scale0, size), min(box[1] * scale1, size)
    x1, y1 = min(box[2] * scale0, size), min(box[3] * scale1, size)
    start = max(math.ceil(x0 / 16), 1) - 1 + (max(math.ceil(y0 / 16), 1) - 1) * 14 + 1
    end = max(math.ceil(x1 / 16), 1) + (max(math.ceil(y0 / 16), 1) - 1) * 14 + 1
    h = (max(math.ceil(y1 / 16), 1) - 1) - (max(math.ceil(y0 / 16), 1) - 1)
    list_se = [(start, end)]
    for i in range(h):
        list_se.append((list_se[i][0] + 14, list_se[i][1] + 14))
    shape, (cy, cx) = (h + 1, end - start), (h / 2, (end - start - 1) / 2)
    gauss = np.zeros(shape, dtype=np.float32)
    for x in range(shape[1]):
        for y in range(shape[0]):
            gauss[y, x] = np.exp(-0.5 * (np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / 100) ** 2)
    gauss = torch.from_numpy((gauss - gauss.min() + 0.000001) / (gauss.max() + 0.000001 - gauss.min()) * v)
    mask = torch.zeros(197, 197)
    for index, j in enumerate(list_se):
        mask[0, j[0] : j[1]] = gauss[index]
    return mask


OFFICIAL_CASES = [
    ((224, 224), (20, 40, 70, 60)),  # the worked example: tokens 30..33 and 44..47
    ((224, 224), (40, 50, 47, 180)),  # within one patch column
    ((224, 224), (0, 0, 224, 224)),  # the whole image
    ((150, 120), (10.5, 7.25, 80.75, 119.9)),  # under 200 px, fractional
    ((150, 120), (140, 100, 150, 120)),  # touching the bottom-right border
    ((449, 448), (0, 0, 17.3, 448)),  # odd size, touching the left and both horizontal borders
    ((449, 448), (200.2, 200.4, 200.6, 200.9)),  # sub-pixel
    ((640, 480), (300, -5, 700, 250)),  # partly outside the image
    ((640, 480), (33, 71, 402, 333)),
]


@pytest.mark.parametrize("size, box", OFFICIAL_CASES)
def test_box_to_patches_matches_the_official_mask(size, box):
    weights = region_patch_weights([box], *size, B16, "square", 0.2)
    ours = bias_from_patch_weights(weights[None], "cls")[0]
    official = official_falip_mask(box, *size)
    assert torch.equal(ours != 0, official != 0)
    assert torch.allclose(ours, official, atol=1e-7, rtol=0)


def test_box_to_patches_writes_the_last_column():
    # the worked example of the official mapping: c0 = 1 .. c1 = 4 inclusive, r0 = 2 .. r1 = 3
    tokens = torch.nonzero(bias_from_patch_weights(box_patch_weights((20, 40, 70, 60), B16, 0.2)[None])[0, 0])
    assert tokens.flatten().tolist() == [30, 31, 32, 33, 44, 45, 46, 47]
    assert torch.count_nonzero(box_patch_weights((40, 50, 47, 180), B16, 0.2)[:, 2]) == 9  # one column: 9 rows


def test_square_and_center_crop_box_mapping():
    # 448 x 224 image: square squeezes x by 0.5; center_crop keeps scale 1 and crops 112 px from the left
    assert input_box((0, 0, 224, 224), 448, 224, 224, "square") == (0, 0, 112, 224)
    assert input_box((100, 20, 500, 300), 448, 224, 224, "square") == (50, 20, 224, 224)
    assert input_box((0, 0, 224, 224), 448, 224, 224, "center_crop") == (0, 0, 112, 224)
    assert input_box((0, 0, 100, 100), 448, 224, 224, "center_crop") is None
    # 100 x 50 image -> resized to 448 x 224 (scale 4.48) -> crop from x = 112
    assert input_box((50, 0, 75, 25), 100, 50, 224, "center_crop") == pytest.approx((112, 0, 224, 112))


@pytest.mark.parametrize("resize", ["square", "center_crop"])
def test_box_mapping_follows_the_pixels_through_the_preprocessing(tiny, resize):
    # a white box on black, through the model input transform: its bright pixels land on the mapped box
    box = (60, 30, 140, 90)
    image = Image.new("RGB", (200, 120))
    image.paste((255, 255, 255), tuple(int(v) for v in box))
    tensor = build(tiny, resize=resize, layers=[0]).transform(image)
    bright = torch.nonzero(tensor[0] > tensor[0].mean())
    ys, xs = bright[:, 0].float(), bright[:, 1].float()
    x0, y0, x1, y1 = input_box(box, 200, 120, 32, resize)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1


def test_region_union_takes_the_max():
    a, b = (0, 0, 100, 100), (50, 50, 224, 224)
    merged = region_patch_weights([a, b], 224, 224, B16, "square", 0.2)
    expected = torch.maximum(box_patch_weights(a, B16, 0.2), box_patch_weights(b, B16, 0.2))
    assert torch.equal(merged, expected) and merged.max() > 0


@pytest.mark.parametrize(
    "arch, size, grid, depth", [("ViT-B-32", 224, 7, 12), ("ViT-B-16", 224, 14, 12), ("ViT-L-14", 224, 16, 24),
                                ("ViT-L-14-336", 336, 24, 24)],
)
def test_geometry_comes_from_the_model(arch, size, grid, depth):
    import open_clip

    from clipbench.models.factory import vision_geometry

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(arch, pretrained=None, device="meta")
    patch_grid = PatchGrid.of(SimpleNamespace(geometry=vision_geometry(model), arch=arch))
    assert (patch_grid.image_size, patch_grid.grid_size) == (size, grid)
    assert resolve_layers([-4, -3, -2, -1], len(model.visual.transformer.resblocks)) == tuple(range(depth - 4, depth))
    box = box_patch_weights((0, 0, size, size), patch_grid, 0.2)
    assert box.shape == (grid, grid) and bias_from_patch_weights(box).shape == (1, grid * grid + 1, grid * grid + 1)


# ------------------------------------------------------------------ bias matrix


def test_bias_rows():
    weights = torch.zeros(2, 4, 4)
    weights[0, 1, 2] = 0.3  # token 1 + 1*4 + 2 = 7
    weights[1, 3, 3] = 0.5  # token 16
    cls = bias_from_patch_weights(weights, "cls")
    assert cls.shape == (2, 17, 17) and cls.dtype == torch.float32
    assert torch.count_nonzero(cls) == 2 and cls[0, 0, 7] == pytest.approx(0.3) and cls[1, 0, 16] == 0.5
    assert torch.isfinite(cls).all()
    full = bias_from_patch_weights(weights, "all")
    assert torch.count_nonzero(full[0]) == 17 and (full[0, :, 7] == pytest.approx(0.3))
    diag = bias_from_patch_weights(weights, "diagonal")
    assert torch.count_nonzero(diag) == 2 and diag[0, 7, 7] == pytest.approx(0.3) and diag[1, 16, 16] == 0.5


def test_heads_spec():
    layers = (8, 9, 10, 11)
    assert torch.equal(head_scale_matrix("all", layers, 12), torch.ones(4, 12))
    picked = head_scale_matrix([0, 5], layers, 12)
    assert picked.sum() == 8 and picked[:, 0].tolist() == [1, 1, 1, 1] and picked[:, 5].tolist() == [1, 1, 1, 1]
    per_layer = head_scale_matrix([[0], [1, 2], [], [-1]], layers, 12)
    assert per_layer.sum() == 4 and per_layer[1, 2] == 1 and per_layer[3, 11] == 1
    scale = head_scale_matrix({"scale": [[0.5, 2.0]]}, (1,), 2)
    assert scale.tolist() == [[0.5, 2.0]]
    for bad in ([[0], [1]], [12], {"scale": [[1.0] * 11] * 4}, "some"):
        with pytest.raises(ConfigError, match="method.heads"):
            head_scale_matrix(bad, layers, 12)


# ------------------------------------------------------------------ injection, against an independent forward


def manual_forward(visual, images, bias_per_layer: dict[int, torch.Tensor]) -> torch.Tensor:
    """The whole tower written out; block i adds bias_per_layer[i] (B, H, L, L) to QK^T/sqrt(d) before softmax."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(len(x), 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    for i, block in enumerate(visual.transformer.resblocks):
        attn = block.attn
        n, length, dim = x.shape
        heads, hd = attn.num_heads, dim // attn.num_heads
        qkv = block.ln_1(x) @ attn.in_proj_weight.T + attn.in_proj_bias
        q, k, v = (t.reshape(n, length, heads, hd).permute(0, 2, 1, 3) for t in qkv.split(dim, dim=-1))
        logits = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if i in bias_per_layer:
            logits = logits + bias_per_layer[i]
        out = (logits.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(n, length, dim)
        x = x + out @ attn.out_proj.weight.T + attn.out_proj.bias
        x = x + block.mlp(block.ln_2(x))
    return torch.nn.functional.normalize(visual.ln_post(x[:, 0]) @ visual.proj, dim=-1)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("rows", ["cls", "all"])
def test_bias_matches_manual_attention_in_the_chosen_block_only(tiny, fast, rows):
    visual = tiny.model.visual
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    bias = bias_from_patch_weights(torch.rand(3, 4, 4) * 3, rows)
    heads = visual.transformer.resblocks[0].attn.num_heads
    scale = torch.rand(1, heads) * 2
    got = encode_with_attention_bias(tiny, images, bias, [1], head_scale=scale, fast=fast)
    per_head = bias[:, None] * scale[0][None, :, None, None]
    with torch.no_grad():
        expected = manual_forward(visual, images, {1: per_head})
        everywhere = manual_forward(visual, images, {0: per_head, 1: per_head, 2: per_head})
        plain = manual_forward(visual, images, {})
    assert torch.allclose(got, expected, atol=1e-5)
    per_head_input = encode_with_attention_bias(tiny, images, per_head, [1], fast=fast)  # (B, H, L, L) bias
    assert torch.allclose(per_head_input, expected, atol=1e-5)
    assert (got - everywhere).abs().max() > 1e-3 and (got - plain).abs().max() > 1e-3
    assert torch.allclose(plain, tiny.encode_image(images), atol=1e-5)


def test_zero_bias_and_zero_alpha_give_plain_clip(tiny):
    images = random_images(3)
    for resize in ("square", "center_crop"):
        method = build(tiny, alpha=0.0, resize=resize, layers=[-2, -1])
        feats = method.encode_regions(images, [[[(0, 0, 20, 20)]]] * 3)
        plain = tiny.encode_image(torch.stack([method.transform(im) for im in images]))
        assert torch.allclose(torch.cat(feats), plain, atol=1e-5)
    zero_heads = build(tiny, alpha=0.5, heads={"scale": [[0.0, 0.0, 0.0]] * 2}, layers=[1, 2])
    full = build(tiny, alpha=0.5, layers=[1, 2])
    regions = [[[(0, 0, 30, 30)]]] * 3
    plain = tiny.encode_image(torch.stack([full.transform(im) for im in images]))
    assert torch.allclose(torch.cat(zero_heads.encode_regions(images, regions)), plain, atol=1e-5)
    assert (torch.cat(full.encode_regions(images, regions)) - plain).abs().max() > 1e-3


def test_square_preprocessing_is_an_uncropped_bicubic_resize(tiny):
    image = random_images(1, seed=3)[0]
    tensor = build(tiny, layers=[0]).transform(image)
    resized = np.asarray(image.resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    assert np.allclose(tensor.permute(1, 2, 0).numpy(), (resized - mean) / std, atol=1e-5)


# ------------------------------------------------------------------ exact fast path


def assert_fast_equals_per_box(loaded, images, regions, **overrides):
    fast = build(loaded, fast=True, **overrides)
    slow = build(loaded, fast=False, **overrides)
    text = torch.nn.functional.normalize(torch.randn(5, fast.model.model.visual.output_dim), dim=-1)
    a, b = fast.encode_regions(images, regions), slow.encode_regions(images, regions)
    assert [len(t) for t in a] == [len(r) for r in regions]
    for fa, fb in zip(a, b):
        if not len(fa):  # an image without regions
            assert fa.shape == (0, text.shape[1])
            continue
        scores_a, scores_b = loaded.logit_scale * fa @ text.T, loaded.logit_scale * fb @ text.T
        assert (scores_a - scores_b).abs().max() <= 1e-4
        assert torch.equal(scores_a.argmax(0), scores_b.argmax(0)) and torch.equal(scores_a.argmax(1), scores_b.argmax(1))
    plain = loaded.encode_image(torch.stack([fast.transform(im) for im in images]))
    assert max((f - plain[i]).abs().max().item() for i, f in enumerate(a) if len(f)) > 1e-4  # the bias acts


@pytest.mark.parametrize(
    "overrides",
    [{}, {"layers": [0]}, {"layers": [0, 2]}, {"rows": "all"}, {"rows": "diagonal", "layers": [1]},
     {"heads": [[0], [1, 2]], "layers": [-2, -1]}, {"resize": "center_crop", "shape": "ellipse"}],
)
def test_fast_path_equals_per_box_path_tiny(tiny, overrides):
    torch.manual_seed(0)
    images = random_images(4, seed=1)
    regions = random_regions(images, [3, 1, 0, 5], seed=2)
    regions[1].append([(1, 1, 30, 30), (20, 20, 60, 60)])  # a two-box region
    assert_fast_equals_per_box(tiny, images, regions, alpha=3.0, **{"layers": [1, 2], **overrides})


def test_fast_path_equals_per_box_path_vit_b16():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model("ViT-B-16", None)
    torch.manual_seed(0)
    images = random_images(3, seed=5)
    regions = random_regions(images, [4, 2, 3], seed=6)
    assert_fast_equals_per_box(loaded, images, regions, alpha=3.0)
    method = build(loaded)
    assert method.layers == (8, 9, 10, 11) and method.grid == PatchGrid(224, 16, 14)


def test_many_regions_are_chunked(tiny, monkeypatch):
    import clipbench.methods.falip as falip

    images = random_images(3, seed=8)
    regions = random_regions(images, [5, 4, 6], seed=9)
    whole = build(tiny, alpha=2.0, layers=[1, 2]).encode_regions(images, regions)
    monkeypatch.setattr(falip, "REGION_CHUNK", 4)
    chunked = build(tiny, alpha=2.0, layers=[1, 2]).encode_regions(images, regions)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(whole, chunked))


# ------------------------------------------------------------------ attention maps, configuration errors


def test_cls_attention_rows_are_the_softmax_of_the_first_block(tiny):
    torch.manual_seed(2)
    images = torch.randn(2, 3, 32, 32)
    maps = cls_attention(tiny, images)
    visual = tiny.model.visual
    assert maps.shape == (2, 3, 3, 17) and torch.allclose(maps.sum(-1), torch.ones(2, 3, 3), atol=1e-5)
    block = visual.transformer.resblocks[0]
    with torch.no_grad():
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        x = visual.ln_pre(torch.cat([visual.class_embedding.expand(2, 1, -1), x], 1) + visual.positional_embedding)
        q, k, _ = (block.ln_1(x) @ block.attn.in_proj_weight.T + block.attn.in_proj_bias).split(48, -1)
        q, k = (t.reshape(2, 17, 3, 16).permute(0, 2, 1, 3) for t in (q, k))
        expected = (q[:, :, :1] @ k.transpose(-1, -2) / 4).softmax(-1)[:, :, 0]
    assert torch.allclose(maps[:, 0], expected, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, key",
    [({"alpha": -0.1}, "method.alpha"), ({"sigma": 0.0}, "method.sigma"), ({"shape": "box"}, "method.shape"),
     ({"rows": "col"}, "method.rows"), ({"resize": "pad"}, "method.resize"), ({"layers": []}, "method.layers"),
     ({"heads": "half"}, "method.heads")],
)
def test_config_errors(overrides, key):
    with pytest.raises(ConfigError, match=key):
        FalipConfig(**overrides).validate()


def test_layers_out_of_range_fail_when_the_method_is_built(tiny):
    for layers in ([3], [-4], [0, 7]):
        with pytest.raises(ConfigError, match="method.layers.*3 blocks"):
            build(tiny, layers=layers)
    with pytest.raises(ConfigError, match="method.heads"):
        build(tiny, heads=[[0], [1]], layers=[0, 1, 2])

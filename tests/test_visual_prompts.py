"""Image-editing prompts: pixels and model inputs against transcriptions of the official code, and the batched path.

The ``official_*`` helpers below are step-by-step transcriptions of the authors' code (allenai/reclip and
pumpkin805/FALIP ``executor.py``; ylingfeng/FGVP ``executor.py``, ``fine_grained_visual_prompt.py``,
``transforms.py``, with segment_anything's resize) for one box, run on images under and over 200 px, an
odd size, boxes touching the border, fractional and sub-pixel boxes.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_ARCH
from PIL import Image, ImageDraw, ImageFilter
from torchvision import transforms
from torchvision.transforms.functional import resize as tv_resize
from torchvision.transforms.functional import to_pil_image

from clipbench.config import to_schema
from clipbench.errors import ConfigError
from clipbench.methods import METHODS
from clipbench.methods.visual_prompts import (
    blur_outside_boxes,
    crop_image,
    falip_line_width,
    fgvp_prompt,
    fgvp_resize,
    red_circle_falip,
    shade_boxes,
)

RED = (255, 0, 0)


def checkerboard(width: int, height: int, cell: int = 2) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    on = ((x // cell + y // cell) % 2).astype(np.uint8)
    pixels = np.stack([on * 200 + 20, on * 100 + 60, 255 - on * 200], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def px(image: Image.Image, x: int, y: int) -> tuple:
    return image.getpixel((x, y))


def test_crop_is_the_box_and_margin_is_clipped_to_the_image():
    image = checkerboard(40, 25)
    out = crop_image(image, (10, 10, 30, 20))
    assert out.size == (20, 10)
    assert np.array_equal(np.asarray(out), np.asarray(image)[10:20, 10:30])
    # margin 0.5: x grows by 10 each side -> 0..40, y by 5 -> 5..25 (clipped at the image's edges)
    assert crop_image(image, (10, 10, 30, 20), margin=0.5).size == (40, 20)
    assert crop_image(image, (2, 3, 12, 8), margin=0.5).size == (17, 10)  # x -3..17 -> 0..17, y 0.5..10.5 -> 0..10


def test_shade_tints_the_box_only():
    image = Image.new("RGB", (20, 10), (100, 100, 100))
    out = shade_boxes(image, [(5, 2, 15, 8)])
    # alpha compositing (240, 0, 30) at 127/255 over 100
    expected = tuple(round(c * 127 / 255 + 100 * (1 - 127 / 255)) for c in (240, 0, 30))
    assert all(abs(a - b) <= 1 for a, b in zip(px(out, 10, 5), expected))
    assert px(out, 0, 0) == (100, 100, 100) and px(out, 19, 9) == (100, 100, 100)


def build(name: str, model, **params):
    spec = METHODS.get(name)
    return spec.build(to_schema(spec.config, {"name": name, **params}, "method"), model)


@pytest.fixture(scope="module")
def tiny_model():
    from clipbench.models import load_model

    return load_model(TINY_ARCH, None, "fp32", "cpu")


def test_edit_methods_give_one_normalised_feature_per_region(tiny_model):
    image = checkerboard(64, 48)
    regions = [[[(2, 3, 30, 40)], [(20, 10, 60, 45)], [(1, 1, 10, 10), (40, 30, 60, 45)]]]
    for name in ("crop", "blur", "red_circle", "grayscale_circle", "blur_circle", "shade"):
        feats = build(name, tiny_model).encode_regions([image], regions)[0]
        assert feats.shape == (3, 32), name
        assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-5), name
        assert not torch.allclose(feats[0], feats[1]), name
    falip = build("red_circle", tiny_model, variant="falip").encode_regions([image], regions)[0]
    assert not torch.allclose(falip, build("red_circle", tiny_model).encode_regions([image], regions)[0])


def test_combine_sums_member_logits(tiny_model):
    image = checkerboard(64, 48)
    regions = [[[(2, 3, 30, 40)], [(20, 10, 60, 45)]]]
    combined = build("combine", tiny_model, members=["crop", "blur"], member_params={"crop": {"margin": 0.1}})
    feats = combined.encode_regions([image], regions)[0]
    text = tiny_model.encode_text(["a photo of a cat"])[0]
    square = official_square_preprocess(tiny_model)
    crop = torch.stack([tiny_model.encode_image(square(crop_image(image, r[0], 0.1)).unsqueeze(0))[0] for r in regions[0]])
    blur = torch.stack([tiny_model.encode_image(square(blur_outside_boxes(image, r)).unsqueeze(0))[0] for r in regions[0]])
    assert torch.allclose(feats @ text, crop @ text + blur @ text, atol=1e-5)


def test_shade_changes_the_text_and_combine_refuses_mixed_texts(tiny_model):
    shade = build("shade", tiny_model)
    assert shade.text("the man on the left", "a photo of {}") == "the man on the left is in red color."
    assert build("crop", tiny_model).text("dog", "a photo of {}") == "a photo of dog"
    with pytest.raises(ConfigError, match="method.members"):
        build("combine", tiny_model, members=["crop", "shade"])


@pytest.mark.parametrize(
    "name, params, key",
    [
        ("red_circle", {"variant": "thick"}, "method.variant"),
        ("crop", {"margin": -1}, "method.margin"),
        ("blur", {"multi_box": "some"}, "method.multi_box"),
        ("combine", {"members": ["nope"]}, "method.members"),
        ("shade", {"rgba": [1, 2, 3]}, "method.rgba"),
    ],
)
def test_bad_method_keys_are_config_errors(name, params, key):
    with pytest.raises(ConfigError) as err:
        to_schema(METHODS.get(name).config, {"name": name, **params}, "method")
    assert err.value.key == key


def test_sub_pixel_crop_keeps_one_pixel():
    image = checkerboard(10, 10)
    assert crop_image(image, (3.2, 3.2, 3.4, 3.4)).size == (1, 1)


# ------------------------------------------------------------------ official transcriptions


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def clamped(box, image):
    """The executors' box: ``max(left, 0), max(top, 0), min(right, W), min(bottom, H)``."""
    return (max(box[0], 0), max(box[1], 0), min(box[2], image.width), min(box[3], image.height))


def official_blur(image, box, std=100):
    image_i = image.copy()
    mask = Image.new("L", image_i.size, 0)
    draw = ImageDraw.Draw(mask)
    box = clamped(box, image_i)
    draw.rectangle([box[:2], box[2:]], fill=255)
    blurred = image_i.filter(ImageFilter.GaussianBlur(std))
    blurred.paste(image_i, mask=mask)
    return blurred


def official_falip_circle(image, box, std=100):
    image_i = image.copy()
    box = clamped(box, image_i)
    width = int(max(image_i.size) / 200)
    mask = Image.new("L", image_i.size, 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse([box[:2], box[2:]], outline="red", fill=255)
    blurred = image_i.filter(ImageFilter.GaussianBlur(std))
    blurred.paste(image_i, mask=mask)
    draw1 = ImageDraw.Draw(blurred)
    draw1.ellipse([box[:2], box[2:]], outline="red", width=width)
    return blurred


def official_square_preprocess(model):
    """``preprocess.transforms[0] = Resize((S, S), BICUBIC)`` on the model's own preprocessing."""
    preprocess = copy.deepcopy(model.preprocess)
    size = model.geometry.image_size
    preprocess.transforms[0] = transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC)
    return preprocess


MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(-1, 1, 1) * 255.0
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(-1, 1, 1) * 255.0


def official_fgvp(visual_prompt, image, box, model_size, clip_image_size=384, thickness=2, blur_std_dev=100):
    """FGVP with --clip_image_size 384 --clip_processing resize --sam_prompt none: (drawn array, model input)."""
    image = np.array(image)
    boxes = torch.Tensor([list(box)])
    # ResizeShortestSide(384).apply_image / apply_boxes_torch
    oldh, oldw = image.shape[:2]
    scale = clip_image_size * 1.0 / min(oldh, oldw)
    newh, neww = int(oldh * scale + 0.5), int(oldw * scale + 0.5)
    image = np.array(tv_resize(to_pil_image(image), (newh, neww)))
    coords = copy.deepcopy(boxes.reshape(-1, 2, 2)).to(torch.float)
    coords[..., 0] = coords[..., 0] * (neww / oldw)
    coords[..., 1] = coords[..., 1] * (newh / oldh)
    boxes = coords.reshape(-1, 4)
    # boxes_to_circles(boxes, *new_size)
    boxes[:, 0::2] = torch.clamp(boxes[:, 0::2], 0, neww - 1)
    boxes[:, 1::2] = torch.clamp(boxes[:, 1::2], 0, newh - 1)
    src_widths, src_heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ctr = torch.stack([boxes[:, 0] + 0.5 * src_widths, boxes[:, 1] + 0.5 * src_heights], dim=1)
    axes = torch.stack([src_widths, src_heights], dim=1) / 2
    res = image.copy()
    boxes_center, axes_length = ctr[0].numpy(), axes[0].numpy()
    centre, length = tuple(int(v) for v in boxes_center.astype(int)), tuple(int(v) for v in axes_length.astype(int))
    if visual_prompt == "circle":
        res = cv2.ellipse(res, centre, length, 0, 0, 360, color=(255, 0, 0), thickness=thickness)
    else:
        circle_mask = np.zeros(res.shape, dtype=np.uint8)
        circle_mask = cv2.ellipse(circle_mask, centre, length, 0, 0, 360, color=(255, 255, 255), thickness=-1)[:, :, 0]
        if visual_prompt == "grayscale_circle_mask":
            gray = cv2.cvtColor(res.copy(), cv2.COLOR_BGR2GRAY)[:, :, None].repeat(3, -1)
            res[circle_mask == 0] = gray[circle_mask == 0]
        else:
            res = Image.fromarray(res)
            overlay = res.copy().filter(ImageFilter.GaussianBlur(blur_std_dev))
            overlay.paste(res, mask=Image.fromarray(circle_mask))
            res = np.array(overlay)
    clip_inputs = torch.from_numpy(np.stack([res])).float().permute(0, 3, 1, 2)
    clip_inputs = (clip_inputs - MEAN) / STD
    clip_inputs = F.interpolate(clip_inputs, (clip_image_size, clip_image_size), mode="bilinear", align_corners=False)
    return res, F.interpolate(clip_inputs, (model_size, model_size), mode="bilinear", align_corners=False)


CASES = [
    ((150, 120), (10, 20, 90, 80)),  # under 200 px
    ((150, 120), (0, 0, 150, 120)),  # the whole image: every border
    ((150, 120), (100.4, 60.6, 150, 120)),  # fractional, touching the bottom-right border
    ((449, 448), (12.7, 0, 300.2, 211.5)),  # odd size, touching the top
    ((449, 448), (220.3, 230.1, 220.8, 230.6)),  # sub-pixel
    ((640, 480), (-10, 100, 700, 300)),  # over 200 px, beyond the left and right borders
]


@pytest.mark.parametrize("size, box", CASES)
def test_blur_matches_reclip(size, box):
    image = noise(*size)
    ours = blur_outside_boxes(image, [clamped(box, image)])
    assert np.array_equal(np.asarray(ours), np.asarray(official_blur(image, box)))


def test_blur_keeps_both_end_pixels():
    image = noise(150, 120)
    kept = np.all(np.asarray(blur_outside_boxes(image, [(20, 30, 100, 90)])) == np.asarray(image), axis=-1)
    assert kept[30:91, 20:101].all() and kept.sum() < 81 * 61 + 50  # 81 x 61 original pixels (plus chance equals)


@pytest.mark.parametrize("size, box", CASES)
def test_falip_red_circle_matches_falip(size, box):
    image = noise(*size, seed=1)
    ours = red_circle_falip(image, [clamped(box, image)])
    assert np.array_equal(np.asarray(ours), np.asarray(official_falip_circle(image, box)))


def test_falip_ring_width_under_200_px_and_the_minimum_option():
    assert [falip_line_width(*s) for s in ((150, 120), (199, 60), (200, 10), (449, 448), (1000, 300))] == [0, 0, 1, 2, 5]
    image = Image.new("RGB", (150, 120), (0, 200, 0))
    official = np.asarray(official_falip_circle(image, (20, 20, 130, 100)))
    assert not np.all(official == (255, 0, 0), axis=-1).any()  # no ring
    ringed = np.asarray(red_circle_falip(image, [(20, 20, 130, 100)], min_width=1))
    assert np.all(ringed == (255, 0, 0), axis=-1).any()


@pytest.mark.parametrize("size, box", CASES)
@pytest.mark.parametrize("name, visual_prompt", [
    ("red_circle", "circle"), ("grayscale_circle", "grayscale_circle_mask"), ("blur_circle", "blur_circle_mask"),
])
def test_fgvp_prompts_and_model_input_match_fgvp(tiny_model, size, box, name, visual_prompt):
    image = noise(*size, seed=2)
    method = build(name, tiny_model)
    drawn, official_input = official_fgvp(visual_prompt, image, box, tiny_model.geometry.image_size)
    ours = method.edited_images(image, [[box]])[0]
    assert np.array_equal(np.asarray(ours), drawn)
    inputs = method._model_inputs(image, [[box]])
    assert torch.allclose(inputs[0], official_input[0], atol=1e-5, rtol=0)


def test_fgvp_grey_is_bgr2gray_of_the_rgb_array_and_draws_no_ring():
    image = Image.new("RGB", (400, 400), (200, 30, 10))
    resized = fgvp_resize(image)
    grey = fgvp_prompt(resized, [(100, 100, 300, 300)], "grayscale")
    assert tuple(grey[0, 0]) == (43, 43, 43) and tuple(grey[192, 192]) == (200, 30, 10)
    assert not np.all(grey == (255, 0, 0), axis=-1).any()
    assert not np.all(fgvp_prompt(fgvp_resize(image, blur_radius=100), [(100, 100, 300, 300)], "blur") == (255, 0, 0), axis=-1).any()


def test_fgvp_at_the_model_input_size_is_a_named_option(tiny_model):
    image = noise(150, 120)
    native = build("red_circle", tiny_model, prompt_size=None).edited_images(image, [[(10, 20, 90, 80)]])[0]
    assert min(native.size) == tiny_model.geometry.image_size
    assert min(build("red_circle", tiny_model).edited_images(image, [[(10, 20, 90, 80)]])[0].size) == 384


@pytest.mark.parametrize("name, params", [("crop", {}), ("blur", {}), ("shade", {}), ("red_circle", {"variant": "falip"})])
def test_edited_images_go_through_the_official_square_input(tiny_model, name, params):
    image = noise(449, 448, seed=3)
    box = (12.7, 0, 300.2, 211.5)
    method = build(name, tiny_model, **params)
    edited = method.edited_images(image, [[box]])[0]
    square = official_square_preprocess(tiny_model)
    assert torch.allclose(method._model_inputs(image, [[box]])[0], square(edited), atol=1e-6, rtol=0)
    feats = method.encode_regions([image], [[[box]]])[0]
    assert torch.allclose(feats[0], tiny_model.encode_image(square(edited).unsqueeze(0))[0], atol=1e-5)
    crop = build(name, tiny_model, resize="center_crop", **params)
    assert torch.allclose(crop._model_inputs(image, [[box]])[0], tiny_model.preprocess(edited), atol=1e-6, rtol=0)


def test_clip_square_input_is_an_option(tiny_model):
    image = noise(449, 300)
    default = build("clip", tiny_model)
    assert default.region_free and torch.allclose(default.encode_regions([image], [[[]]])[0][0], tiny_model.encode_image(tiny_model.preprocess(image)[None])[0])
    square = build("clip", tiny_model, resize="square")
    expected = tiny_model.encode_image(official_square_preprocess(tiny_model)(image)[None])[0]
    assert not square.region_free and torch.allclose(square.encode_regions([image], [[[]]])[0][0], expected, atol=1e-5)


def official_crop(image, box):
    return image.copy().crop(list(clamped(box, image)))


def official_shade(image, box):
    tint = (240, 0, 30)
    image_i = image.copy().convert("RGBA")
    overlay = Image.new("RGBA", image_i.size, tint + (0,))
    draw = ImageDraw.Draw(overlay)
    box = clamped(box, image_i)
    draw.rectangle((tuple(box[:2]), tuple(box[2:])), fill=tint + (127,))
    return Image.alpha_composite(image_i, overlay).convert("RGB")


@pytest.mark.parametrize("size, box", CASES)
def test_crop_and_shade_match_reclip(size, box):
    image = noise(*size, seed=4)
    box = clamped(box, image)
    assert np.array_equal(np.asarray(shade_boxes(image, [box])), np.asarray(official_shade(image, box)))
    official = official_crop(image, box)
    if min(official.size) > 0:  # a sub-pixel box rounds to nothing in PIL; clipbench keeps one pixel
        assert np.array_equal(np.asarray(crop_image(image, box)), np.asarray(official))


def test_falip_input_is_the_official_square_preprocess(tiny_model):
    image = noise(449, 448, seed=5)
    falip = build("falip", tiny_model, layers=[0])
    assert torch.allclose(falip.transform(image), official_square_preprocess(tiny_model)(image), atol=1e-6, rtol=0)

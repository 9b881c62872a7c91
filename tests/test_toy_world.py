"""The procedural toy world (determinism, counts, geometry, wording) and the bundled toy CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT

from clipbench.errors import ConfigError
from clipbench.toy import world as tw

CHECKPOINT = ROOT / "clipbench" / "assets" / "toyclip.safetensors"


def _pixels(images):
    return np.stack([np.asarray(im) for im in images])


def _inside(box, image):
    x, y, w, h = box
    return w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= image.width + 1e-6 and y + h <= image.height + 1e-6


def test_classification_is_deterministic_and_covers_every_class():
    a = tw.classification_samples(60, seed=5, size=32)
    b = tw.classification_samples(60, seed=5, size=32)
    c = tw.classification_samples(60, seed=6, size=32)
    assert np.array_equal(_pixels(a.images), _pixels(b.images)) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(_pixels(a.images), _pixels(c.images))
    assert len(a.images) == 60 and a.images[0].size == (32, 32) and a.images[0].mode == "RGB"
    assert len(a.class_names) == len(tw.COLOURS) * len(tw.SHAPES) >= 30
    assert "red circle" in a.class_names and sorted(set(a.labels.tolist())) == list(range(30))


@pytest.mark.parametrize("hard", [False, True])
def test_rec_scenes_counts_boxes_and_determinism(hard):
    scenes = tw.rec_scenes(30, seed=1, size=(160, 120), hard=hard)
    again = tw.rec_scenes(30, seed=1, size=(160, 120), hard=hard)
    assert len(scenes) == 30
    assert np.array_equal(_pixels(s.image for s in scenes), _pixels(s.image for s in again))
    assert [r.sentences for s in scenes for r in s.refs] == [r.sentences for s in again for r in s.refs]
    for scene in scenes:
        assert scene.image.size == (160, 120) and 2 <= len(scene.objects) <= 5
        assert all(_inside(o.box, scene.image) for o in scene.objects)
        names = [o.name for o in scene.objects]
        assert len(set(names)) == len(names) - hard  # a hard scene repeats its target once, as a twin
        for a in scene.objects:  # objects do not overlap
            for b in scene.objects:
                if a is not b:
                    assert tw._apart(a.box, b.box)
        for ref in scene.refs:
            target = scene.objects[ref.target]
            assert all(target.name in s for s in ref.sentences)


def test_spatial_wording_is_true():
    scenes = tw.rec_scenes(80, seed=2) + tw.rec_scenes(40, seed=2, hard=True)
    used = 0
    for scene in scenes:
        for ref in scene.refs:
            cx, cy = scene.objects[ref.target].center
            others = [o.center for i, o in enumerate(scene.objects) if i != ref.target]
            for sentence, word in zip(ref.sentences, ref.spatial):
                if word is None:
                    assert not any(p in sentence for p in tw.SPATIAL_WORDS.values())
                    continue
                used += 1
                assert sentence.endswith(tw.SPATIAL_WORDS[word])
                check = {
                    "left": all(cx < ox for ox, _ in others),
                    "right": all(cx > ox for ox, _ in others),
                    "top": all(cy < oy for _, oy in others),
                    "bottom": all(cy > oy for _, oy in others),
                }
                assert check[word], (sentence, scene.objects)
    assert used > 20


def test_hard_scenes_have_a_twin_of_the_other_size_and_partial_distractors():
    kinds, sizes = set(), set()
    for scene in tw.rec_scenes(40, seed=3, hard=True):
        assert scene.hard and [r.target for r in scene.refs] == [0]
        target, twin = scene.objects[:2]
        ref = scene.refs[0]
        assert twin.name == target.name and ref.size in ("big", "small")
        assert all(f"{ref.size} {target.name}" in sentence for sentence in ref.sentences)
        side = min(scene.image.size)
        low, high = tw.SIZE_RADIUS[ref.size]
        assert low * side <= target.radius <= high * side  # drawn in its size's range
        other = "small" if ref.size == "big" else "big"
        assert tw.size_word(target, scene.image.size) == ref.size and tw.size_word(twin, scene.image.size) == other
        sizes.add(ref.size)
        for distractor in scene.objects[2:]:
            assert (distractor.colour == target.colour) != (distractor.shape == target.shape)
            kinds.add("colour" if distractor.colour == target.colour else "shape")
    assert kinds == {"colour", "shape"} and sizes == {"big", "small"}


def test_size_words_by_hand():
    side = 100  # big from radius 15 px, small up to 9.5 px
    assert tw.size_word(tw.ToyObject("red", "circle", [0, 0, 30, 30], radius=15.0), side) == "big"
    assert tw.size_word(tw.ToyObject("red", "circle", [0, 0, 19, 19], radius=9.5), (100, 140)) == "small"
    assert tw.size_word(tw.ToyObject("red", "circle", [0, 0, 24, 24], radius=12.0), side) is None
    assert tw.expression("orange", "star", "left", np.random.default_rng(0), "big").endswith("big orange star on the left")


def test_per_object_radius_ranges():
    rng = np.random.default_rng(0)
    placed = tw.place_scene(rng, (150, 110), tw.random_combos(rng, 3), [(0.15, 0.16), (0.07, 0.08), tw.SCENE_RADIUS])
    assert 0.15 * 110 <= placed[0].r <= 0.16 * 110 and 0.07 * 110 <= placed[1].r <= 0.08 * 110
    image, objects = tw.draw_scene(rng, (150, 110), placed)
    assert image.size == (150, 110) and [o.radius for o in objects] == [p.r for p in placed]


def test_region_samples_label_their_boxes():
    data = tw.region_samples(30, seed=4)
    assert len(data.samples) == 30 and data.class_names == tw.CLASS_NAMES
    for s in data.samples:
        labelled = s.objects[: len(s.boxes)]
        assert all(o.label == s.label for o in labelled)
        assert all(o.label != s.label for o in s.objects[len(s.boxes):])
        assert all(_inside(b, s.image) for b in s.boxes)


def test_point_clouds():
    a = tw.point_clouds(24, seed=7, num_points=512)
    b = tw.point_clouds(24, seed=7, num_points=512)
    assert a.points.shape == (24, 512, 3) and a.points.dtype == np.float32
    assert np.array_equal(a.points, b.points) and np.array_equal(a.labels, b.labels)
    assert a.class_names == list(tw.SOLIDS) and len(set(a.labels.tolist())) == 6
    radius = np.linalg.norm(a.points, axis=2).max(1)
    assert np.all(radius <= 1.0 + 1e-5) and np.all(radius >= 0.8)
    assert np.allclose(a.points.mean(1), 0, atol=1e-5)


def test_caption_judgments_ratings_follow_correctness():
    items = tw.caption_judgments(60, seed=8)
    assert len(items) == 60
    mean = {}
    for item in items:
        assert len(item.references) == 5
        kinds = [c.kind for c in item.candidates]
        assert kinds[0] == "right" and kinds[-1] == "unrelated" and "partly_wrong" in kinds
        for c in item.candidates:
            assert len(c.ratings) == 3 and all(1 <= r <= 4 for r in c.ratings)
            assert c.text not in item.references
            mean.setdefault(c.kind, []).extend(c.ratings)
    means = {k: np.mean(v) for k, v in mean.items()}
    assert means["right"] > means["partly_wrong"] > means["unrelated"]


def test_retrieval_gallery_has_five_distinct_captions_per_image():
    items = tw.retrieval_gallery(40, seed=9)
    assert len(items) == 40
    assert len({frozenset(o.name for o in it.objects) for it in items}) == 40
    for it in items:
        assert len(it.captions) == 5 and len(set(it.captions)) == 5
        assert all(all(o.name in c for o in it.objects) for c in it.captions)


@pytest.mark.parametrize(
    "call",
    [
        lambda: tw.classification_samples(4, 0, size=8),
        lambda: tw.rec_scenes(2, 0, size=(15, 64)),
        lambda: tw.rec_scenes(2, 0, size=40, max_objects=12),
        lambda: tw.rec_scenes(2, 0, min_objects=4, max_objects=3),
        lambda: tw.region_samples(2, 0, size=32, max_objects=40),
        lambda: tw.point_clouds(2, 0, num_points=4),
        lambda: tw.classification_samples(-1, 0),
    ],
)
def test_impossible_sizes_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()


# ---------------------------------------------------------------- the bundled model


@pytest.fixture(scope="module")
def toyclip():
    from clipbench.models.factory import load_model

    if not CHECKPOINT.is_file():
        pytest.fail(f"{CHECKPOINT} is missing; regenerate it with python scripts/train_toy_clip.py")
    return load_model("toyclip", str(CHECKPOINT), reuse=False)


def test_checkpoint_is_small_and_a_vit(toyclip):
    assert CHECKPOINT.stat().st_size <= 8 * 1024 * 1024
    assert toyclip.geometry.patch_size is not None and toyclip.geometry.num_tokens > 1


def test_toyclip_zero_shot_on_held_out_images(toyclip):
    data = tw.classification_samples(240, seed=424242, size=32)
    images = torch.stack([toyclip.preprocess(im) for im in data.images])
    feats = toyclip.encode_image(images)
    templates = ["a photo of a {}.", "a photo of the {}.", "a good photo of a {}."]
    classes = []
    for name in data.class_names:
        text = toyclip.encode_text([t.format(name) for t in templates]).mean(0)
        classes.append(text / text.norm())
    pred = (feats @ torch.stack(classes).t()).argmax(1).numpy()
    top1 = float((pred == data.labels).mean())
    assert top1 >= 0.85, top1


def test_toyclip_classifies_depth_maps_of_primitives(toyclip):
    from clipbench.data.projection import depth_to_images, project_pointclip_v1

    clouds = tw.point_clouds(72, seed=434343)
    maps = project_pointclip_v1(torch.from_numpy(clouds.points[:, :1024]))
    views = depth_to_images(maps, toyclip.geometry.image_size, flatten=True)
    feats = toyclip.encode_image(views).view(len(clouds.labels), maps.shape[1], -1)
    text = toyclip.encode_text([f"point cloud depth map of a {name}." for name in clouds.class_names])
    pred = torch.einsum("bvd,cd->bc", feats, text).argmax(1).numpy()
    top1 = float((pred == clouds.labels).mean())
    assert top1 >= 0.65, top1

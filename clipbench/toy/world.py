"""A seeded procedural world of flat-colour shapes on noisy backgrounds, and 3-D primitives.

Everything here is in memory (PIL images, numpy arrays, plain dataclasses); ``clipbench.toy.make_world``
writes it in the real on-disk dataset formats (``clipbench.toy.writers``). The same seed always gives the
same output.

Boxes are COCO-style ``[x, y, w, h]`` floats in pixels of the image they belong to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from clipbench.errors import ConfigError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 80, 235),
    "yellow": (245, 220, 30),
    "purple": (150, 50, 200),
    "orange": (250, 135, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
CLASS_NAMES: list[str] = [f"{c} {s}" for c in COLOURS for s in SHAPES]
SOLIDS: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid")
SPATIAL_WORDS: dict[str, str] = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}

MIN_IMAGE_SIZE = 16
SUPERSAMPLE = 3
# object radius as a fraction of the scene's shorter side
SCENE_RADIUS = (0.085, 0.15)
SINGLE_RADIUS = (0.25, 0.42)
GALLERY_RADIUS = (0.12, 0.19)
SCENE_GAP = 2.0  # pixels between object boxes
# what "big" and "small" mean: an object's radius as a fraction of the scene's shorter side
SIZE_RADIUS: dict[str, tuple[float, float]] = {"big": (0.15, 0.19), "small": (0.07, 0.095)}

# Caption templates used by the generators; the training script adds more.
EXPRESSION_TEMPLATES = ("{c} {s}", "the {c} {s}", "{a} {c} {s}")
LIST_TEMPLATES = (
    "{objs}.",
    "a picture of {objs}.",
    "a photo of {objs}.",
    "an image with {objs}.",
    "shapes: {objs}.",
)


def class_index(colour: str, shape: str) -> int:
    return list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)


@dataclass
class ToyObject:
    colour: str
    shape: str
    box: list[float]  # [x, y, w, h]
    radius: float = 0.0  # of the drawn outline, in pixels

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def label(self) -> int:
        return class_index(self.colour, self.shape)

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2, y + h / 2


@dataclass
class ClassificationSet:
    images: list[Image.Image]
    labels: np.ndarray  # int64 (n,)
    class_names: list[str]


@dataclass
class RefExpression:
    target: int  # index into the scene's objects
    sentences: list[str]
    spatial: list[str | None]  # per sentence: the spatial word used ("left", ...) or None
    size: str | None = None  # "big" or "small" in every sentence (hard scenes), or None


@dataclass
class RecScene:
    image: Image.Image
    objects: list[ToyObject]
    refs: list[RefExpression]
    hard: bool = False


@dataclass
class RegionSample:
    image: Image.Image
    boxes: list[list[float]]  # boxes of the labelled object(s)
    label: int
    objects: list[ToyObject]  # every object in the scene, labelled ones first


@dataclass
class RegionSet:
    samples: list[RegionSample]
    class_names: list[str]


@dataclass
class PointCloudSet:
    points: np.ndarray  # float32 (n, num_points, 3)
    labels: np.ndarray  # int64 (n,)
    class_names: list[str]


@dataclass
class Candidate:
    text: str
    kind: str  # "right", "partly_wrong" or "unrelated"
    ratings: list[int]  # three expert ratings, 1-4


@dataclass
class JudgedImage:
    image: Image.Image
    objects: list[ToyObject]
    references: list[str]
    candidates: list[Candidate]


@dataclass
class GalleryItem:
    image: Image.Image
    objects: list[ToyObject]
    captions: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- validation


def _size_pair(size, key: str = "size") -> tuple[int, int]:
    """``size`` as (width, height); an int means a square."""
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected an int or a (width, height) pair, got {size!r}") from None
    if min(w, h) < MIN_IMAGE_SIZE:
        raise ConfigError(key, f"images must be at least {MIN_IMAGE_SIZE} px on each side, got {w}x{h}")
    return w, h


def _check_count(n: int, key: str = "n") -> int:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(key, f"expected a non-negative integer, got {n!r}")
    return int(n)


def max_objects_that_fit(size) -> int:
    """A conservative bound on how many smallest-size objects a scene of ``size`` holds."""
    w, h = _size_pair(size)
    r = SCENE_RADIUS[0] * min(w, h)
    cell = 2 * r + SCENE_GAP
    return int((w // cell) * (h // cell) * 0.5)


def _check_objects(size, min_objects: int, max_objects: int) -> None:
    if min_objects < 1 or max_objects < min_objects:
        raise ConfigError(
            "max_objects", f"need 1 <= min_objects <= max_objects, got {min_objects} and {max_objects}"
        )
    if max_objects > len(CLASS_NAMES):
        raise ConfigError("max_objects", f"at most {len(CLASS_NAMES)} distinct objects exist, got {max_objects}")
    fit = max_objects_that_fit(size)
    if max_objects > fit:
        raise ConfigError("max_objects", f"{max_objects} objects do not fit in a {size} scene (at most {fit})")


# ---------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A low-saturation tinted base with a soft gradient and pixel noise (float32, HxWx3)."""
    grey = rng.uniform(70, 185)
    tint = rng.normal(0, 8, size=3)
    base = np.full((h, w, 3), grey, np.float32) + tint.astype(np.float32)
    gx, gy = rng.normal(0, 18, size=2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base += (gx * (xx / w - 0.5) + gy * (yy / h - 0.5))[..., None]
    return base


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> Image.Image:
    noise = rng.normal(0, rng.uniform(4, 14), size=canvas.shape).astype(np.float32)
    return Image.fromarray(np.clip(canvas + noise, 0, 255).astype(np.uint8))


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline polygon of ``shape`` (circles are many-sided polygons), rotated by ``angle`` radians."""
    if shape == "circle":
        pts = [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    elif shape == "square":
        s = 0.82
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        pts = [(math.cos(t), math.sin(t)) for t in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        pts = [(x, y + 0.15) for x, y in pts]
    elif shape == "star":
        pts = []
        for k in range(10):
            t = -math.pi / 2 + k * math.pi / 5
            rad = 1.0 if k % 2 == 0 else 0.42
            pts.append((rad * math.cos(t), rad * math.sin(t) + 0.08))
    elif shape == "cross":
        a, b = 0.3, 0.92
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    else:
        raise ConfigError("shape", f"unknown shape {shape!r}; known: {SHAPES}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _draw_objects(canvas: np.ndarray, items, rng: np.random.Generator) -> None:
    """Paint (colour, polygon) items onto ``canvas`` in place, anti-aliased by supersampling."""
    h, w = canvas.shape[:2]
    for colour, pts in items:
        mask = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
        ImageDraw.Draw(mask).polygon([(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in pts], fill=255)
        alpha = np.asarray(mask.resize((w, h), Image.BOX), np.float32)[..., None] / 255.0
        rgb = np.clip(np.array(COLOURS[colour], np.float32) + rng.normal(0, 10, size=3), 0, 255)
        canvas *= 1 - alpha
        canvas += alpha * rgb.astype(np.float32)


def _box_of(pts, w: int, h: int) -> list[float]:
    xs = [min(max(x, 0.0), w) for x, _ in pts]
    ys = [min(max(y, 0.0), h) for _, y in pts]
    x0, y0 = min(xs), min(ys)
    return [round(x0, 2), round(y0, 2), round(max(xs) - x0, 2), round(max(ys) - y0, 2)]


def _angle(rng: np.random.Generator, shape: str) -> float:
    return 0.0 if shape == "circle" else float(rng.uniform(-0.25, 0.25))


@dataclass
class Placement:
    """One object of a scene before drawing: centre, radius and rotation in pixels/radians."""

    colour: str
    shape: str
    cx: float
    cy: float
    r: float
    angle: float

    def points(self) -> list[tuple[float, float]]:
        return _shape_points(self.shape, self.cx, self.cy, self.r, self.angle)


def _place(rng, w: int, h: int, combos, radius_ranges, tries: int = 200):
    """Non-overlapping placements for ``combos`` (one radius range each); None if they do not fit this time."""
    placed, boxes = [], []
    side = min(w, h)
    for (colour, shape), radius_range in zip(combos, radius_ranges):
        for _ in range(tries):
            r = rng.uniform(*radius_range) * side
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            p = Placement(colour, shape, cx, cy, r, _angle(rng, shape))
            box = _box_of(p.points(), w, h)
            if all(_apart(box, other) for other in boxes):
                placed.append(p)
                boxes.append(box)
                break
        else:
            return None
    return placed


def _apart(a, b) -> bool:
    return (
        a[0] + a[2] + SCENE_GAP <= b[0]
        or b[0] + b[2] + SCENE_GAP <= a[0]
        or a[1] + a[3] + SCENE_GAP <= b[1]
        or b[1] + b[3] + SCENE_GAP <= a[1]
    )


def place_scene(rng: np.random.Generator, size, combos, radius_range=SCENE_RADIUS) -> list[Placement]:
    """Non-overlapping placements of the (colour, shape) ``combos`` in a scene of ``size``; ``radius_range``
    is one (low, high) fraction of the shorter side for all, or a list with one per object."""
    w, h = _size_pair(size)
    ranges = radius_range if isinstance(radius_range, list) else [radius_range] * len(combos)
    for _ in range(50):
        placed = _place(rng, w, h, combos, ranges)
        if placed is not None:
            return placed
    raise ConfigError("max_objects", f"could not place {len(combos)} objects in a {w}x{h} scene")


def draw_scene(rng: np.random.Generator, size, placed: list[Placement]):
    """The image of ``placed`` on a fresh noisy background, and its objects."""
    w, h = _size_pair(size)
    canvas = _background(rng, w, h)
    _draw_objects(canvas, [(p.colour, p.points()) for p in placed], rng)
    return _finish(canvas, rng), scene_objects(placed, size)


def scene_objects(placed: list[Placement], size) -> list[ToyObject]:
    w, h = _size_pair(size)
    return [ToyObject(p.colour, p.shape, _box_of(p.points(), w, h), p.r) for p in placed]


def render_scene(rng: np.random.Generator, size, combos, radius_range=SCENE_RADIUS):
    """An image with the (colour, shape) ``combos`` placed without overlap, and their objects."""
    return draw_scene(rng, size, place_scene(rng, size, combos, radius_range))


def render_single(rng: np.random.Generator, size, colour: str, shape: str, radius_range=SINGLE_RADIUS):
    """One object, roughly centred, filling a large part of the image."""
    w, h = _size_pair(size)
    side = min(w, h)
    r = rng.uniform(*radius_range) * side
    cx = w / 2 + rng.uniform(-1, 1) * max(w / 2 - r, 0) * 0.6
    cy = h / 2 + rng.uniform(-1, 1) * max(h / 2 - r, 0) * 0.6
    pts = _shape_points(shape, cx, cy, r, _angle(rng, shape))
    canvas = _background(rng, w, h)
    _draw_objects(canvas, [(colour, pts)], rng)
    return _finish(canvas, rng), ToyObject(colour, shape, _box_of(pts, w, h), r)


def random_combos(rng: np.random.Generator, k: int) -> list[tuple[str, str]]:
    """``k`` distinct (colour, shape) pairs."""
    picks = rng.choice(len(CLASS_NAMES), size=k, replace=False)
    return [tuple(CLASS_NAMES[i].split(" ")) for i in picks]


def hard_combos(rng: np.random.Generator, k: int) -> list[tuple[str, str]]:
    """A target first, then its twin (same colour and shape), then ``k-2`` distinct distractors that each
    share the target's colour or its shape (alternating, so both kinds appear once there are 4+ objects)."""
    colours, shapes = list(COLOURS), list(SHAPES)
    tc, ts = colours[rng.integers(len(colours))], shapes[rng.integers(len(shapes))]
    same_colour = [(tc, s) for s in shapes if s != ts]
    same_shape = [(c, ts) for c in colours if c != tc]
    rng.shuffle(same_colour)
    rng.shuffle(same_shape)
    out = [(tc, ts), (tc, ts)][:k]
    first = int(rng.integers(2))
    for i in range(k - 2):
        pools = (same_colour, same_shape) if (i + first) % 2 == 0 else (same_shape, same_colour)
        out.append((pools[0] or pools[1]).pop())
    return out


# ---------------------------------------------------------------- spatial wording


def spatial_truths(objects: list[ToyObject], target: int, margin: float = 2.0) -> list[str]:
    """Which of left/right/top/bottom truly single out ``target`` (its centre beats all others by ``margin``)."""
    cx, cy = objects[target].center
    others = [o.center for i, o in enumerate(objects) if i != target]
    if not others:
        return []
    words = []
    if all(cx + margin < ox for ox, _ in others):
        words.append("left")
    if all(cx - margin > ox for ox, _ in others):
        words.append("right")
    if all(cy + margin < oy for _, oy in others):
        words.append("top")
    if all(cy - margin > oy for _, oy in others):
        words.append("bottom")
    return words


def size_word(obj: ToyObject, size) -> str | None:
    """"big" (radius at least SIZE_RADIUS["big"]'s low end), "small" (at most "small"'s high end) or None."""
    side = min(_size_pair(size))
    if obj.radius >= SIZE_RADIUS["big"][0] * side:
        return "big"
    if obj.radius <= SIZE_RADIUS["small"][1] * side:
        return "small"
    return None


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def expression(colour: str, shape: str, spatial: str | None, rng: np.random.Generator, size: str | None = None) -> str:
    """'the red circle', 'a big red circle on the left', ..."""
    adjective = colour if size is None else f"{size} {colour}"
    base = EXPRESSION_TEMPLATES[rng.integers(len(EXPRESSION_TEMPLATES))].format(c=adjective, s=shape, a=article(adjective))
    return base if spatial is None else f"{base} {SPATIAL_WORDS[spatial]}"


def list_phrase(objects: list[ToyObject], rng: np.random.Generator) -> str:
    """'a red circle, a blue star and a green square' in a random order."""
    names = [f"{article(o.name)} {o.name}" for o in objects]
    order = rng.permutation(len(names))
    names = [names[i] for i in order]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# ---------------------------------------------------------------- public generators


def classification_samples(n: int, seed: int, size=32) -> ClassificationSet:
    """``n`` single-object images, classes cycling through every colour x shape (then shuffled)."""
    n = _check_count(n)
    _size_pair(size)
    rng = np.random.default_rng([seed, 1])
    labels = np.arange(n, dtype=np.int64) % len(CLASS_NAMES)
    rng.shuffle(labels)
    images = []
    for label in labels:
        colour, shape = CLASS_NAMES[label].split(" ")
        images.append(render_single(rng, size, colour, shape)[0])
    return ClassificationSet(images, labels, list(CLASS_NAMES))


def rec_scenes(
    n: int,
    seed: int,
    size=128,
    hard: bool = False,
    min_objects: int = 2,
    max_objects: int = 5,
    refs_per_scene: int = 1,
    sentences_per_ref: int = 2,
) -> list[RecScene]:
    """Multi-object scenes with referring expressions that single out one object each.

    In normal scenes (colour, shape) pairs are unique, so the colour and shape always identify the
    target; some sentences add left/right/top/bottom wording, used only where it is true. In ``hard``
    scenes (one expression, for object 0) every distractor shares the target's colour or shape and one
    shares both: a twin of the other size (SIZE_RADIUS), so "big"/"small", which every sentence carries,
    singles the target out. A crop, resized to the model's input, cannot tell the twins apart.
    """
    n = _check_count(n)
    _check_objects(size, min_objects, max_objects)
    if hard and min_objects < 2:
        raise ConfigError("min_objects", "hard scenes need at least 2 objects")
    if refs_per_scene < 1 or refs_per_scene > min_objects and not hard:
        raise ConfigError("refs_per_scene", f"need 1 <= refs_per_scene <= min_objects ({min_objects})")
    if sentences_per_ref < 1:
        raise ConfigError("sentences_per_ref", "need at least one sentence per expression")
    rng = np.random.default_rng([seed, 2, int(hard)])
    scenes = []
    for _ in range(n):
        k = int(rng.integers(min_objects, max_objects + 1))
        combos = hard_combos(rng, k) if hard else random_combos(rng, k)
        target_size = ("big", "small")[rng.integers(2)] if hard else None
        radius = SCENE_RADIUS
        if hard:
            twin_size = "small" if target_size == "big" else "big"
            radius = [SIZE_RADIUS[target_size], SIZE_RADIUS[twin_size]][:k] + [SCENE_RADIUS] * (k - 2)
        image, objects = draw_scene(rng, size, place_scene(rng, size, combos, radius))
        targets = [0] if hard else sorted(rng.choice(k, size=min(refs_per_scene, k), replace=False).tolist())
        refs = []
        for t in targets:
            truths = spatial_truths(objects, t)
            sentences, spatial = [], []
            for j in range(sentences_per_ref):
                word = None
                if truths and (j % 2 == 1 or rng.random() < 0.25):
                    word = truths[rng.integers(len(truths))]
                sentences.append(expression(objects[t].colour, objects[t].shape, word, rng, target_size))
                spatial.append(word)
            refs.append(RefExpression(t, sentences, spatial, target_size))
        scenes.append(RecScene(image, objects, refs, hard))
    return scenes


def region_samples(n: int, seed: int, size=128, max_objects: int = 4, max_labelled: int = 2) -> RegionSet:
    """Scenes whose labelled object(s) all have one class; the other objects have other classes."""
    n = _check_count(n)
    _check_objects(size, 1, max_objects)
    if not 1 <= max_labelled <= max_objects:
        raise ConfigError("max_labelled", f"need 1 <= max_labelled <= max_objects ({max_objects})")
    rng = np.random.default_rng([seed, 3])
    labels = np.arange(n, dtype=np.int64) % len(CLASS_NAMES)
    rng.shuffle(labels)
    samples = []
    for label in labels:
        target = tuple(CLASS_NAMES[label].split(" "))
        n_lab = int(rng.integers(1, max_labelled + 1))
        n_other = int(rng.integers(max(0, 2 - n_lab), max_objects - n_lab + 1))
        others = [c for c in random_combos(rng, n_other + 1) if c != target][:n_other]
        image, objects = render_scene(rng, size, [target] * n_lab + others)
        samples.append(RegionSample(image, [list(o.box) for o in objects[:n_lab]], int(label), objects))
    return RegionSet(samples, list(CLASS_NAMES))


def retrieval_gallery(n: int, seed: int, size=96, min_objects: int = 3, max_objects: int = 3) -> list[GalleryItem]:
    """``n`` scenes with distinct object sets, each with 5 captions naming all of its objects.

    With one object count (3 by default) no scene's objects are a subset of another's, so a caption
    is true of its own image only.
    """
    n = _check_count(n)
    _check_objects(size, min_objects, max_objects)
    rng = np.random.default_rng([seed, 4])
    seen: set[frozenset] = set()
    items = []
    while len(items) < n:
        k = int(rng.integers(min_objects, max_objects + 1))
        combos = random_combos(rng, k)
        key = frozenset(combos)
        if key in seen and len(seen) < 2000:
            continue
        seen.add(key)
        image, objects = render_scene(rng, size, combos, radius_range=GALLERY_RADIUS)
        captions = [LIST_TEMPLATES[j].format(objs=list_phrase(objects, rng)) for j in range(5)]
        items.append(GalleryItem(image, objects, captions))
    return items


def _swap_attribute(obj: ToyObject, rng: np.random.Generator) -> tuple[str, str]:
    if rng.random() < 0.5:
        colours = [c for c in COLOURS if c != obj.colour]
        return colours[rng.integers(len(colours))], obj.shape
    shapes = [s for s in SHAPES if s != obj.shape]
    return obj.colour, shapes[rng.integers(len(shapes))]


def _phrase(pairs, rng) -> str:
    return list_phrase([ToyObject(c, s, [0, 0, 0, 0]) for c, s in pairs], rng)


CANDIDATE_BASE = {"right": 3.8, "partly_wrong": 2.4, "unrelated": 1.2}


def caption_judgments(
    n_images: int, seed: int, size=96, references: int = 5, rating_noise: float = 0.6
) -> list[JudgedImage]:
    """Images with reference captions and rated candidates, like Flickr8k-Expert.

    Each image has one right candidate (worded unlike its references), one or two partly wrong ones
    (a single colour or shape changed) and one unrelated one. Each candidate gets three ratings 1-4:
    a base by correctness plus seeded Gaussian noise, rounded and clipped.
    """
    n_images = _check_count(n_images, "n_images")
    _check_objects(size, 1, 2)
    if references < 1:
        raise ConfigError("references", "need at least one reference caption")
    rng = np.random.default_rng([seed, 5])
    out = []
    for _ in range(n_images):
        k = int(rng.integers(1, 3))
        combos = random_combos(rng, k)
        image, objects = render_scene(rng, size, combos, radius_range=(0.16, 0.26) if k == 1 else (0.13, 0.2))
        pairs = [(o.colour, o.shape) for o in objects]
        refs = [LIST_TEMPLATES[j % len(LIST_TEMPLATES)].format(objs=_phrase(pairs, rng)) for j in range(references)]
        cands = [("right", f"there is {_phrase(pairs, rng)} in this image.")]
        for _ in range(int(rng.integers(1, 3))):
            wrong = list(pairs)
            i = int(rng.integers(k))
            new = _swap_attribute(objects[i], rng)
            while new in pairs:
                new = _swap_attribute(objects[i], rng)
            wrong[i] = new
            cands.append(("partly_wrong", f"there is {_phrase(wrong, rng)} in this image."))
        unrelated = [
            c for c in random_combos(rng, len(CLASS_NAMES))
            if all(c[0] != p[0] and c[1] != p[1] for p in pairs)
        ][:k]
        cands.append(("unrelated", f"there is {_phrase(unrelated, rng)} in this image."))
        candidates = []
        for kind, text in cands:
            ratings = np.clip(np.rint(CANDIDATE_BASE[kind] + rng.normal(0, rating_noise, size=3)), 1, 4)
            candidates.append(Candidate(text, kind, [int(r) for r in ratings]))
        out.append(JudgedImage(image, objects, refs, candidates))
    return out


CROWDFLOWER_YES = {"reference": 0.95, "right": 0.9, "partly_wrong": 0.35, "unrelated": 0.03}


def crowdflower_votes(kinds: list[str], seed: int, workers: int = 3) -> list[tuple[int, int]]:
    """(n_yes, n_no) per caption from ``workers`` yes/no judges (Flickr8k-CF: "does the caption describe
    the image?"), each saying yes with a probability set by the caption's kind."""
    rng = np.random.default_rng([seed, 6])
    out = []
    for kind in kinds:
        n_yes = int(rng.binomial(workers, CROWDFLOWER_YES[kind]))
        out.append((n_yes, workers - n_yes))
    return out


# ---------------------------------------------------------------- point clouds


def _surface(solid: str, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` points spread over the surface of a canonical ``solid`` (roughly in [-1, 1]^3)."""
    if solid == "sphere":
        p = rng.normal(size=(m, 3))
        return p / np.linalg.norm(p, axis=1, keepdims=True)
    if solid == "cube":
        p = rng.uniform(-1, 1, size=(m, 3))
        axis = rng.integers(3, size=m)
        p[np.arange(m), axis] = rng.choice([-1.0, 1.0], size=m)
        return p
    if solid == "cylinder":  # radius 0.8, height 2; side area 3.2pi vs caps 1.28pi
        side = rng.random(m) < 3.2 / (3.2 + 1.28)
        t = rng.uniform(0, 2 * np.pi, m)
        rad = np.where(side, 0.8, 0.8 * np.sqrt(rng.random(m)))
        z = np.where(side, rng.uniform(-1, 1, m), rng.choice([-1.0, 1.0], size=m))
        return np.stack([rad * np.cos(t), rad * np.sin(t), z], 1)
    if solid == "cone":  # base radius 0.9 at z=-1, apex at z=1
        slant = 0.9 * math.hypot(0.9, 2.0)
        side = rng.random(m) < slant / (slant + 0.9)
        t = rng.uniform(0, 2 * np.pi, m)
        u = np.sqrt(rng.random(m))  # area grows linearly towards the base
        rad = np.where(side, 0.9 * u, 0.9 * np.sqrt(rng.random(m)))
        z = np.where(side, 1 - 2 * u, -1.0)
        return np.stack([rad * np.cos(t), rad * np.sin(t), z], 1)
    if solid == "torus":  # radii 0.7 and 0.3, area-uniform by rejection
        big, small = 0.7, 0.3
        pts = []
        while sum(len(p) for p in pts) < m:
            u = rng.uniform(0, 2 * np.pi, 2 * m)
            v = rng.uniform(0, 2 * np.pi, 2 * m)
            keep = rng.random(2 * m) < (big + small * np.cos(v)) / (big + small)
            u, v = u[keep], v[keep]
            pts.append(np.stack([(big + small * np.cos(v)) * np.cos(u), (big + small * np.cos(v)) * np.sin(u), small * np.sin(v)], 1))
        return np.concatenate(pts)[:m]
    if solid == "pyramid":  # square base [-1,1]^2 at z=-1, apex (0,0,1)
        apex = np.array([0.0, 0.0, 1.0])
        corners = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]], float)
        faces = [(apex, corners[i], corners[(i + 1) % 4]) for i in range(4)]
        faces += [(corners[0], corners[1], corners[2]), (corners[0], corners[2], corners[3])]
        areas = np.array([np.linalg.norm(np.cross(b - a, c - a)) / 2 for a, b, c in faces])
        which = rng.choice(len(faces), size=m, p=areas / areas.sum())
        r1, r2 = np.sqrt(rng.random(m)), rng.random(m)
        tri = np.array(faces)[which]
        return (1 - r1)[:, None] * tri[:, 0] + (r1 * (1 - r2))[:, None] * tri[:, 1] + (r1 * r2)[:, None] * tri[:, 2]
    raise ConfigError("solid", f"unknown solid {solid!r}; known: {SOLIDS}")


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def point_clouds(n: int, seed: int, num_points: int = 2048) -> PointCloudSet:
    """``n`` primitives (classes cycling through SOLIDS, then shuffled), scaled per axis, rotated at random,
    centred and scaled to fit the unit sphere (radius 0.85-1)."""
    n = _check_count(n)
    if not isinstance(num_points, (int, np.integer)) or num_points < 16:
        raise ConfigError("num_points", f"need at least 16 points per cloud, got {num_points!r}")
    rng = np.random.default_rng([seed, 6])
    labels = np.arange(n, dtype=np.int64) % len(SOLIDS)
    rng.shuffle(labels)
    out = np.empty((n, int(num_points), 3), np.float32)
    for i, label in enumerate(labels):
        p = _surface(SOLIDS[label], int(num_points), rng)
        p = p * rng.uniform(0.75, 1.25, size=3)
        p = p @ _rotation(rng).T
        p += rng.normal(0, 0.004, size=p.shape)
        p -= p.mean(0)
        p *= rng.uniform(0.85, 1.0) / np.linalg.norm(p, axis=1).max()
        out[i] = p
    return PointCloudSet(out, labels, list(SOLIDS))

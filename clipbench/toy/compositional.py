"""Toy compositionality and multilingual sets, from the toy world's scenes (clipbench.toy.world).

* SugarCrepe-style: two-object scenes, each with a true caption and, per subset, a hard negative made the
  way SugarCrepe makes its own (replace, swap or add an object, attribute or relation).
* Winoground-style: two scenes with the same two shapes and the colours swapped, and the two captions
  that use the same words in another order.
* A translated caption set: each gallery scene's caption word for word in German and French.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipbench.toy import world as tw

TOY_SUGAR_CREPE_SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
SELECTION_SIZE = 96


@dataclass
class CaptionPair:
    image: Image.Image
    caption: str
    negative: str


@dataclass
class WinogroundPair:
    images: tuple[Image.Image, Image.Image]
    captions: tuple[str, str]


def _a(colour: str | None, shape: str) -> str:
    phrase = f"{colour} {shape}" if colour else shape
    return f"{tw.article(phrase)} {phrase}"


def _photo(*phrases: str) -> str:
    return "a photo of " + (phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]) + "."


def _other(rng: np.random.Generator, pool, *taken: str) -> str:
    return str(rng.choice([x for x in pool if x not in taken]))


def _left_right(objects: list[tw.ToyObject]) -> tuple[tw.ToyObject, tw.ToyObject]:
    left, right = sorted(objects, key=lambda o: o.center[0])
    return left, right


def _pair(subset: str, left: tw.ToyObject, right: tw.ToyObject, rng: np.random.Generator) -> tuple[str, str]:
    """(true caption, negative) for one two-object scene, as SugarCrepe's subset ``subset`` builds it."""
    colours, shapes = list(tw.COLOURS), list(tw.SHAPES)
    a, b = _a(left.colour, left.shape), _a(right.colour, right.shape)
    if subset == "replace_att":
        return _photo(a, b), _photo(_a(_other(rng, colours, left.colour, right.colour), left.shape), b)
    if subset == "replace_obj":
        return _photo(a, b), _photo(_a(left.colour, _other(rng, shapes, left.shape, right.shape)), b)
    if subset == "replace_rel":
        return f"{a} on the left of {b}.", f"{a} on the right of {b}."
    if subset == "swap_att":
        return _photo(a, b), _photo(_a(right.colour, left.shape), _a(left.colour, right.shape))
    if subset == "swap_obj":
        return f"{a} on the left of {b}.", f"{b} on the left of {a}."
    if subset == "add_obj":
        colour, shape = _other(rng, colours, left.colour, right.colour), _other(rng, shapes, left.shape, right.shape)
        return _photo(a, b), _photo(a, b, _a(colour, shape))
    if subset == "add_att":
        return _photo(_a(None, left.shape), b), _photo(_a(_other(rng, colours, left.colour, right.colour), left.shape), b)
    raise ValueError(f"unknown SugarCrepe subset {subset!r}")


def distinct_pair(rng: np.random.Generator) -> list[tuple[str, str]]:
    """Two objects of different colours and different shapes, so every swap changes the caption."""
    while True:
        (c1, s1), (c2, s2) = tw.random_combos(rng, 2)
        if c1 != c2 and s1 != s2:
            return [(c1, s1), (c2, s2)]


def _scene(rng: np.random.Generator, combos):
    image, objects = tw.render_scene(rng, SELECTION_SIZE, combos, radius_range=tw.GALLERY_RADIUS)
    return image, objects


def sugar_crepe_pairs(n: int, seed: int) -> dict[str, list[CaptionPair]]:
    """``n`` two-object scenes per subset, with their (caption, negative caption)."""
    out = {}
    for k, subset in enumerate(TOY_SUGAR_CREPE_SUBSETS):
        rng = np.random.default_rng([seed, 20, k])
        items = []
        for _ in range(n):
            image, objects = _scene(rng, distinct_pair(rng))
            caption, negative = _pair(subset, *_left_right(objects), rng)
            items.append(CaptionPair(image, caption, negative))
        out[subset] = items
    return out


def winoground_pairs(n: int, seed: int) -> list[WinogroundPair]:
    """``n`` pairs: scene 0 has (c1 s1, c2 s2), scene 1 (c2 s1, c1 s2); each caption is true of its own scene."""
    rng = np.random.default_rng([seed, 21])
    pairs = []
    for _ in range(n):
        (c1, s1), (c2, s2) = distinct_pair(rng)
        image_0, _ = _scene(rng, [(c1, s1), (c2, s2)])
        image_1, _ = _scene(rng, [(c2, s1), (c1, s2)])
        pairs.append(WinogroundPair((image_0, image_1), (_photo(_a(c1, s1), _a(c2, s2)), _photo(_a(c2, s1), _a(c1, s2)))))
    return pairs


# word-for-word toy translations (not grammatical: a caption set in another vocabulary)
TRANSLATIONS = {
    "de": {"a photo of": "ein Foto von", "and": "und", "a": "ein", "an": "ein", "red": "rot", "green": "grün",
           "blue": "blau", "yellow": "gelb", "purple": "lila", "orange": "orange", "circle": "Kreis",
           "square": "Quadrat", "triangle": "Dreieck", "star": "Stern", "cross": "Kreuz"},
    "fr": {"a photo of": "une photo de", "and": "et", "a": "un", "an": "un", "red": "rouge", "green": "vert",
           "blue": "bleu", "yellow": "jaune", "purple": "violet", "orange": "orange", "circle": "cercle",
           "square": "carré", "triangle": "triangle", "star": "étoile", "cross": "croix"},
}


def translate(caption: str, language: str) -> str:
    """A toy caption ("a photo of a red circle, ... and a blue star.") word for word in ``language``."""
    if language == "en":
        return caption
    words = TRANSLATIONS[language]
    body = caption.removesuffix(".").removeprefix("a photo of ")
    out = " ".join(words.get(w.strip(","), w.strip(",")) + ("," if w.endswith(",") else "") for w in body.split())
    return f"{words['a photo of']} {out}."


def translated_gallery(n: int, seed: int, languages=("en", "de", "fr")):
    """``n`` three-object scenes, each with one caption per language (the XTD layout: one caption per image)."""
    rng = np.random.default_rng([seed, 22])
    items = tw.retrieval_gallery(n, seed + 22)
    captions = [_photo(*[_a(o.colour, o.shape) for o in rng.permutation(item.objects)]) for item in items]
    return [item.image for item in items], {lang: [translate(c, lang) for c in captions] for lang in languages}

"""SugarCrepe's and Winoground's release layouts (read back through clip_benchmark by
``clipbench.data.caption_selection``), and the per-language annotation files of clip_benchmark's
multilingual retrieval sets (XTD10, XTD200, Crossmodal-3600, Flickr30k-200, multilingual MSCOCO)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from clipbench.data.caption_selection import SUGAR_CREPE_IMAGES
from clipbench.data.catalogue_languages import retrieval_module

WINOGROUND_TEXT = ("tag", "secondary_tag", "collapsed_tag")


def write_sugar_crepe(root: str | Path, subset: str, items: Sequence[tuple[Image.Image, str, str]], prefix: str = "") -> Path:
    """``root/<subset>.json`` as the release's ``data/<subset>.json`` ({"<i>": {filename, caption,
    negative_caption}}), its images as COCO file names under ``root/val2017/``."""
    root = Path(root)
    (root / SUGAR_CREPE_IMAGES).mkdir(parents=True, exist_ok=True)
    ann = {}
    for i, (image, caption, negative) in enumerate(items):
        filename = f"{prefix}{i:012d}.jpg"
        image.save(root / SUGAR_CREPE_IMAGES / filename, quality=95)
        ann[str(i)] = {"filename": filename, "caption": caption, "negative_caption": negative}
    path = root / f"{subset}.json"
    path.write_text(json.dumps(ann, indent=1))
    return path


def write_winoground(root: str | Path, pairs: Sequence[tuple[tuple[Image.Image, Image.Image], tuple[str, str]]]) -> Path:
    """A ``save_to_disk`` copy of facebook/winoground's test split, with the hub set's columns and types."""
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    features = Features({"id": Value("int32"), "image_0": ImageFeature(), "image_1": ImageFeature(),
                         "caption_0": Value("string"), "caption_1": Value("string"), "tag": Value("string"),
                         "secondary_tag": Value("string"), "num_main_preds": Value("int32"),
                         "collapsed_tag": Value("string")})
    rows = {name: [] for name in features}
    for i, ((image_0, image_1), (caption_0, caption_1)) in enumerate(pairs):
        for name, value in (("id", i), ("image_0", image_0), ("image_1", image_1), ("caption_0", caption_0),
                            ("caption_1", caption_1), ("num_main_preds", 1)):
            rows[name].append(value)
        for name in WINOGROUND_TEXT:
            rows[name].append("Object")
    from datasets import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        DatasetDict({"test": Dataset.from_dict(rows, features=features)}).save_to_disk(str(root))
    finally:
        if not quiet:
            enable_progress_bars()
    return Path(root)


def write_multilingual_captions(root: str | Path, name: str, language: str, image_paths: Sequence[str | Path],
                                captions: Sequence[str]) -> Path:
    """The annotation file clip_benchmark's ``create_annotation_file`` writes for ``name`` (e.g. xtd10) in
    ``language``: ``root/<name>-<language>.json`` with ``image_paths`` (absolute), one caption per image
    (``annotations``) and their ``indices`` in the release."""
    path = Path(root) / retrieval_module(name).OUTPUT_FILENAME_TEMPLATE.format(language)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"image_paths": [str(Path(p).resolve()) for p in image_paths], "annotations": list(captions),
            "indices": list(range(len(captions)))}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path

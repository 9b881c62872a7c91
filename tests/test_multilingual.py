"""dataset.language=: zero-shot ImageNet-1k and Babel-ImageNet in the languages clip_benchmark ships, its
multilingual retrieval sets read from their annotation files, NLLB-CLIP's language code, clear errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from clip_benchmark.datasets.builder import all_imagenet_wordnet_ids
from helpers import compose_config, tmp_overrides
from PIL import Image

from clipbench.data.catalogue import ClipBenchmarkConfig, build_clip_benchmark
from clipbench.data.catalogue_languages import MULTILINGUAL_RETRIEVAL, retrieval_module
from clipbench.errors import ConfigError
from clipbench.models import load_model
from clipbench.models.languages import with_text_language
from clipbench.runner import run
from clipbench.toy.writers.caption_selection import write_multilingual_captions

PACKAGE = retrieval_module("xtd10").__file__.rsplit("/", 1)[0]


def _package_json(name: str):
    with open(f"{PACKAGE}/{name}", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """torchvision's prepared ImageNet layout (meta.bin and val/<wnid>/), one image per class; the image of
    class k is k pixels wide plus 4, so a sample's width says which class folder it came from."""
    root = tmp_path_factory.mktemp("imagenet")
    torch.save(({w: (f"class {w}",) for w in all_imagenet_wordnet_ids}, list(all_imagenet_wordnet_ids)), root / "meta.bin")
    for k, wnid in enumerate(all_imagenet_wordnet_ids):
        (root / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (k + 4, 4), (k % 256, 0, 0)).save(root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.png")
    return root


@pytest.mark.parametrize("language", ["en", "ar", "cn", "it", "jp"])
def test_imagenet_in_every_shipped_language(imagenet_root, language):
    ds = build_clip_benchmark(ClipBenchmarkConfig(name="imagenet1k", root=str(imagenet_root), language=language))
    assert ds.classnames == _package_json(f"{language}_classnames.json")["imagenet1k"]
    templates = _package_json(f"{language}_zeroshot_classification_templates.json")["imagenet1k"]
    assert ds.templates == [t.replace("{c}", "{}") for t in templates]


def test_babel_imagenet_classes_prompts_and_labels(imagenet_root):
    ds = build_clip_benchmark(ClipBenchmarkConfig(name="babel_imagenet", root=str(imagenet_root), language="de"))
    idxs, names = _package_json("babel_imagenet.json")["DE"]
    assert ds.classnames == names and len(ds) == len(idxs)
    assert ds.templates == _package_json("nllb_dist13b_prompts.json")["DE"]
    for i in (0, 7, len(ds) - 1):
        image, label = ds.sample(i)
        assert label == i and image.width == idxs[i] + 4  # Babel class i is ImageNet class idxs[i]


def test_babel_zero_shot_run_rows_name_the_language(tmp_path, imagenet_root):
    overrides = tmp_overrides(tmp_path, "task=zeroshot", "dataset=clip_benchmark", "dataset.name=babel_imagenet",
                              f"dataset.root={imagenet_root}", "dataset.language=fr", "limit=12",
                              "task.templates=[\"une photo de {}.\"]")
    rows = run(compose_config(overrides), tmp_path / "run")
    top1 = next(r for r in rows if r["metric"] == "top1")
    assert top1["dataset"] == "babel_imagenet@fr" and top1["n"] == 12
    assert json.loads(top1["dataset_params"])["language"] == "fr"


@pytest.mark.parametrize("name", sorted(MULTILINGUAL_RETRIEVAL))
def test_multilingual_retrieval_sets_read_one_caption_per_image(tmp_path, name):
    language = "de" if "de" in retrieval_module(name).SUPPORTED_LANGUAGES else "deu_Latn"
    paths = []
    for i in range(3):
        paths.append(tmp_path / "images" / f"{i}.jpg")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (80 * i, 0, 0)).save(paths[-1])
    captions = ["ein roter Kreis", "zwei Hunde im Schnee", "ein Boot"]
    write_multilingual_captions(tmp_path, name, language, paths, captions)
    gallery = build_clip_benchmark(ClipBenchmarkConfig(name=name, root=str(tmp_path), language=language))
    assert gallery.captions == captions and gallery.text_to_image == [0, 1, 2]  # not split into characters
    assert gallery.image(2).getpixel((0, 0)) == (160, 0, 0)


@pytest.mark.parametrize(("name", "language", "message"), [
    ("imagenet1k", "de", "ships no 'de' for imagenet1k; it has: en, ar, cn, it, jp"),
    ("cifar10", "it", "ships no 'it' for cifar10; it has: en$"),
    ("babel_imagenet", "la", "ships no 'la' for babel_imagenet"),  # class names but no prompts in the package
    ("xtd10", "xx", "ships no 'xx' for xtd10; it has: de, en, es"),
    ("flickr30k", "de", "ships no 'de' for flickr30k; it has: en, zh"),
])
def test_a_language_the_dataset_does_not_ship_is_one_clear_line(tmp_path, name, language, message):
    with pytest.raises(ConfigError, match=message) as info:
        ClipBenchmarkConfig(name=name, root=str(tmp_path), language=language).validate()
    assert info.value.key == "dataset.language" and "\n" not in str(info.value)


def test_missing_annotation_file_says_how_to_prepare_it(tmp_path):
    with pytest.raises(ConfigError, match="xtd10-it.json does not exist; dataset.download=true lets clip_benchmark"):
        ClipBenchmarkConfig(name="xtd10", root=str(tmp_path), language="it").validate()


class _NllbTokenizer:
    """Stands in for open_clip's HFTokenizer around NLLB's tokenizer (downloaded from the hub)."""

    def __init__(self):
        self.tokenizer = self
        self.codes = []

    def set_src_lang_special_tokens(self, code):
        self.codes.append(code)


def test_nllb_language_code_set_on_the_tokenizer_and_in_the_cache_key():
    from conftest import TINY_ARCH

    plain = load_model(TINY_ARCH, None, device="cpu")
    assert with_text_language(plain, "de") is plain  # other towers read any language as it comes
    nllb = dataclasses.replace(plain, arch="nllb-clip-base", tokenizer=_NllbTokenizer())
    german, french = with_text_language(nllb, "de"), with_text_language(nllb, "fr")
    assert nllb.tokenizer.codes == ["deu_Latn", "fra_Latn"]  # clip_benchmark's lang_map
    assert len({nllb.fingerprint, german.fingerprint, french.fingerprint}) == 3
    assert with_text_language(nllb, "ace_Arab").fingerprint.endswith("ace_Arab")  # FLORES codes as they are
    with pytest.raises(ConfigError, match="no NLLB language code"):
        with_text_language(nllb, "xx")


def test_clipbench_list_shows_the_languages_and_the_task(capsys):
    from clipbench.listing import main

    main(["languages", "--width", "0"])
    out = capsys.readouterr().out
    assert "| xtd10 " in out and "| de en es fr it jp ko pl ru tr zh " in out
    assert any(line.startswith("| imagenet1k ") and "| en ar cn it jp " in line for line in out.splitlines())
    main(["tasks", "--width", "0"])
    task_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| compositionality "))
    assert "sugar_crepe" in task_line and "winoground" in task_line


def test_retrieval_languages_read_from_source_equal_the_modules_own():
    """clipbench-list reads SUPPORTED_LANGUAGES from the package's source (importing it imports torch)."""
    from clipbench.data.catalogue_languages import MULTILINGUAL_RETRIEVAL, dataset_languages, retrieval_module

    for name in MULTILINGUAL_RETRIEVAL:
        assert dataset_languages(name) == tuple(retrieval_module(name).SUPPORTED_LANGUAGES), name

"""Which languages (``dataset.language=``) clip_benchmark ships for each catalogue dataset, read from the
package itself: its ``<lang>_classnames.json`` and ``<lang>_zeroshot_classification_templates.json``,
``babel_imagenet.json`` with ``nllb_dist13b_prompts.json``, and each multilingual retrieval module's
``SUPPORTED_LANGUAGES`` (clip_benchmark/datasets/builder.py reads the same files).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from clipbench.errors import ConfigError

# dataset name -> its module in clip_benchmark.datasets (annotation file <root>/OUTPUT_FILENAME_TEMPLATE)
MULTILINGUAL_RETRIEVAL = {
    "xtd10": "xtd10",
    "xtd200": "xtd200",
    "crossmodal3600": "crossmodal3600",
    "flickr30k-200": "flickr30k_200",
    "multilingual_mscoco_captions": "multilingual_mscoco",
}
CAPTION_LANGUAGES = {"flickr30k": ("en", "zh"), "flickr8k": ("en", "zh")}  # builder.py's annotation switch
# builder.py gives these ImageNet's class names (default_classnames["imagenet1k"]) in the chosen language
IMAGENET_NAMES = ("imagenet1k", "imagenet1k-unverified", "imagenetv2", "imagenet_sketch", "imagenet-a", "imagenet-r", "imagenet-o")
BABEL = "babel_imagenet"


def _package_file(name: str) -> Path:
    """A file of clip_benchmark's ``datasets/`` folder, found without importing the package."""
    return Path(importlib.util.find_spec("clip_benchmark").origin).parent / "datasets" / name


@lru_cache(maxsize=1)
def classification_languages() -> dict[str, frozenset[str]]:
    """language -> the datasets its class-name file names (the package's <lang>_classnames.json)."""
    out = {}
    for path in sorted(_package_file("").glob("*_classnames.json")):
        lang = path.name.removesuffix("_classnames.json")
        if _package_file(f"{lang}_zeroshot_classification_templates.json").is_file():
            out[lang] = frozenset(json.loads(path.read_text(encoding="utf-8")))
    return out


@lru_cache(maxsize=1)
def babel_languages() -> tuple[str, ...]:
    """Babel-ImageNet's languages with both class names and prompts (lower case, as dataset.language)."""
    names = json.loads(_package_file("babel_imagenet.json").read_text(encoding="utf-8"))
    prompts = json.loads(_package_file("nllb_dist13b_prompts.json").read_text(encoding="utf-8"))
    return tuple(sorted(k.lower() for k in names if k in prompts))


def retrieval_module(name: str):
    return importlib.import_module(f"clip_benchmark.datasets.{MULTILINGUAL_RETRIEVAL[name]}")


def module_constant(module: str, name: str):
    """A literal list the package's ``datasets/<module>.py`` assigns to ``name`` (or imports from a sibling
    module), read from the source: importing those modules imports torch and torchvision."""
    tree = ast.parse(_package_file(f"{module}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            if isinstance(node.value, ast.Name):
                return module_constant(_imported_from(tree, node.value.id), node.value.id)
            return ast.literal_eval(node.value)
    raise LookupError(f"clip_benchmark/datasets/{module}.py assigns no {name}")


def _imported_from(tree: ast.Module, name: str) -> str:
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and any(a.name == name for a in node.names):
            return node.module
    raise LookupError(f"{name} is not imported from a sibling module")


def dataset_languages(name: str) -> tuple[str, ...]:
    """The languages clip_benchmark ships for catalogue dataset ``name``."""
    if name in MULTILINGUAL_RETRIEVAL:
        return tuple(module_constant(MULTILINGUAL_RETRIEVAL[name], "SUPPORTED_LANGUAGES"))
    if name in CAPTION_LANGUAGES:
        return CAPTION_LANGUAGES[name]
    if name == BABEL:
        return babel_languages()
    key = "imagenet1k" if name in IMAGENET_NAMES else name
    # other sets take torchvision's English names; a language file naming them would apply
    return ("en", *sorted(lang for lang, keys in classification_languages().items() if lang != "en" and key in keys))


def check_language(name: str, language: str) -> None:
    """A ``ConfigError`` naming what is shipped when clip_benchmark has no ``language`` for ``name``."""
    shipped = dataset_languages(name)
    if language in shipped:
        return
    listed = ", ".join(shipped[:40]) + (f", ... ({len(shipped)} in all)" if len(shipped) > 40 else "")
    raise ConfigError("dataset.language", f"clip_benchmark ships no {language!r} for {name}; it has: {listed}")


def annotation_file(name: str, root: Path, language: str) -> Path | None:
    """The per-language annotation file clip_benchmark prepares under ``root`` (None: not such a set)."""
    if name not in MULTILINGUAL_RETRIEVAL:
        return None
    return root / retrieval_module(name).OUTPUT_FILENAME_TEMPLATE.format(language)

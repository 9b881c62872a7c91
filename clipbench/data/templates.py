"""Prompt template sets for zero-shot classification, by name."""

from __future__ import annotations

import string
from collections.abc import Sequence

from clipbench.errors import ConfigError

# OpenAI's 18 CIFAR templates (CLIP notebook "Prompt_Engineering_for_ImageNet" / CIFAR).
CIFAR_TEMPLATES = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
]

TEMPLATE_SETS: dict[str, list[str]] = {
    "cifar": CIFAR_TEMPLATES,
    "simple": ["a photo of a {}."],
    "pointcloud": ["point cloud depth map of a {}."],
}


def has_one_field(template: str) -> bool:
    """True when ``template.format(name)`` fills exactly one ``{}`` and nothing else: a second field such as
    ``{braces}``, a numbered ``{0}`` twice or an unbalanced brace would fail only once texts are encoded."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError:
        return False
    return fields == [("", "", None)]


def resolve_templates(spec: str | Sequence[str]) -> list[str]:
    """A named template set, or an explicit list of strings each holding one ``{}``."""
    if isinstance(spec, str):
        if spec not in TEMPLATE_SETS:
            raise ConfigError("task.templates", f"unknown template set {spec!r}; choose one of {sorted(TEMPLATE_SETS)} or give a list")
        return list(TEMPLATE_SETS[spec])
    templates = list(spec)
    bad = [t for t in templates if not has_one_field(t)]
    if not templates or bad:
        raise ConfigError("task.templates", f"each template needs exactly one '{{}}'; bad: {bad or 'empty list'}")
    return templates

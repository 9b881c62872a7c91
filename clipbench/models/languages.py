"""The text tower's language (``dataset.language=``), handled as clip_benchmark's cli does (``cli.py``:
for model names containing ``nllb-clip``, ``models/nllb_clip.py`` ``set_language`` sets the NLLB source-
language code on the tokenizer before the run). Other towers, XLM-RoBERTa's and mT5's, read any language
as it comes and need nothing set."""

from __future__ import annotations

import dataclasses

from clipbench.errors import ConfigError

NLLB = "nllb-clip"


def check_text_language(arch: str, language: str | None) -> None:
    """For an NLLB-CLIP ``arch``, a ``ConfigError`` when clip_benchmark has no NLLB code for ``language``."""
    if language is None or NLLB not in arch:
        return
    from clip_benchmark.models.nllb_clip import lang_map

    if language not in lang_map:
        raise ConfigError("dataset.language", f"{language!r} has no NLLB language code in clip_benchmark's "
                          f"models/nllb_clip.py (e.g. {', '.join(list(lang_map)[:12])}, or a FLORES code such as deu_Latn)")


def with_text_language(model, language: str | None):
    """``model`` with its tokenizer set for ``language``; for NLLB-CLIP a copy whose fingerprint names the
    language code, so cached text embeddings of one language are never read for another."""
    if language is None or NLLB not in model.arch:
        return model
    from clip_benchmark.models.nllb_clip import lang_map, set_language

    check_text_language(model.arch, language)
    if not hasattr(getattr(model.tokenizer, "tokenizer", None), "set_src_lang_special_tokens"):
        raise ConfigError("model.arch", f"{model.arch}'s tokenizer is not NLLB's (it cannot set a source language)")
    set_language(model.tokenizer, language)
    return dataclasses.replace(model, fingerprint=f"{model.fingerprint}|text_language={lang_map[language]}")

"""CLIPScore (Hessel et al. 2021) as pure functions over cosines, plus the length baseline.

CLIP-S(c, v) = w * max(cos(c, v), 0) with w = 2.5. RefCLIP-S is the harmonic mean 2ab/(a+b) of
a = CLIP-S and b = the maximum cosine between the candidate and its references. The official code
leaves b unclamped (the default here); ``ref_clamp=True`` gives the paper's max(b, 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CLIP_S_WEIGHT = 2.5
PREFIX = "A photo depicts "


def score_name(scorer: str, weight: float = CLIP_S_WEIGHT) -> str:
    """The output name of a scorer, carrying the scale: ``clip_s_w2.5``, ``refclip_s_w2.5``, ``length``."""
    return scorer if scorer == "length" else f"{scorer}_w{weight:g}"


def clip_s(cosine: torch.Tensor, weight: float = CLIP_S_WEIGHT) -> torch.Tensor:
    """w * max(cos, 0), elementwise."""
    import torch

    return weight * torch.as_tensor(cosine, dtype=torch.float64).clamp(min=0)


def refclip_s(clip_score: torch.Tensor, ref_cosine: torch.Tensor, ref_clamp: bool = False) -> torch.Tensor:
    """Harmonic mean 2ab/(a+b) of CLIP-S ``a`` and the max reference cosine ``b``; 0 where a + b = 0."""
    import torch

    a = torch.as_tensor(clip_score, dtype=torch.float64)
    b = torch.as_tensor(ref_cosine, dtype=torch.float64)
    if ref_clamp:
        b = b.clamp(min=0)
    total = a + b
    safe = torch.where(total == 0, torch.ones_like(total), total)
    return torch.where(total == 0, torch.zeros_like(total), 2 * a * b / safe)


def caption_length(caption: str) -> int:
    """The length baseline: the number of whitespace-separated words."""
    return len(caption.split())


def prefixed(captions: Sequence[str], prefix: str = PREFIX) -> list[str]:
    return [prefix + c for c in captions]


def token_count(tokenizer: Callable, text: str) -> int:
    """Tokens ``text`` takes in the model's context, start and end tokens included."""
    if hasattr(tokenizer, "encode"):  # open_clip's SimpleTokenizer: BPE ids without sot/eot
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:  # open_clip's HFTokenizer wraps a transformers tokenizer
        return len(inner(text)["input_ids"])
    raise TypeError(f"cannot count tokens with {type(tokenizer).__name__}")


def context_length(tokenizer: Callable, default: int = 77) -> int:
    return int(getattr(tokenizer, "context_length", None) or default)


def count_truncated(tokenizer: Callable, texts: Sequence[str]) -> int:
    """How many ``texts`` exceed the tokenizer's context length and are cut when encoded."""
    limit = context_length(tokenizer)
    return sum(token_count(tokenizer, t) > limit for t in texts)

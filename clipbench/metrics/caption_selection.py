"""Image-caption selection (SugarCrepe, Winoground), as clip_benchmark's
``metrics/image_caption_selection.py`` defines it: each instance has I images and C captions, and image i
belongs with caption i for i < min(I, C).

* ``text_score``: every image's best caption is its own (clip_benchmark's ``text_acc``).
* ``image_score``: every caption's best image is its own (``image_acc``; with one image it is always 1).
* ``group_score``: both (``acc``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clipbench.metrics.uncertainty import Outcome

SELECTION_METRICS = ("text_score", "image_score", "group_score")


def selection_hits(scores: torch.Tensor) -> tuple[bool, bool]:
    """(text correct, image correct) for one instance's (images x captions) similarity matrix."""
    matched = min(scores.shape)
    truth = torch.arange(matched)
    text_ok = bool((scores.argmax(dim=1)[:matched] == truth).all())
    image_ok = bool((scores.argmax(dim=0)[:matched] == truth).all())
    return text_ok, image_ok


def selection_results(
    hits: Sequence[tuple[bool, bool]], sample_ids: Sequence, several_images: bool
) -> tuple[dict[str, float], dict[str, Outcome]]:
    """The scores and their per-instance outcomes; ``image_score`` and ``group_score`` only where instances
    have several images (with one image the image side cannot fail and the group score is the text score)."""
    text = np.array([t for t, _ in hits], dtype=float)
    image = np.array([i for _, i in hits], dtype=float)
    values = {"text_score": text, "image_score": image, "group_score": text * image}
    names = SELECTION_METRICS if several_images else ("text_score",)
    ids = [str(s) for s in sample_ids]
    metrics = {m: float(values[m].mean()) if len(text) else float("nan") for m in names}
    outcomes = {m: Outcome(values[m], sample_id=ids) for m in names if len(text)}
    return metrics, outcomes

"""Image-text retrieval recall with CLIP_benchmark's definition: a hit is any positive in the top k.

``image_retrieval_recall@k``: each text query ranks the images; ``text_retrieval_recall@k``: each
image query ranks the texts.

Scores are computed a block of queries at a time against the whole gallery, so memory grows with the
gallery, never with texts x images, and positives come from the caption-to-image map. Each query's top
k is what ``torch.topk(k)`` selects on its whole row of float32 scores ``texts @ images.T``, as with
the full matrix: among scores tied at the k-th place, topk's own selection decides (on CPU a heap or
nth_element over the scores alone, chosen by k and the gallery size: not lowest index first), so every
block keeps whole rows and topk runs once per k. BLAS may round a very thin product differently from
the full one (MKL: fewer than 16 rows), so all blocks have the same number of rows, at least
``MIN_BLOCK_ROWS``; the last block overlaps the one before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from clipbench.metrics.uncertainty import Outcome

SCORES_PER_BLOCK = 1 << 23  # float32 scores per block of queries (32 MiB): rows = this // gallery size
MIN_BLOCK_ROWS = 64  # thinner products may round differently from the full one (see above)


def _row_blocks(n_queries: int, rows: int) -> list[slice]:
    """Blocks of ``rows`` queries covering all of them; one block when they fit, else the last overlaps."""
    if n_queries <= rows:
        return [slice(0, n_queries)]
    starts = [*range(0, n_queries - rows, rows), n_queries - rows]
    return [slice(start, start + rows) for start in starts]


def _query_hits(
    n_queries: int, gallery: int, scores_of: Callable[[slice], torch.Tensor],
    positive: Callable[[torch.Tensor, slice], torch.Tensor], ks: Sequence[int], block_rows: int | None,
) -> dict[int, torch.Tensor]:
    """Per k, (queries,) bool: is a positive among the query's top k. ``scores_of(block)`` gives the block's
    (queries, gallery) scores; ``positive(top, block)`` tells which of its top gallery indices are positives."""
    rows = max(MIN_BLOCK_ROWS, block_rows or SCORES_PER_BLOCK // max(gallery, 1))
    hits = {k: torch.zeros(n_queries, dtype=torch.bool) for k in ks}
    for block in _row_blocks(n_queries, rows):
        for k, block_hits in _top_k_hits(scores_of(block), block, positive, ks).items():
            hits[k][block] = block_hits
    return hits


def _top_k_hits(scores: torch.Tensor, block: slice, positive, ks: Sequence[int]) -> dict[int, torch.Tensor]:
    """Per k, the block's hits; the block's scores are freed on return, before the next block's exist."""
    return {k: positive(scores.topk(min(k, scores.shape[1]), dim=1).indices, block).any(dim=1) for k in ks}


def _recall(hits: torch.Tensor) -> float:
    """Share of queries with a hit, in float64 (144 of 150 is 0.96, not float32's 0.9599999785)."""
    return hits.double().mean().item() if len(hits) else float("nan")


def retrieval_results(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int],
    ks: Sequence[int] = (1, 5, 10), block_rows: int | None = None,
) -> tuple[dict[str, float], dict[str, Outcome]]:
    """Recall@k both ways from L2-normalised features and the per-query hits behind them, in one blocked
    pass; ``text_to_image[t]`` is the image of text t. Text queries resample with their image's other
    captions. ``block_rows``: queries per block (default from ``SCORES_PER_BLOCK``)."""
    images, texts = image_features.float(), text_features.float()
    owner = torch.as_tensor(list(text_to_image), dtype=torch.long)
    n_images, n_texts = len(images), len(texts)
    image_ids = torch.arange(n_images)

    def image_rows(block: slice) -> torch.Tensor:  # columns of texts @ images.T, as rows: topk is faster on rows
        return (texts @ images[block].T).T.contiguous()

    by_text = _query_hits(n_texts, n_images, lambda b: texts[b] @ images.T,
                          lambda top, b: top == owner[b, None], ks, block_rows)
    by_image = _query_hits(n_images, n_texts, image_rows, lambda top, b: owner[top] == image_ids[b, None], ks, block_rows)
    metrics, outcomes = {}, {}
    text_names, image_names = [f"t{t}" for t in range(n_texts)], [f"i{i}" for i in range(n_images)]
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = _recall(by_text[k])
        metrics[f"text_retrieval_recall@{k}"] = _recall(by_image[k])
        if n_texts and n_images:
            outcomes[f"image_retrieval_recall@{k}"] = Outcome(
                by_text[k].numpy(), cluster=owner.numpy(), sample_id=text_names)
            outcomes[f"text_retrieval_recall@{k}"] = Outcome(by_image[k].numpy(), sample_id=image_names)
    return metrics, outcomes


def retrieval_metrics(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k both ways (see ``retrieval_results``)."""
    return retrieval_results(image_features, text_features, text_to_image, ks)[0]


def retrieval_outcomes(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, Outcome]:
    """Per-query hits behind ``retrieval_metrics`` (see ``retrieval_results``)."""
    return retrieval_results(image_features, text_features, text_to_image, ks)[1]

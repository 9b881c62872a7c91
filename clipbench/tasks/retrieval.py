"""Image-text retrieval: Recall@k both ways over a captioned gallery, with cached gallery embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from clipbench.config.tasks import RetrievalConfig
from clipbench.data.base import file_identity, open_rgb
from clipbench.data.loading import image_batches
from clipbench.errors import ConfigError
from clipbench.metrics.retrieval import retrieval_results
from clipbench.models.factory import TEXT_BATCH
from clipbench.models.text_cache import cached, text_features
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import RunContext, TaskResult

# captions are encoded and cached in chunks of the model's own text batch, so that the ranks of a sharded run
# share whole batches (the same numbers as one process) at a grain fine enough to balance them
TEXT_CHUNK = TEXT_BATCH


class ImageFiles:
    """Image files as a source for ``image_batches``: image(i) is None when missing or unreadable."""

    def __init__(self, paths: Sequence[str | Path | None]):
        self.paths = [None if p is None else Path(p) for p in paths]  # None: a refused file name

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int):
        return open_rgb(self.paths[index])

    def label(self, index: int) -> int:
        return index

    def identity(self) -> list:
        """Identity of the files' contents for the embedding cache: path, size and mtime."""
        return file_identity(self.paths)


def image_features(
    model, source, key, ctx: RunContext, meter: Throughput | None = None, desc: str = "images"
) -> torch.Tensor:
    """(N, D) normalised embeddings of every image of ``source`` (image(i)/label(i)/len/identity()); the
    rows of missing or unreadable images are NaN. Cached in memory and under ``ctx.cache_dir/images``,
    keyed by ``key``, the images' identity (path, size, mtime) and the preprocessing."""

    def compute() -> torch.Tensor:
        parts = []  # this rank's batches: (indices, features)
        batches = image_batches(source, model.preprocess, ctx.batch_size, ctx.num_workers, ctx.device, ranks=ctx.ranks)
        for idx, images, _, _ in tqdm(batches, desc=desc, disable=not ctx.progress, unit="batch"):
            if images is None:
                continue
            if meter is not None:
                with meter.forward(0):
                    parts.append((idx, model.encode_image(images).cpu()))
            else:
                parts.append((idx, model.encode_image(images).cpu()))
        parts = ctx.ranks.gather(parts)
        out = torch.full((len(source), parts[0][1].shape[1] if parts else 1), float("nan"))
        for idx, feats in parts:
            out[idx] = feats
        return out

    payload = [key, source.identity(), repr(model.preprocess)]
    shape = (len(source), None)
    return cached(model, "images", payload, compute, ctx.cache_dir, subdir="images", shape=shape,
                  agree=ctx.ranks.all_true).cpu()


def texts_features(
    model, texts: Sequence[str], ctx: RunContext, meter: Throughput | None = None, desc: str = "texts"
) -> torch.Tensor:
    """(N, D) normalised embeddings of ``texts``, encoded and cached in chunks."""
    chunks = []
    starts = ctx.ranks.share(range(0, len(texts), TEXT_CHUNK))
    for start in tqdm(starts, desc=desc, disable=not ctx.progress, unit="chunk"):
        chunk = list(texts[start : start + TEXT_CHUNK])
        if meter is not None:
            with meter.forward(0):
                chunks.append(text_features(model, chunk, ctx.cache_dir).cpu())
        else:
            chunks.append(text_features(model, chunk, ctx.cache_dir).cpu())
    chunks = ctx.ranks.gather(chunks)
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def evaluate(model, dataset, method, cfg: RetrievalConfig, ctx: RunContext) -> TaskResult:
    if not method.region_free:
        raise ConfigError("method", f"task=retrieval embeds whole images; use method=clip, not {method.cfg.name}")
    if not hasattr(dataset, "captions"):
        raise ConfigError("task", f"dataset {getattr(dataset, 'name', '')!r} is a classification dataset; use task=zeroshot")
    if ctx.limit is not None:
        dataset = dataset.subset(ctx.limit)
    meter = Throughput(ctx.device)
    images = image_features(model, dataset, ["retrieval"], ctx, meter, desc="gallery")
    texts = texts_features(model, dataset.captions, ctx, meter, desc="captions")
    meter.items = ctx.ranks.share_count(len(dataset))  # this rank's part of the gallery
    meter.stop()
    owners = torch.as_tensor(dataset.text_to_image, dtype=torch.long)
    readable = ~torch.isnan(images).any(dim=1)
    captioned = torch.bincount(owners, minlength=len(dataset)) > 0
    usable = readable & captioned
    # an unreadable image leaves the gallery together with its captions; an image without captions
    # could never be found by text, so it leaves the gallery too
    new_index = torch.cumsum(usable.long(), 0) - 1
    keep_text = usable[owners]
    skip_reasons = {
        "missing or unreadable image": int((~readable).sum()),
        "image without captions": int((readable & ~captioned).sum()),
    }
    skip_reasons["empty caption (dropped, not an image)"] = getattr(dataset, "empty_captions", 0)
    skipped = sum(skip_reasons.values())  # every dropped input, gallery images and captions alike
    n_images, n_texts = int(usable.sum()), int(keep_text.sum())
    ranked = (images[usable], texts[keep_text], new_index[owners[keep_text]].tolist(), cfg.recall_k)
    metrics, outcomes = retrieval_results(*ranked) if n_images else ({}, {})
    metric_n = {m: n_texts if m.startswith("image_retrieval") else n_images for m in metrics}
    return TaskResult(
        metrics=metrics,
        n=n_images,
        metric_n=metric_n,
        throughput=meter,
        skipped=skipped,
        skip_reasons={k: v for k, v in skip_reasons.items() if v},
        outcomes=outcomes,
        extra={"gallery_images": n_images, "captions": n_texts},
    )

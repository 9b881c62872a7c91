"""Image-text retrieval: Recall@k both ways over a captioned gallery, with cached gallery embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clipbench.data.base import open_rgb
from clipbench.data.loading import image_batches
from clipbench.errors import ConfigError
from clipbench.metrics.retrieval import retrieval_metrics
from clipbench.models.text_cache import cached, text_features
from clipbench.progress import tqdm
from clipbench.runtime import Throughput
from clipbench.tasks.base import TASKS, RunContext, TaskResult, TaskSpec

TEXT_CHUNK = 1024


class ImageFiles:
    """Image files as a source for ``image_batches``: image(i) is None when missing or unreadable."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int):
        return open_rgb(self.paths[index])

    def label(self, index: int) -> int:
        return index

    def key(self) -> list:
        """Identity of the files' contents for the embedding cache: path, size and mtime."""
        out = []
        for p in self.paths:
            try:
                st = p.stat()
                out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                out.append([str(p), None, None])
        return out


def image_features(
    model, source, key, ctx: RunContext, meter: Throughput | None = None, desc: str = "images"
) -> torch.Tensor:
    """(N, D) normalised embeddings of every image of ``source`` (image(i)/label(i)/len); the rows of
    missing or unreadable images are NaN. Cached in memory and under ``ctx.cache_dir/images``."""

    def compute() -> torch.Tensor:
        out = None
        batches = image_batches(source, model.preprocess, ctx.batch_size, ctx.num_workers, ctx.device)
        for idx, images, _, _ in tqdm(batches, desc=desc, disable=not ctx.progress, unit="batch"):
            if images is None:
                continue
            if meter is not None:
                with meter.forward(0):
                    feats = model.encode_image(images).cpu()
            else:
                feats = model.encode_image(images).cpu()
            if out is None:
                out = torch.full((len(source), feats.shape[1]), float("nan"))
            out[idx] = feats
        return out if out is not None else torch.full((len(source), 1), float("nan"))

    return cached(model, "images", key, compute, ctx.cache_dir, subdir="images").cpu()


def texts_features(
    model, texts: Sequence[str], ctx: RunContext, meter: Throughput | None = None, desc: str = "texts"
) -> torch.Tensor:
    """(N, D) normalised embeddings of ``texts``, encoded and cached in chunks."""
    chunks = []
    for start in tqdm(range(0, len(texts), TEXT_CHUNK), desc=desc, disable=not ctx.progress, unit="chunk"):
        chunk = list(texts[start : start + TEXT_CHUNK])
        if meter is not None:
            with meter.forward(0):
                chunks.append(text_features(model, chunk, ctx.cache_dir).cpu())
        else:
            chunks.append(text_features(model, chunk, ctx.cache_dir).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


@dataclass
class RetrievalConfig:
    name: str = "retrieval"
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])

    def validate(self) -> None:
        if not self.recall_k or any(k < 1 for k in self.recall_k):
            raise ConfigError("task.recall_k", f"must be a non-empty list of k >= 1, got {self.recall_k}")


def evaluate(model, dataset, method, cfg: RetrievalConfig, ctx: RunContext) -> TaskResult:
    if not method.region_free:
        raise ConfigError("method", f"task=retrieval embeds whole images; use method=clip, not {method.cfg.name}")
    if ctx.limit is not None:
        dataset = dataset.subset(ctx.limit)
    meter = Throughput(ctx.device)
    images = image_features(model, dataset, ["retrieval", dataset.key], ctx, meter, desc="gallery")
    texts = texts_features(model, dataset.captions, ctx, meter, desc="captions")
    meter.items = len(dataset)
    meter.stop()
    readable = ~torch.isnan(images).any(dim=1)
    skipped = int((~readable).sum())
    # an unreadable image leaves the gallery together with its captions
    new_index = torch.cumsum(readable.long(), 0) - 1
    owners = torch.as_tensor(dataset.text_to_image)
    keep_text = readable[owners]
    metrics = retrieval_metrics(images[readable], texts[keep_text], new_index[owners[keep_text]].tolist(), cfg.recall_k)
    n_images, n_texts = int(readable.sum()), int(keep_text.sum())
    metric_n = {m: n_texts if m.startswith("image_retrieval") else n_images for m in metrics}
    return TaskResult(
        metrics=metrics,
        n=n_images,
        metric_n=metric_n,
        throughput=meter,
        skipped=skipped,
        skip_reasons={"missing or unreadable image": skipped} if skipped else {},
        extra={"gallery_images": n_images, "captions": n_texts},
    )


TASKS.register("retrieval", TaskSpec("retrieval", RetrievalConfig, evaluate, methods=frozenset({"clip"})))

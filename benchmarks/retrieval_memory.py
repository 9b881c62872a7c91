"""Retrieval recall in query blocks vs the former dense (texts x images) matrices: peak memory and time.

    .venv/bin/python benchmarks/retrieval_memory.py [--sizes 5000x25000,20000x100000] [--dim 512] [--quick]

Random unit embeddings, five captions per image, Recall@1/5/10 both ways with the per-query outcomes,
as task=retrieval asks for them. ``dense`` is a copy of the code before blocking, which built the score and
positive matrices twice (metrics, then outcomes); ``blocked`` is ``retrieval_results``. Each measurement
runs in a fresh process that first builds the embeddings; its peak memory is the growth of the process's
peak resident set (ru_maxrss) over its size before the call, so torch's own allocations count. Dense is
skipped where its matrices would not fit in the memory available. ``--quick``: a tiny size, for a smoke test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPTIONS_PER_IMAGE = 5
KS = (1, 5, 10)
DENSE_BYTES_PER_PAIR = 5  # float32 score + bool positive per (text, image)
MEMORY_HEADROOM = 0.7  # share of the available memory dense may be expected to use


def dense_results(image_features, text_features, text_to_image, ks):
    """clipbench's retrieval before blocking, as task=retrieval called it: metrics, then outcomes."""
    import torch

    from clipbench.metrics.uncertainty import Outcome

    def hits_at_k(scores, positives, k):
        k = min(k, scores.shape[1])
        top = scores.topk(k, dim=1).indices
        return positives.gather(1, top).any(dim=1)

    def recall_at_k(scores, positives, k):
        if scores.shape[0] == 0:
            return float("nan")
        return hits_at_k(scores, positives, k).double().mean().item()

    def ranking():
        owner = torch.as_tensor(list(text_to_image), dtype=torch.long)
        scores = text_features.float() @ image_features.float().T
        positives = torch.zeros_like(scores, dtype=torch.bool)
        positives[torch.arange(len(owner)), owner] = True
        return scores, positives, owner

    def metrics():
        scores, positives, _ = ranking()
        out = {}
        for k in ks:
            out[f"image_retrieval_recall@{k}"] = recall_at_k(scores, positives, k)
            out[f"text_retrieval_recall@{k}"] = recall_at_k(scores.T, positives.T, k)
        return out

    def outcomes():
        scores, positives, owner = ranking()
        text_ids, image_ids = [f"t{t}" for t in range(len(owner))], [f"i{i}" for i in range(scores.shape[1])]
        out = {}
        for k in ks:
            out[f"image_retrieval_recall@{k}"] = Outcome(
                hits_at_k(scores, positives, k).numpy(), cluster=owner.numpy(), sample_id=text_ids)
            out[f"text_retrieval_recall@{k}"] = Outcome(hits_at_k(scores.T, positives.T, k).numpy(), sample_id=image_ids)
        return out

    return metrics(), outcomes()


def embeddings(n_images: int, dim: int, seed: int = 0):
    """Unit image embeddings and noisy captions of them, filled in chunks (no full-size temporaries)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=gen), dim=-1)
    owner = torch.arange(n_images).repeat_interleave(CAPTIONS_PER_IMAGE)
    texts = torch.empty(len(owner), dim)
    for start in range(0, len(owner), 8192):
        block = owner[start : start + 8192]
        noisy = images[block] + 1.5 * torch.randn(len(block), dim, generator=gen) / dim**0.5
        texts[start : start + len(block)] = torch.nn.functional.normalize(noisy, dim=-1)
    return images, texts, owner.tolist()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(path: str, n_images: int, dim: int) -> dict:
    """One path in this process: seconds, peak memory growth (MB) and the recalls."""
    from clipbench.metrics.retrieval import retrieval_results

    images, texts, owner = embeddings(n_images, dim)
    run = dense_results if path == "dense" else retrieval_results
    before = rss_mb()
    t0 = time.perf_counter()
    metrics, outcomes = run(images, texts, owner, KS)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    hits = {m: outcomes[m].values.tolist() for m in sorted(outcomes)}
    return {"seconds": seconds, "peak_mb": max(peak - before, 0.0), "metrics": metrics, "hits": hashlib.sha256(json.dumps(hits).encode()).hexdigest()}


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 1024


def in_fresh_process(path: str, n_images: int, dim: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, str(n_images), str(dim)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{path} at {n_images} images failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000x25000,20000x100000", help="images x texts, comma-separated")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="one tiny size (400 x 2000, 64-d)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))
        path, n_images, dim = args.worker
        print(json.dumps(measure(path, int(n_images), int(dim))))
        return
    sizes, dim = (["400x2000"], 64) if args.quick else (args.sizes.split(","), args.dim)
    print(f"| path | images | texts | peak MB | seconds | ({dim}-d float32, Recall@{'/'.join(map(str, KS))} both ways + outcomes)")
    print("|---|---|---|---|---|")
    notes = []
    for size in sizes:
        n_images, n_texts = (int(x) for x in size.split("x"))
        if n_texts != CAPTIONS_PER_IMAGE * n_images:
            sys.exit(f"--sizes: {size}: texts must be {CAPTIONS_PER_IMAGE} x images")
        blocked = in_fresh_process("blocked", n_images, dim)
        print(f"| blocked | {n_images} | {n_texts} | {blocked['peak_mb']:.0f} | {blocked['seconds']:.1f} |")
        need_mb = DENSE_BYTES_PER_PAIR * n_images * n_texts / 2**20
        if need_mb > MEMORY_HEADROOM * available_mb():
            print(f"| dense | {n_images} | {n_texts} | skipped | skipped |")
            notes.append(f"{size}: dense skipped, its matrices need ~{need_mb / 1024:.1f} GB, "
                         f"{available_mb() / 1024:.1f} GB available")
            continue
        dense = in_fresh_process("dense", n_images, dim)
        print(f"| dense | {n_images} | {n_texts} | {dense['peak_mb']:.0f} | {dense['seconds']:.1f} |")
        same = dense["metrics"] == blocked["metrics"] and dense["hits"] == blocked["hits"]
        notes.append(f"{size}: dense / blocked peak memory {dense['peak_mb'] / max(blocked['peak_mb'], 1):.1f}x, "
                     f"time {dense['seconds'] / blocked['seconds']:.2f}x; recalls identical: {'yes' if same else 'NO'}")
    print("\n".join(notes))


if __name__ == "__main__":
    main()

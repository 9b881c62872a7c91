"""Zero-shot classification: clipbench vs clip_benchmark vs a bare forward loop, same model and data.

    python benchmarks/zeroshot_vs_clip_benchmark.py [--arch ViT-B-32] [--n 2000] [--batch-size 64]

Generates a CIFAR-100-format set of N images (100 classes), evaluates it with clipbench's zero-shot task
(cold and warm text cache), with clip_benchmark's `zero_shot_classifier` + `run_classification`, and with a
bare `encode_image` loop over pre-processed tensors (the ceiling). Prints top1 from each (clipbench and
clip_benchmark must agree exactly) and the throughput ratios. Random-init weights: only speed and agreement
are measured here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipbench.config.methods import MethodConfig
from clipbench.config.tasks import ZeroShotConfig
from clipbench.data.classification import Cifar100
from clipbench.data.templates import CIFAR_TEMPLATES
from clipbench.methods.clip import ClipMethod
from clipbench.models import load_model, text_cache
from clipbench.results.table import format_table
from clipbench.runtime import peak_memory_mb
from clipbench.tasks.base import RunContext
from clipbench.tasks.zeroshot import evaluate
from clipbench.toy.writers.classification import write_cifar100


def make_dataset(root: Path, n: int, seed: int = 0) -> Cifar100:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 100, n).tolist()
    palette = rng.integers(0, 256, (100, 3))
    images = np.clip(palette[labels][:, None, None, :] + rng.normal(0, 40, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    write_cifar100(root, "test", images, labels, [f"object number {i}" for i in range(100)])
    return Cifar100(root, "test", check_integrity=False)


class TorchDataset(torch.utils.data.Dataset):
    """The (tensor, label) dataset clip_benchmark expects."""

    def __init__(self, ds: Cifar100, transform):
        self.ds, self.transform = ds, transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.transform(self.ds.image(i)), self.ds.label(i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = load_model(args.arch, None, device=device)
    tmp = Path(tempfile.mkdtemp(prefix="zs-bench-"))
    ds = make_dataset(tmp, args.n)
    ctx = RunContext(device=device, batch_size=args.batch_size, num_workers=args.workers, cache_dir=None, progress=False)
    cfg = ZeroShotConfig(templates="cifar")
    method = ClipMethod(MethodConfig(), model)
    rows = []

    t0 = time.perf_counter()
    cold = evaluate(model, ds, method, cfg, ctx)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = evaluate(model, ds, method, cfg, ctx)  # text classifier from the in-memory cache
    t_warm = time.perf_counter() - t0
    text_cache._MEMORY.clear()

    loader = torch.utils.data.DataLoader(
        TorchDataset(ds, model.preprocess), batch_size=args.batch_size, num_workers=args.workers
    )
    t0 = time.perf_counter()
    templates = [t.replace("{}", "{c}") for t in CIFAR_TEMPLATES]
    classifier = zero_shot_classifier(model.model, model.tokenizer, ds.classnames, templates, "cpu", amp=False)
    logits, target = run_classification(model.model, classifier, loader, "cpu", amp=False)
    t_cb = time.perf_counter() - t0
    cb_top1 = (logits.argmax(1) == target).float().mean().item()

    images = torch.stack([model.preprocess(ds.image(i)) for i in range(len(ds))])
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), args.batch_size):
            F.normalize(model.model.encode_image(images[i : i + args.batch_size]), dim=-1)
    t_bare = time.perf_counter() - t0

    n = len(ds)
    rows = [
        {"path": "clipbench (cold text cache)", "top1": cold.metrics["top1"], "seconds": t_cold, "items_per_s": n / t_cold},
        {"path": "clipbench (warm text cache)", "top1": warm.metrics["top1"], "seconds": t_warm, "items_per_s": n / t_warm},
        {"path": "clip_benchmark", "top1": cb_top1, "seconds": t_cb, "items_per_s": n / t_cb},
        {"path": "bare encode_image loop", "top1": None, "seconds": t_bare, "items_per_s": n / t_bare},
    ]
    print(f"{args.arch} random-init, {n} images at {model.geometry.image_size}px, batch {args.batch_size}, "
          f"{args.workers} workers, {torch.get_num_threads()} threads; peak RSS {peak_memory_mb(device):.0f} MB")
    print(format_table(rows, ["path", "top1", "seconds", "items_per_s"]))
    agree = cold.metrics["top1"] == cb_top1
    # untimed per-sample check: same argmax, same cosines (clip_benchmark scales by 100, clipbench by logit_scale)
    check = evaluate(model, ds, method, cfg, RunContext(device=device, batch_size=args.batch_size, num_workers=0,
                                                         limit=256, save_predictions=True, progress=False))
    ours = torch.tensor([json.loads(r["scores"]) for r in check.predictions]) / model.logit_scale
    theirs = logits[: len(ours)] / 100.0
    same_pred = (ours.argmax(1) == theirs.argmax(1)).float().mean().item()
    max_cos_diff = (ours - theirs).abs().max().item()
    print(f"top1 agreement clipbench vs clip_benchmark: {'exact' if agree else 'DIFFERENT'}; first {len(ours)} samples: "
          f"same argmax {same_pred:.4f}, max |cosine difference| {max_cos_diff:.2e}, "
          f"{ours.argmax(1).unique().numel()} distinct predicted classes")
    print(f"clipbench_vs_clip_benchmark={t_cb / t_cold:.3f}")
    print(f"clipbench_warm_vs_clip_benchmark={t_cb / t_warm:.3f}")
    print(f"clipbench_vs_bare_forward={t_bare / t_cold:.3f}")
    print(f"clipbench_warm_vs_bare_forward={t_bare / t_warm:.3f}")
    if not agree or same_pred < 1.0:
        raise SystemExit("predictions differ between clipbench and clip_benchmark")


if __name__ == "__main__":
    main()

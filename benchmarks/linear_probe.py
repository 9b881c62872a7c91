"""Linear probe: clipbench's fit vs clip_benchmark's on the same cached features, and the probe's feature pass
vs the zero-shot pass over the same images.

    python benchmarks/linear_probe.py [--n-train 2000] [--n-val 500] [--n-test 1000] [--classes 20] [--dim 512]
                                      [--noise 2.0] [--epochs 10] [--images 600] [--quick]

Fit: generated unit-length features (Gaussian class clusters), clip_benchmark's protocol with a validation
split (the weight-decay search over logspace(-6, 2, 97), then the final fit on train + val), once through
``clip_benchmark.metrics.linear_probe.evaluate`` (its features written to its cache files first; without a GPU
its .cuda() moves stay on the CPU, see ``cpu_as_cuda``) and once through clipbench's fit. The two must give
identical predictions; the table gives their seconds and the ratio.
Extraction: the bundled toy model over a generated image-folder split, clipbench's zero-shot pass (text
classifier already cached) and the linear probe's feature pass (one pass, nothing cached): items/s and ratio.
Absolute times on a shared CPU are noise; the ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipbench.results.table import format_table


@contextlib.contextmanager
def cpu_as_cuda():
    """clip_benchmark's linear_probe.evaluate asserts device == 'cuda' and moves modules and tensors with .cuda()
    and .to('cuda'). Inside this block those moves stay on the CPU (Module.cuda and Tensor.cuda return self,
    Tensor.to maps 'cuda' to 'cpu'; DataParallel without CUDA calls its module directly), and its accuracy(),
    whose float() of a 1-element array numpy >= 2.3 refuses, takes the count as a scalar (the same steps)."""
    from clip_benchmark.metrics import linear_probe

    original = torch.Tensor.to, torch.Tensor.cuda, torch.nn.Module.cuda, linear_probe.accuracy

    def to(self, *args, **kwargs):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
            kwargs["device"] = "cpu"
        return original[0](self, *args, **kwargs)

    def accuracy(output, target, topk=(1,)):
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [float(correct[:k].reshape(-1).float().sum()) / len(target) for k in topk]

    torch.Tensor.to, torch.Tensor.cuda, torch.nn.Module.cuda = to, lambda self, *a, **k: self, lambda self, *a, **k: self
    linear_probe.accuracy = accuracy
    try:
        yield
    finally:
        torch.Tensor.to, torch.Tensor.cuda, torch.nn.Module.cuda, linear_probe.accuracy = original


def clusters(n: int, classes: int, dim: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-length features around one N(0, 1) centre per class, with N(0, noise) per dimension."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 1, (classes, dim))
    labels = np.arange(n) % classes
    x = torch.tensor(centres[labels] + rng.normal(0, noise, (n, dim)), dtype=torch.float32)
    return torch.nn.functional.normalize(x, dim=-1), torch.tensor(labels)


def clip_benchmark_fit(splits: dict, epochs: int, batch: int, seed: int, root: Path):
    """clip_benchmark's evaluate on cached features; its final head's test logits and its seconds."""
    from clip_benchmark.metrics import linear_probe

    feature_dir = root / "model"
    feature_dir.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in splits.items():
        torch.save(x, feature_dir / f"features_{split}.pt")
        torch.save(y, feature_dir / f"targets_{split}.pt")
    heads, original = [], linear_probe.train
    linear_probe.train = lambda *a, **k: heads.append(original(*a, **k)) or heads[-1]
    cuda = torch.cuda.is_available()
    try:
        with contextlib.nullcontext() if cuda else cpu_as_cuda(), contextlib.redirect_stdout(sys.stderr):
            torch.manual_seed(seed)
            started = time.perf_counter()
            metrics = linear_probe.evaluate(None, None, None, -1, batch, 0, 0.1, epochs, "model", seed, str(root),
                                            device="cuda", val_dataloader=object(), normalize=True, amp=False)
            seconds = time.perf_counter() - started
    finally:
        linear_probe.train = original
    with torch.no_grad():
        logits = heads[-1](splits["test"][0].to("cuda" if cuda else "cpu")).cpu()
    return logits, metrics["weight_decay"], seconds


def clipbench_fit(splits: dict, epochs: int, batch: int, seed: int):
    from clipbench.config.tasks import LinearProbeConfig
    from clipbench.probe.fit import Split, fit_clip_benchmark
    from clipbench.probe.splits import shot_subset

    cfg = LinearProbeConfig(val_split="val", epochs=epochs, batch_size=batch, amp=False, seeds=[seed])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    train = Split(*splits["train"])
    order = torch.as_tensor(shot_subset(train.targets, -1, seed))
    fit = fit_clip_benchmark(Split(train.features[order], train.targets[order]), Split(*splits["val"]),
                             splits["test"][0], cfg, seed, False, device)
    return fit.logits, fit.value, time.perf_counter() - started


def fit_rows(args) -> tuple[list[dict], bool]:
    splits = {s: clusters(n, args.classes, args.dim, seed, args.noise) for s, n, seed in
              (("train", args.n_train, 1), ("val", args.n_val, 2), ("test", args.n_test, 3))}
    with tempfile.TemporaryDirectory() as tmp:
        cb_logits, cb_wd, cb_seconds = clip_benchmark_fit(splits, args.epochs, args.batch_size, 0, Path(tmp))
    ours, wd, seconds = clipbench_fit(splits, args.epochs, args.batch_size, 0)
    same = torch.equal(ours.argmax(1), cb_logits.argmax(1)) and wd == cb_wd
    target = splits["test"][1]
    rows = [
        {"fit": "clip_benchmark linear_probe.evaluate", "weight_decay": cb_wd, "top1": (cb_logits.argmax(1) == target).double().mean().item(),
         "seconds": cb_seconds, "ratio": 1.0},
        {"fit": "clipbench", "weight_decay": wd, "top1": (ours.argmax(1) == target).double().mean().item(),
         "seconds": seconds, "ratio": cb_seconds / seconds},
    ]
    return rows, same


def extraction_rows(args) -> list[dict]:
    from clipbench.config import ASSETS_DIR
    from clipbench.config.methods import MethodConfig
    from clipbench.config.tasks import ZeroShotConfig
    from clipbench.data.classification import ImageFolder
    from clipbench.methods.clip import ClipMethod
    from clipbench.models import load_model
    from clipbench.probe.features import extract
    from clipbench.runtime import Throughput
    from clipbench.tasks.base import RunContext
    from clipbench.tasks.zeroshot import evaluate as zero_shot
    from clipbench.toy.make_world import write_probe_set

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model("toyclip", str(ASSETS_DIR / "toyclip.safetensors"), device=device)
    ctx = RunContext(device=device, batch_size=args.batch_size, num_workers=0, progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_probe_set(Path(tmp), 0, {"probe_train": 8, "probe_val": 8, "probe_test": args.images})
        data = ImageFolder(Path(tmp) / "linprobe", "test")
        method, cfg = ClipMethod(MethodConfig(), model), ZeroShotConfig(templates="simple")
        zero_shot(model, data, method, cfg, ctx)  # the text classifier, cached in memory from here on
        best = {"zero-shot pass (clipbench task=zeroshot)": 0.0, "linear-probe feature pass": 0.0}
        for _ in range(2):  # alternated, best of two each
            started = time.perf_counter()
            zero_shot(model, data, method, cfg, ctx)
            best["zero-shot pass (clipbench task=zeroshot)"] = max(best["zero-shot pass (clipbench task=zeroshot)"], len(data) / (time.perf_counter() - started))
            started = time.perf_counter()
            extract(model, data, True, ctx, Throughput(device), "features")
            best["linear-probe feature pass"] = max(best["linear-probe feature pass"], len(data) / (time.perf_counter() - started))
    reference = best["zero-shot pass (clipbench task=zeroshot)"]
    for path, rate in best.items():
        rows.append({"pass": path, "images": len(data), "items_per_s": rate, "ratio": rate / reference})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--noise", type=float, default=2.0, help="per-dimension noise around the class centres")
    parser.add_argument("--epochs", type=int, default=10)  # clip_benchmark's --fewshot_epochs
    parser.add_argument("--batch-size", type=int, default=64)  # clip_benchmark's --batch_size
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--quick", action="store_true", help="a few seconds: small sets, 2 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_val, args.n_test, args.classes, args.dim, args.epochs, args.images = 96, 32, 32, 4, 16, 2, 32
    fit, same = fit_rows(args)
    extraction = extraction_rows(args)
    print(f"fit: {args.n_train} train + {args.n_val} val features ({args.dim}-d, {args.classes} classes, noise {args.noise}), test "
          f"{args.n_test}, {args.epochs} epochs, batch {args.batch_size}, {torch.get_num_threads()} threads; "
          f"predictions {'identical' if same else 'DIFFERENT'}")
    print(format_table(fit, ["fit", "weight_decay", "top1", "seconds", "ratio"]))
    print("extraction (bundled toy model, image folder):")
    print(format_table(extraction, ["pass", "images", "items_per_s", "ratio"]))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"fit_speedup_vs_clip_benchmark={fit[1]['ratio']:.3f}")
    print(f"extraction_vs_zero_shot={extraction[1]['ratio']:.3f}")
    if not same:
        raise SystemExit("predictions differ between clipbench and clip_benchmark")


if __name__ == "__main__":
    main()

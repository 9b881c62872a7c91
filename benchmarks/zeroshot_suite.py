"""The zero-shot suite: clipbench vs `clip_benchmark eval` on the same generated wds datasets and model,
and clipbench end to end vs a bare model forward on pre-decoded tensors.

    python benchmarks/zeroshot_suite.py [--arch ViT-B-32] [--datasets 3] [--n 256] [--classes 100]
                                        [--templates 80] [--batch-size 64] [--workers 2] [--device auto]

Writes DATASETS wds sets (N JPEG images at 256 px, CLASSES classes, the first TEMPLATES of clip_benchmark's
80 ImageNet templates) in clip_benchmark's published layout, saves one random-init checkpoint, then times, each in a fresh
process: clipbench (model loaded once, every dataset, empty classifier cache), clipbench again with the
classifier cache a previous job left on disk, `clip_benchmark eval` over the same datasets, and a bare
`encode_image` loop over tensors decoded beforehand. Prints items/s and peak memory (RSS on CPU, CUDA
allocation on GPU) per path, the ratios, and checks that clipbench's top-1 and mean per-class recall
equal clip_benchmark's on every dataset. On CUDA both run with fp16 autocast.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fixed_clip_benchmark_accuracy():
    """clip_benchmark's ``accuracy`` with ``.item()``: its ``float(array)`` fails on numpy >= 2.4, which
    breaks its ``evaluate()``; the replacement changes nothing else."""
    from clip_benchmark.metrics import zeroshot_classification

    def accuracy(output, target, topk=(1,)):
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]

    zeroshot_classification.accuracy = accuracy


CAPTION_METRICS = {"tokenizer.ptbtokenizer": "PTBTokenizer", "bleu.bleu": "Bleu", "meteor.meteor": "Meteor",
                   "rouge.rouge": "Rouge", "cider.cider": "Cider", "spice.spice": "Spice"}


def without_caption_metrics() -> None:
    """``clip_benchmark eval`` imports pycocoevalcap on start-up (clip_benchmark/metrics/captioning.py), a 104 MB
    wheel used only by its captioning task; where it is not installed, empty stand-ins let the rest run."""
    import importlib.util
    import types

    if importlib.util.find_spec("pycocoevalcap") is not None:
        return
    for path, name in CAPTION_METRICS.items():
        parts = f"pycocoevalcap.{path}".split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        setattr(sys.modules[f"pycocoevalcap.{path}"], name, None)


def names(args) -> list[str]:
    return [f"wds/suite_{i}" for i in range(args.datasets)]


def run_clipbench(args, device: torch.device) -> dict:
    from clipbench.config.methods import MethodConfig
    from clipbench.config.tasks import ZeroShotConfig
    from clipbench.data.catalogue import ClipBenchmarkConfig, build_clip_benchmark
    from clipbench.methods.clip import ClipMethod
    from clipbench.models import load_model
    from clipbench.tasks.base import RunContext
    from clipbench.tasks.zeroshot import evaluate

    t0 = time.perf_counter()
    model = load_model(args.arch, args.checkpoint, "fp16" if device.type == "cuda" else "fp32", device)
    ctx = RunContext(device=device, batch_size=args.batch_size, num_workers=args.workers, cache_dir=args.cache_dir, progress=False)
    metrics, items = {}, 0
    for name in names(args):
        dataset = build_clip_benchmark(ClipBenchmarkConfig(name=name, root=args.data))
        result = evaluate(model, dataset, ClipMethod(MethodConfig(), model), ZeroShotConfig(), ctx)
        metrics[name] = {"top1": result.metrics["top1"], "mean_per_class_recall": result.metrics["mean_per_class_recall"]}
        items += result.n
    return {"seconds": time.perf_counter() - t0, "items": items, "metrics": metrics}


def run_clip_benchmark(args, device: torch.device) -> dict:
    without_caption_metrics()
    from clip_benchmark import cli

    fixed_clip_benchmark_accuracy()
    out = Path(args.cache_dir) / "{dataset}.json"
    argv = ["clip_benchmark", "eval", "--dataset", *names(args), "--dataset_root", f"{args.data}/wds_{{dataset_cleaned}}",
            "--model", args.arch, "--pretrained", args.checkpoint, "--task", "zeroshot_classification",
            "--batch_size", str(args.batch_size), "--num_workers", str(args.workers), "--output", str(out), "--quiet"]
    if device.type != "cuda":  # it picks CUDA by itself when there is one
        argv.append("--no_amp")
    sys.argv = argv
    t0 = time.perf_counter()
    cli.main()
    seconds = time.perf_counter() - t0
    metrics = {}
    for name in names(args):
        data = json.loads(Path(str(out).format(dataset=name.removeprefix("wds/"))).read_text())["metrics"]
        metrics[name] = {"top1": data["acc1"], "mean_per_class_recall": data["mean_per_class_recall"]}
    return {"seconds": seconds, "items": args.n * args.datasets, "metrics": metrics}


def run_bare(args, device: torch.device) -> dict:
    from clipbench.data.catalogue import ClipBenchmarkConfig, build_clip_benchmark
    from clipbench.models import load_model

    model = load_model(args.arch, args.checkpoint, "fp16" if device.type == "cuda" else "fp32", device)
    tensors = []
    for name in names(args):
        dataset = build_clip_benchmark(ClipBenchmarkConfig(name=name, root=args.data))
        tensors += [model.preprocess(dataset.image(i)) for i in range(len(dataset))]
    images = torch.stack(tensors)
    if device.type == "cuda":
        images = images.pin_memory()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
        for i in range(0, len(images), args.batch_size):
            feats = model.model.encode_image(images[i : i + args.batch_size].to(device, non_blocking=True))
            torch.nn.functional.normalize(feats.float(), dim=-1).cpu()
    return {"seconds": time.perf_counter() - t0, "items": len(images), "metrics": {}}


PATHS = {"clipbench": run_clipbench, "clip_benchmark": run_clip_benchmark, "bare": run_bare}


def child(args) -> None:
    from clipbench.runtime import peak_memory_mb, reset_peak_memory, resolve_device

    device = resolve_device(args.device)
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    reset_peak_memory(device)
    out = PATHS[args.path](args, device)
    out["peak_mem_mb"] = peak_memory_mb(device)
    out["device"] = str(device)
    print("RESULT " + json.dumps(out))


def spawn(args, path: str, cache_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--path", path, "--data", args.data, "--checkpoint", args.checkpoint,
           "--cache-dir", str(cache_dir), "--arch", args.arch, "--datasets", str(args.datasets), "--n", str(args.n),
           "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{path} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--datasets", type=int, default=3)
    parser.add_argument("--n", type=int, default=256, help="images per dataset")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--templates", type=int, default=80, help="the first T of clip_benchmark's 80 ImageNet templates")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--path", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    return parser


def prepare(args, tmp: Path) -> list[str]:
    """Writes the wds sets and the random-init checkpoint under ``tmp``; returns the templates used."""
    from clip_benchmark.datasets import builder

    from clipbench.models import load_model
    from clipbench.toy.writers.catalogue import write_generated_suite

    templates = json.loads((Path(builder.__file__).parent / "en_zeroshot_classification_templates.json").read_text())["imagenet1k"][: args.templates]
    suite = {name.removeprefix("wds/"): args.classes for name in names(args)}
    write_generated_suite(tmp / "data", suite, n=args.n, size=256, templates=templates, image_format="jpg", shard_size=max(1, args.n // 4))
    torch.manual_seed(0)
    model = load_model(args.arch, None, device="cpu", reuse=False)
    args.checkpoint = str(tmp / "random_init.pt")
    torch.save(model.model.state_dict(), args.checkpoint)
    args.data = str(tmp / "data")
    return templates


def measure(args, tmp: Path) -> dict[str, dict]:
    """Each path in its own process: seconds, items, peak_mem_mb, device and (where scored) metrics per dataset."""
    return {
        "clipbench": spawn(args, "clipbench", tmp / "cache"),
        "clipbench (classifier cached by an earlier job)": spawn(args, "clipbench", tmp / "cache"),
        "clip_benchmark eval": spawn(args, "clip_benchmark", tmp / "cb"),
        "bare encode_image on pre-decoded tensors": spawn(args, "bare", tmp / "bare"),
    }


def differences(results: dict[str, dict]) -> list[str]:
    """Where clipbench's top-1 or mean per-class recall differs from clip_benchmark's (both float64)."""
    ours, theirs = results["clipbench"], results["clip_benchmark eval"]
    return [
        f"{d} {m}: clipbench {ours['metrics'][d][m]!r}, clip_benchmark {theirs['metrics'][d][m]!r}, "
        f"|diff| {abs(ours['metrics'][d][m] - theirs['metrics'][d][m]):.3g}"
        for d in ours["metrics"] for m in ("top1", "mean_per_class_recall")
        if abs(ours["metrics"][d][m] - theirs["metrics"][d][m]) >= 1e-9
    ]


def main() -> None:
    args = build_parser().parse_args()
    if args.path:
        return child(args)

    from clipbench.results.table import format_table

    tmp = Path(tempfile.mkdtemp(prefix="suite-bench-"))
    templates = prepare(args, tmp)
    results = measure(args, tmp)
    rows = [{"path": k, "items": r["items"], "seconds": r["seconds"], "items_per_s": r["items"] / r["seconds"],
             "peak_mem_mb": r["peak_mem_mb"]} for k, r in results.items()]
    print(f"{args.arch} random-init, {args.datasets} wds sets x {args.n} JPEG images (256 px, {args.classes} classes, "
          f"{len(templates)} templates), batch {args.batch_size}, {args.workers} workers, device {results['clipbench']['device']}")
    print(format_table(rows, ["path", "items", "seconds", "items_per_s", "peak_mem_mb"]))
    ours, theirs = results["clipbench"], results["clip_benchmark eval"]
    different = differences(results)
    for d in ours["metrics"]:
        print(f"{d}: clipbench {ours['metrics'][d]}, clip_benchmark {theirs['metrics'][d]}")
    for line in different:
        print("DIFFERENT " + line)
    rate = {k: r["items"] / r["seconds"] for k, r in results.items()}
    print(f"metrics clipbench vs clip_benchmark: {'DIFFERENT' if different else 'identical'} on {len(ours['metrics'])} datasets")
    print(f"clipbench_vs_clip_benchmark={rate['clipbench'] / rate['clip_benchmark eval']:.3f} (goal >= 1.3)")
    print(f"clipbench_cached_vs_clip_benchmark={rate['clipbench (classifier cached by an earlier job)'] / rate['clip_benchmark eval']:.3f}")
    print(f"clipbench_vs_bare_forward={rate['clipbench'] / rate['bare encode_image on pre-decoded tensors']:.3f} (goal >= 0.85)")
    print(f"clipbench_cached_vs_bare_forward={rate['clipbench (classifier cached by an earlier job)'] / rate['bare encode_image on pre-decoded tensors']:.3f}")
    if different:
        raise SystemExit("metrics differ between clipbench and clip_benchmark")

if __name__ == "__main__":
    main()

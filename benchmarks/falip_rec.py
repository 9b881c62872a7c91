"""FALIP on REC-sized work, per ViT family: the exact fast path against the per-box path, and the bias
against a plain forward.

One command, random-init towers (the timing does not depend on the weights, and nothing is downloaded), a
few images with 10 boxes each, per family: OpenAI-style open_clip ViT-B-16, SigLIP ViT-B-16 (timm, MAP
head: FALIP biases the pooling probe), EVA02-B-16 (timm, rotary blocks) and a Hugging Face CLIP B/16
(``model.source=hf``). Paths compared in the same run, interleaved, median of the repeats:

* FALIP fast (shared prefix, batched biased blocks; on open_clip's ViT also CLS-only rows) vs FALIP
  per-box (the honest straightforward path: one batched full forward of all of an image's boxes, each
  with its own bias); goal >= 3x at 10 boxes per image;
* the FALIP full forward (the bias in every box's forward) vs a plain forward of the same batch; goal
  <= 1.10x;
* red_circle (first family only): one forward per box vs all of an image's edited images in one batch.

Per path: seconds, boxes/s and peak memory (CUDA allocation on GPU, else the process's peak RSS so far).

    .venv/bin/python benchmarks/falip_rec.py [--families vit_b_16,siglip_b_16,eva02_b_16,hf_b_16]
        [--images 3] [--boxes 10] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from PIL import Image

from clipbench.methods import METHODS
from clipbench.models import LoadedModel, load_model
from clipbench.models.factory import vision_geometry
from clipbench.runtime import peak_memory_mb, reset_peak_memory, synchronize

FAMILIES = {  # name -> open_clip architecture, or "hf" for a transformers CLIP
    "vit_b_16": "ViT-B-16", "siglip_b_16": "ViT-B-16-SigLIP", "eva02_b_16": "EVA02-B-16", "hf_b_16": "hf",
}


def random_init(family: str, device: str) -> LoadedModel:
    """A random-init image tower of ``family`` without its tokenizer (SigLIP's is downloaded from the hub)."""
    arch = FAMILIES[family]
    if arch == "ViT-B-16":
        return load_model(arch, None, device=device)
    if arch == "hf":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        from clipbench.models.hf import HFCLIP, HFPreprocess

        processor = CLIPImageProcessor()
        vision = dict(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12)
        model, preprocess = HFCLIP(CLIPModel(CLIPConfig(vision_config=vision)), processor), HFPreprocess(processor)
    else:
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    model = model.to(device).eval()
    return LoadedModel(model, preprocess, None, arch, None, "fp32", torch.device(device), f"{arch}|random",
                       vision_geometry(model))


def random_scene(rng: np.random.Generator, n_boxes: int) -> tuple[Image.Image, list[list[tuple]]]:
    width, height = int(rng.integers(480, 640)), int(rng.integers(360, 480))
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    regions = []
    for _ in range(n_boxes):
        x0, y0 = rng.uniform(0, width * 0.7), rng.uniform(0, height * 0.7)
        w, h = rng.uniform(30, width - x0), rng.uniform(30, height - y0)
        regions.append([(x0, y0, x0 + w, y0 + h)])
    return image, regions


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)  # CUDA runs asynchronously: wait for the work before reading the clock
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_mb(fn, device: torch.device) -> float:
    """The peak memory of one call (CUDA allocation; on CPU the process's peak RSS so far)."""
    reset_peak_memory(device)
    fn()
    synchronize(device)
    return peak_memory_mb(device)


def interleaved(fns: dict, repeats: int, device: torch.device) -> dict[str, tuple[float, float]]:
    """Median seconds and peak MB per path, the paths alternating so that background load hits them alike."""
    peaks = {name: peak_mb(fn, device) for name, fn in fns.items()}  # also the warm-up
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(median_seconds(fn, 1, device))
    return {name: (statistics.median(ts), peaks[name]) for name, ts in samples.items()}


def measure_family(loaded, scenes, repeats: int, with_red_circle: bool) -> dict[str, tuple[float, float]]:
    images = [im for im, _ in scenes]
    regions = [regs for _, regs in scenes]

    def method(name: str, **overrides):
        spec = METHODS.get(name)
        cfg = spec.config(**overrides)
        cfg.validate()
        return spec.build(cfg, loaded)

    fast, per_box = method("falip", fast=True), method("falip", fast=False)
    paths = {
        "falip fast": lambda: fast.encode_regions(images, regions),
        "falip per-box": lambda: per_box.encode_regions(images, regions),
    }
    if with_red_circle and "red_circle" in METHODS:
        red_circle = method("red_circle")
        paths["red_circle per-box"] = lambda: [red_circle.encode_regions([im], [[r]]) for im, regs in scenes for r in regs]
        paths["red_circle batched"] = lambda: red_circle.encode_regions(images, regions)
    # the same batch of box inputs through a plain forward and through the FALIP full forward with biases
    batch = torch.stack([fast.transform(im) for im, regs in scenes for _ in regs]).to(loaded.device)
    weights = torch.stack([fast.patch_weights(im, r) for im, regs in scenes for r in regs])
    paths["plain forward"] = lambda: loaded.encode_image(batch)
    paths["falip forward"] = lambda: per_box.encode_with_weights(batch, weights)
    return interleaved(paths, repeats, loaded.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, from {list(FAMILIES)}")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    return parser


def measure(args) -> list[dict]:
    """One row per (family, path): seconds (median), boxes_per_s and peak_mem_mb."""
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng, args.boxes) for _ in range(args.images)]
    n_boxes = sum(len(regs) for _, regs in scenes)
    rows = []
    for k, family in enumerate(args.families.split(",")):
        loaded = random_init(family, args.device)
        for path, (sec, peak) in measure_family(loaded, scenes, args.repeats, with_red_circle=k == 0).items():
            rows.append({"family": family, "arch": loaded.arch, "path": path, "seconds": sec,
                         "boxes_per_s": n_boxes / sec, "peak_mem_mb": peak})
        del loaded
    return rows


def main() -> None:
    args = build_parser().parse_args()
    rows = measure(args)
    print(f"random init, {args.images} images x {args.boxes} boxes, {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    summary = []
    for family in dict.fromkeys(row["family"] for row in rows):
        seconds = {row["path"]: row["seconds"] for row in rows if row["family"] == family}
        arch = next(row["arch"] for row in rows if row["family"] == family)
        print(f"\n{family} ({arch})\n{'path':<22}{'seconds':>10}{'boxes/s':>10}{'peak MB':>10}")
        for row in rows:
            if row["family"] == family:
                print(f"{row['path']:<22}{row['seconds']:>10.3f}{row['boxes_per_s']:>10.1f}{row['peak_mem_mb']:>10.0f}")
        if "red_circle batched" in seconds:
            print(f"red_circle_batched_vs_per_box={seconds['red_circle per-box'] / seconds['red_circle batched']:.2f}")
        fast_vs_box = seconds["falip per-box"] / seconds["falip fast"]
        forward_vs_plain = seconds["falip forward"] / seconds["plain forward"]
        summary.append((family, fast_vs_box, forward_vs_plain, seconds["plain forward"] / seconds["falip fast"]))
    print(f"\n{'family':<14}{'fast_vs_per_box':>16}{'forward_vs_plain':>18}{'fast_vs_plain':>15}   (goals >= 3, <= 1.10)")
    for family, a, b, c in summary:
        print(f"{family:<14}{a:>16.2f}{b:>18.3f}{c:>15.2f}")


if __name__ == "__main__":
    main()

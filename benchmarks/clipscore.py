"""clipbench's CLIP-S against torchmetrics' CLIPScore on the same weights and images, in one run.

    .venv/bin/python benchmarks/clipscore.py [--images 48] [--captions 5] [--repeats 2]

No weights can be downloaded here, so both sides get the same random-init CLIP: a small Hugging Face
``CLIPModel`` (what torchmetrics needs; quick-GELU, 224 px, patch 32) whose weights are converted into
an open_clip model of matching shape and loaded by clipbench from a .safetensors file. The HF
tokenizer is built from open_clip's own BPE vocabulary. torchmetrics gets the texts with the
"A photo depicts " prefix and its 100 x cosine is rescaled to 2.5 x; per-instance values must agree.

Throughput: a Flickr8k-like set (each image scored with several captions). clipbench runs its
task=clipscore path from image files (each image and each text encoded once, batched); torchmetrics
runs ``CLIPScore.update`` on batches of (image, caption) pairs from images already in memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
WIDTH, LAYERS, HEADS, EMBED = 128, 4, 2, 64
ARCH = "bench-clip-quickgelu"
AGREE_TOL = 1e-3  # CLIP-S units; the two image pipelines differ only in float rounding
WORDS = "a man woman dog cat red blue small big runs sits on the in grass beach street ball with near".split()


def hf_model_and_processor(seed: int):
    """A random-init HF CLIPModel, a shared direction added so cosines fall on both sides of 0."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    class FeatureCLIP(CLIPModel):
        """transformers 5 returns output objects from get_*_features; torchmetrics 1.9 expects tensors."""

        def get_image_features(self, *args, **kwargs):
            out = super().get_image_features(*args, **kwargs)
            return getattr(out, "pooler_output", out)

        def get_text_features(self, *args, **kwargs):
            out = super().get_text_features(*args, **kwargs)
            return getattr(out, "pooler_output", out)

    torch.manual_seed(seed)
    common = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  hidden_act="quick_gelu")
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407, **common),
        vision_config=dict(image_size=224, patch_size=32, **common),
        projection_dim=EMBED,
    )
    model = FeatureCLIP(config).eval()
    u = torch.nn.functional.normalize(torch.randn(EMBED), dim=0)
    with torch.no_grad():
        model.visual_projection.weight += 0.012 * u[:, None] * torch.ones(1, WIDTH)
        model.text_projection.weight += 0.03 * u[:, None] * torch.ones(1, WIDTH)
        model.vision_model.post_layernorm.bias.fill_(1.0)
        model.text_model.final_layer_norm.bias.fill_(1.0)
    bpe = SimpleTokenizer()
    vocab = dict(bpe.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    merges = [pair for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    images = CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
        crop_size={"height": 224, "width": 224}, do_rescale=True, do_normalize=True,
        image_mean=OPENAI_MEAN, image_std=OPENAI_STD, do_convert_rgb=True,
    )
    return model, CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def open_clip_state(hf_state: dict) -> dict:
    """HF CLIPModel weights renamed and reshaped to open_clip's CLIP."""
    out = {"logit_scale": hf_state["logit_scale"]}
    for tower, dst in (("vision_model", "visual.transformer"), ("text_model", "transformer")):
        for i in range(LAYERS):
            src = f"{tower}.encoder.layers.{i}."
            block = f"{dst}.resblocks.{i}."
            for kind in ("weight", "bias"):
                out[block + f"attn.in_proj_{kind}"] = torch.cat(
                    [hf_state[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"]
                )
                out[block + f"attn.out_proj.{kind}"] = hf_state[src + f"self_attn.out_proj.{kind}"]
                out[block + f"ln_1.{kind}"] = hf_state[src + f"layer_norm1.{kind}"]
                out[block + f"ln_2.{kind}"] = hf_state[src + f"layer_norm2.{kind}"]
                out[block + f"mlp.c_fc.{kind}"] = hf_state[src + f"mlp.fc1.{kind}"]
                out[block + f"mlp.c_proj.{kind}"] = hf_state[src + f"mlp.fc2.{kind}"]
    v = "vision_model."
    out["visual.class_embedding"] = hf_state[v + "embeddings.class_embedding"]
    out["visual.conv1.weight"] = hf_state[v + "embeddings.patch_embedding.weight"]
    out["visual.positional_embedding"] = hf_state[v + "embeddings.position_embedding.weight"]
    out["visual.proj"] = hf_state["visual_projection.weight"].T
    t = "text_model."
    out["token_embedding.weight"] = hf_state[t + "embeddings.token_embedding.weight"]
    out["positional_embedding"] = hf_state[t + "embeddings.position_embedding.weight"]
    out["text_projection"] = hf_state["text_projection.weight"].T
    for kind in ("weight", "bias"):
        out[f"visual.ln_pre.{kind}"] = hf_state[v + f"pre_layrnorm.{kind}"]
        out[f"visual.ln_post.{kind}"] = hf_state[v + f"post_layernorm.{kind}"]
        out[f"ln_final.{kind}"] = hf_state[t + f"final_layer_norm.{kind}"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def write_arch(folder: Path) -> None:
    config = {
        "embed_dim": EMBED, "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": LAYERS, "width": WIDTH, "patch_size": 32, "head_width": WIDTH // HEADS},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": WIDTH, "heads": HEADS, "layers": LAYERS},
    }
    (folder / f"{ARCH}.json").write_text(json.dumps(config))


def make_data(folder: Path, n_images: int, n_captions: int, seed: int):
    """Images of mixed sizes named like Flickr8k, and several captions per image."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [(500, 375), (333, 500), (320, 240), (224, 224)]
    ids, captions = [], {}
    for i in range(n_images):
        w, h = sizes[i % len(sizes)]
        im = Image.fromarray(np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8))
        ImageDraw.Draw(im).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        image_id = f"{1000268201 + 7919 * i}_{rng.integers(0, 16**10):010x}"
        im.save(folder / f"{image_id}.jpg", quality=92)
        ids.append(image_id)
        captions[image_id] = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 14)))) for _ in range(n_captions)]
    return ids, captions


def clipbench_scores(model, images_dir: Path, ids, captions, batch_size: int):
    """clipbench's task=clipscore path on (image, caption) pairs: (CLIP-S per pair, raw cosine per pair)."""
    from clipbench.config.methods import MethodConfig
    from clipbench.config.tasks import ClipScoreConfig
    from clipbench.data.clipscore_corpora import CaptionSet, JudgedCaption
    from clipbench.methods.clip import ClipMethod
    from clipbench.models import text_cache
    from clipbench.tasks.base import RunContext
    from clipbench.tasks.clipscore import _encode, evaluate

    items = [JudgedCaption(i, c, []) for i in ids for c in captions[i]]
    dataset = CaptionSet("bench", {i: images_dir / f"{i}.jpg" for i in ids}, "score", items)
    ctx = RunContext(device=torch.device("cpu"), batch_size=batch_size, num_workers=0, progress=False)
    text_cache._MEMORY.clear()  # cold: nothing cached from an earlier repeat
    cfg = ClipScoreConfig(scorers=["clip_s"])
    t0 = time.perf_counter()
    result = evaluate(model, dataset, ClipMethod(MethodConfig(), model), cfg, ctx)
    seconds = time.perf_counter() - t0
    from clipbench.runtime import Throughput

    enc = _encode(model, dataset, [it.candidate for it in items], [it.image_id for it in items],
                  [[] for _ in items], cfg, ctx, Throughput(ctx.device))
    return seconds, result, enc.cosine.numpy()


def torchmetrics_scores(model, processor, image_tensors, texts, batch_size: int):
    from torchmetrics.multimodal.clip_score import CLIPScore

    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch_size):
        metric.update(image_tensors[s : s + batch_size], texts[s : s + batch_size])
    mean = float(metric.compute())
    return time.perf_counter() - t0, mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--captions", type=int, default=5, help="captions scored per image")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from clipbench.cli import _QuietOpenClip

    logging.getLogger().addFilter(_QuietOpenClip())
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="clipscore-bench-"))
    write_arch(work)
    os.environ["CLIPBENCH_MODEL_CONFIGS"] = os.pathsep.join(
        filter(None, [os.environ.get("CLIPBENCH_MODEL_CONFIGS"), str(work)])
    )
    from PIL import Image
    from safetensors.torch import save_file
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    from clipbench.metrics.clipscore import PREFIX
    from clipbench.models import load_model

    hf_model, processor = hf_model_and_processor(args.seed)
    save_file(open_clip_state(hf_model.state_dict()), str(work / "weights.safetensors"))
    model = load_model(ARCH, str(work / "weights.safetensors"), "fp32", "cpu")
    ids, captions = make_data(work / "images", args.images, args.captions, args.seed)
    pair_ids = [i for i in ids for _ in captions[i]]
    texts = [PREFIX + c for i in ids for c in captions[i]]
    loaded = {i: torch.from_numpy(np.array(Image.open(work / "images" / f"{i}.jpg").convert("RGB"))).permute(2, 0, 1)
              for i in ids}
    pair_images = [loaded[i] for i in pair_ids]
    print(f"{len(ids)} images x {args.captions} captions = {len(texts)} pairs; model {ARCH} "
          f"(width {WIDTH}, {LAYERS} layers, 224 px), cpu, {torch.get_num_threads()} threads")

    # agreement, per instance
    _, result, cosine = clipbench_scores(model, work / "images", ids, captions, args.batch_size)
    with torch.no_grad():
        tm_raw = torch.cat([
            _clip_score_update(pair_images[s : s + args.batch_size], texts[s : s + args.batch_size], hf_model, processor)[0]
            for s in range(0, len(texts), args.batch_size)
        ]).numpy()
    ours = 2.5 * np.clip(cosine, 0, None)
    theirs = 2.5 * np.clip(tm_raw / 100.0, 0, None)
    print(f"per-instance raw cosine: max |clipbench - torchmetrics/100| = {np.abs(cosine - tm_raw / 100).max():.2e}")
    worst = np.abs(ours - theirs).max()
    print(f"per-instance CLIP-S (w=2.5): max |diff| = {worst:.2e} ({'agree' if worst < AGREE_TOL else 'DISAGREE'} "
          f"within {AGREE_TOL:g}); {int((ours > 0).sum())}/{len(ours)} positive")
    print(f"corpus: clipbench clip_s_w2.5 = {result.metrics['clip_s_w2.5']:.5f} (mean of clamped); "
          f"torchmetrics CLIPScore = {float(max(tm_raw.mean(), 0)):.4f} (100x, clamps only the mean)")

    # throughput
    ours_s, theirs_s = [], []
    for _ in range(args.repeats):
        seconds, _, _ = clipbench_scores(model, work / "images", ids, captions, args.batch_size)
        ours_s.append(seconds)
        with torch.no_grad():
            seconds, _ = torchmetrics_scores(hf_model, processor, pair_images, texts, args.batch_size)
        theirs_s.append(seconds)
    a, b = min(ours_s), min(theirs_s)
    print(f"{'':<28}{'seconds':>9}{'pairs/s':>10}")
    print(f"{'clipbench task=clipscore':<28}{a:>9.2f}{len(texts) / a:>10.1f}")
    print(f"{'torchmetrics CLIPScore':<28}{b:>9.2f}{len(texts) / b:>10.1f}")
    print(f"throughput ratio clipbench / torchmetrics: {b / a:.2f}x (best of {args.repeats})")


if __name__ == "__main__":
    main()

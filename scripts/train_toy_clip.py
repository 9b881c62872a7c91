"""Train the bundled toy CLIP (``clipbench/assets/toyclip.safetensors``) from scratch on the toy world.

The shipped file came from three sessions (seed 0; about 95 minutes in all on 2 shared CPU cores). The
first two ran an earlier version of this script (before size pairs, and with hard scenes without twins):

    python scripts/train_toy_clip.py --steps 1600 --minutes 55 --threads 1
    python scripts/train_toy_clip.py --resume --steps 3000 --lr 1e-3 --minutes 14

The third fine-tuned the file they wrote, saved as ``toyclip_v1.safetensors``, with this version, adding
the big/small pairs:

    python scripts/train_toy_clip.py --init toyclip_v1.safetensors --steps 1800 --lr 1e-3 --warmup 50 \
        --minutes 36 --threads 1 --eval-every 200

Only the final file ships (a wheel, a source archive or a shallow clone holds nothing older). In a git
clone with its history, the earlier script and ``toyclip_v1.safetensors`` are those of commit adccf54
(``git show adccf54:clipbench/assets/toyclip.safetensors > toyclip_v1.safetensors``). With any install,
every session's settings can be read from the shipped file's safetensors metadata:

    python -c "import clipbench, pathlib; from safetensors import safe_open; \
        print(safe_open(str(pathlib.Path(clipbench.__file__).parent / 'assets' / 'toyclip.safetensors'), 'pt').metadata())"

For a quick look at training: ``python scripts/train_toy_clip.py --steps 300 --out /tmp/toyclip.safetensors``.

The model is the open_clip architecture ``toyclip`` (``clipbench/models/configs/toyclip.json``): a ViT
with 64 px input, 8 px patches (8x8 grid + CLS), 4 blocks of width 128, and a 2-block text transformer
of width 128 with a 32-token context; 128-d embeddings. Each batch (128 pairs) is generated fresh from
``(seed, step)``, so the data are identical between runs; with ``--minutes`` the learning-rate schedule
also follows the wall clock (it is compressed when the steps would not fit the budget), so a rerun on a
differently loaded machine ends at a slightly different model. A batch holds:

* single-object images at 32-80 px (the CIFAR writer stores 32 px) captioned with the 18 CIFAR
  templates and other wordings of "red circle";
* multi-object scenes, whole and uncropped, captioned with a referring expression for one object
  ("a photo of the red circle on the left"); half of them are "hard" scenes whose distractors share
  the target's colour or shape, so colour alone cannot match them;
* size pairs: a scene with a big target and the same scene (same background and noise) with the target
  shrunk, captioned "a photo of the big red circle" / "... small red circle", so each is the other's
  hard negative; half of them hold a small twin of the target, as the hard REC scenes do;
* scenes with 1-3 objects captioned with all of their objects (retrieval and caption-judgment style,
  sometimes prefixed "A photo depicts ");
* depth maps of the 3-D primitives through ``clipbench.data.projection`` (PointCLIP V1, first 1024
  points, one random view each), captioned "point cloud depth map of a {shape}.".

The loss is the symmetric CLIP contrastive loss with a learned temperature, where the targets count
every caption that is true of an image as a positive: an image's facts are its classes, which class is
leftmost/rightmost/topmost/bottommost and which objects are big or small (``clipbench.toy.world.size_word``), and
a caption is true where the image has every fact it states. With distinct captions this is exactly
CLIP's loss. The spatial words stay unlearned: like real CLIPs, the toy model reads a scene largely as a
bag of patches. A logistic-regression probe on its image embeddings (lone objects in 128 px scenes,
300 to fit, 100 to test) tells left from right 61% of the time after the second session (64% now), and
big from small 93% (99% now). Fine-tuning the second session's model on mirrored scene pairs for 600
steps left left/right at chance; the size pairs took hold within 400 steps.

The script's own held-out evaluation of the shipped model (end of the third session): zero-shot top-1
0.987 over the 30 colour x shape classes (32 px images, 18 CIFAR templates), 0.81 on PointCLIP V1
depth maps of the 6 primitives, REC accuracy with FALIP 0.925 on normal scenes and 0.875 on hard ones
(a crop: 1.000 and 0.531).

The file stores only the token-embedding rows of the toy vocabulary (every token seen in training plus
the words of the standard prompts) and every other weight in fp16: 2.5 MB. Checkpoints are written
every ``--save-every`` steps, with a full-precision resume state in the temp dir (``--state``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipbench.data.templates import CIFAR_TEMPLATES  # noqa: E402
from clipbench.methods.visual_prompts import crop_image  # noqa: E402
from clipbench.metrics.boxes import xywh_to_xyxy  # noqa: E402
from clipbench.models.checkpoints import compact_rows  # noqa: E402
from clipbench.models.factory import register_model_configs  # noqa: E402
from clipbench.toy import world as tw  # noqa: E402

ARCH = "toyclip"
DEFAULT_OUT = ROOT / "clipbench" / "assets" / "toyclip.safetensors"
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
DEPTH_PROMPT = "point cloud depth map of a {}."
DEPTH_POINTS = 1024  # the ModelNet loaders use the first 1024 of 2048 points
CLIPSCORE_PREFIX = "A photo depicts "
REC_PREFIX = "a photo of "

OBJECT_TEMPLATES = CIFAR_TEMPLATES + [
    "{}.",
    "{a} {}.",
    "a picture of {a} {}.",
    "an image of {a} {}.",
    "there is {a} {} in this image.",
    "{a} {} on a grey background.",
    "a {s} in {c}.",
    "a {c} shape: {a} {}.",
    "{a} {} is in the picture.",
    "a photo of {a} {}.",
]
# single objects fill their image, so they are "big"; scene objects get no size word but in size pairs
SINGLE_TEMPLATES = [t for t in OBJECT_TEMPLATES if "small" not in t]
SCENE_TEMPLATES = [t for t in SINGLE_TEMPLATES if "big" not in t]
LIST_TEMPLATES = list(tw.LIST_TEMPLATES) + ["there is {objs} in this image.", "{objs} on a grey background."]
DEPTH_TEMPLATES = [DEPTH_PROMPT] * 4 + ["a depth map of a {}.", "point cloud of a {}."]

# Facts as bit masks (Python ints): one bit per colour x shape class, one per solid, then one per
# (class, spatial word) -- "a red circle is the leftmost object" -- and one per (class, size word).
# A caption is true of an image when the image has every fact the caption states.
N_CLASSES = len(tw.CLASS_NAMES)
N_SOLIDS = len(tw.SOLIDS)
WORDS = list(tw.SPATIAL_WORDS) + list(tw.SIZE_RADIUS)


def bit(i: int) -> int:
    return 1 << i


def word_bit(label: int, word: str) -> int:
    return bit(N_CLASSES + N_SOLIDS + label * len(WORDS) + WORDS.index(word))


def object_bits(objects, size=None) -> int:
    """Facts of a scene: its classes and, given its ``size``, which class is where and how big."""
    facts = 0
    for i, o in enumerate(objects):
        facts |= bit(o.label)
        if size is not None:
            words = tw.spatial_truths(objects, i) + [tw.size_word(o, size)]
            facts |= sum(word_bit(o.label, w) for w in set(words) if w)
    return facts


# ---------------------------------------------------------------- batches


def fill_object_template(template: str, colour: str, shape: str) -> str:
    name = f"{colour} {shape}"
    return template.replace("{a}", tw.article(colour)).replace("{c}", colour).replace("{s}", shape).replace("{}", name)


def single_object_item(rng):
    label = int(rng.integers(N_CLASSES))
    colour, shape = tw.CLASS_NAMES[label].split(" ")
    size = int(rng.choice([32, 32, 32, 40, 48, 64, 80]))
    image, obj = tw.render_single(rng, size, colour, shape, radius_range=(0.2, 0.46))
    if rng.random() < 0.15:
        text = REC_PREFIX + tw.expression(colour, shape, None, rng)
    else:
        text = fill_object_template(SINGLE_TEMPLATES[rng.integers(len(SINGLE_TEMPLATES))], colour, shape)
    return image, text, object_bits([obj], image.size), bit(label)


def scene_expression_item(rng):
    k = int(rng.integers(2, 6))
    hard = rng.random() < 0.5
    combos = tw.hard_combos(rng, k) if hard else tw.random_combos(rng, k)
    w = int(rng.integers(96, 161))
    h = w if rng.random() < 0.6 else int(rng.integers(96, 161))
    image, objects = tw.render_scene(rng, (w, h), combos)
    target = 0 if hard else int(rng.integers(k))
    truths = tw.spatial_truths(objects, target)
    word = truths[rng.integers(len(truths))] if truths and rng.random() < 0.5 else None
    o = objects[target]
    if rng.random() < 0.7:
        text = REC_PREFIX + tw.expression(o.colour, o.shape, word, rng)
    else:
        text, word = fill_object_template(SCENE_TEMPLATES[rng.integers(len(SCENE_TEMPLATES))], o.colour, o.shape), None
    return image, text, object_bits(objects, image.size), word_bit(o.label, word) if word else bit(o.label)


def size_pair_items(rng):
    """A scene with a big target and the same scene with the target shrunk to small, each captioned
    with its size: the pair are each other's hard negatives, told apart by "big"/"small" alone. Half
    of the multi-object scenes hold a small twin of the target (as the hard REC scenes do)."""
    k = int(rng.integers(1, 5))
    twin = k > 1 and rng.random() < 0.5
    combos = tw.hard_combos(rng, k) if twin else tw.random_combos(rng, k)
    w = int(rng.integers(96, 161))
    size = (w, w if rng.random() < 0.6 else int(rng.integers(96, 161)))
    radius = [tw.SIZE_RADIUS["big"]] + [tw.SIZE_RADIUS["small"] if twin else tw.SCENE_RADIUS] * (k - 1)
    big = tw.place_scene(rng, size, combos, radius)
    small = [replace(big[0], r=rng.uniform(*tw.SIZE_RADIUS["small"]) * min(size))] + big[1:]
    canvas_seed = int(rng.integers(2**31))  # the same background and noise: only the target's size differs
    items = []
    for placed, said in ((big, "big"), (small, "small")):
        image, objects = tw.draw_scene(np.random.default_rng(canvas_seed), size, placed)
        o = objects[0]
        text = REC_PREFIX + tw.expression(o.colour, o.shape, None, rng, said)
        items.append((image, text, object_bits(objects, size), word_bit(o.label, said)))
    return items


def scene_list_item(rng):
    k = int(rng.integers(1, 4))
    combos = tw.random_combos(rng, k)
    size = int(rng.choice([64, 96, 96, 128]))
    radius = (0.16, 0.26) if k == 1 else (0.11, 0.2)
    image, objects = tw.render_scene(rng, size, combos, radius_range=radius)
    text = LIST_TEMPLATES[rng.integers(len(LIST_TEMPLATES))].format(objs=tw.list_phrase(objects, rng))
    if rng.random() < 0.3:
        text = CLIPSCORE_PREFIX + text
    return image, text, object_bits(objects, image.size), object_bits(objects)


def to_uint8(image: Image.Image, size: int) -> np.ndarray:
    """Square bicubic resize, as open_clip's preprocess does for square images (and FALIP for any)."""
    return np.array(image.convert("RGB").resize((size, size), Image.BICUBIC), np.uint8)


def depth_views(points: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N, 3) clouds -> (B, 6, 3, size, size) model inputs via the project's PointCLIP V1 code."""
    from clipbench.data import projection

    maps = projection.project_pointclip_v1(points)
    images = projection.depth_to_images(maps, size)
    return images.view(points.shape[0], -1, 3, size, size)


class BatchStream(torch.utils.data.IterableDataset):
    """Batches for steps ``start..stop``, each generated from ``(seed, step)`` alone."""

    def __init__(self, seed: int, start: int, stop: int, mix: dict[str, int], size: int):
        self.seed, self.start, self.stop, self.mix, self.size = seed, start, stop, mix, size

    def __iter__(self):
        torch.set_num_threads(1)
        for step in range(self.start, self.stop):
            yield make_batch(self.seed, step, self.mix, self.size)


def make_batch(seed: int, step: int, mix: dict[str, int], size: int):
    rng = np.random.default_rng([seed, step])
    items = []
    for _ in range(mix["single"]):
        items.append(single_object_item(rng))
    for _ in range(mix["scene"]):
        items.append(scene_expression_item(rng))
    for _ in range(mix["size"] // 2):
        items.extend(size_pair_items(rng))
    for _ in range(mix["list"]):
        items.append(scene_list_item(rng))
    rgb = torch.from_numpy(np.stack([to_uint8(im, size) for im, *_ in items]))
    texts = [t for _, t, _, _ in items]
    img_facts = [b for *_, b, _ in items]
    txt_facts = [b for *_, b in items]
    depth = None
    if mix["depth"]:
        clouds = tw.point_clouds(mix["depth"], seed=int(rng.integers(2**31)), num_points=2048)
        views = depth_views(torch.from_numpy(clouds.points[:, :DEPTH_POINTS]), size)
        pick = torch.from_numpy(rng.integers(views.shape[1], size=views.shape[0]))
        depth = views[torch.arange(views.shape[0]), pick].contiguous()
        for label in clouds.labels:
            solid = tw.SOLIDS[label]
            texts.append(DEPTH_TEMPLATES[rng.integers(len(DEPTH_TEMPLATES))].format(solid))
            img_facts.append(bit(N_CLASSES + int(label)))
            txt_facts.append(bit(N_CLASSES + int(label)))
    pos = positives(img_facts, txt_facts)
    assert bool(pos.diagonal().all()), "every caption must be true of its own image"
    return rgb, depth, texts, pos


def positives(img_facts: list[int], txt_facts: list[int]) -> torch.Tensor:
    """(images, captions) bool matrix: caption j is true of image i."""
    return torch.tensor([[t & i == t for t in txt_facts] for i in img_facts])


def normalise(rgb_uint8: torch.Tensor) -> torch.Tensor:
    x = rgb_uint8.permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def multi_positive_clip_loss(img, txt, scale, pos):
    """Symmetric CLIP loss; a caption is a positive for every image it is true of (``pos``)."""
    logits = scale * img @ txt.t()
    pos = pos.float()
    t_img = pos / pos.sum(1, keepdim=True)
    t_txt = pos.t() / pos.t().sum(1, keepdim=True)
    loss_i = -(t_img * F.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(t_txt * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return (loss_i + loss_t) / 2


# ---------------------------------------------------------------- vocabulary and saving


def vocabulary_texts() -> list[str]:
    """Every word the toy world and its standard prompts use."""
    words = set()
    texts = []
    for name in tw.CLASS_NAMES:
        colour, shape = name.split(" ")
        texts += [fill_object_template(t, colour, shape) for t in OBJECT_TEMPLATES]
        texts += [REC_PREFIX + t.format(c=colour, s=shape, a=tw.article(colour)) for t in tw.EXPRESSION_TEMPLATES]
        texts += [f"{name} {w} {name}." for w in tw.SPATIAL_WORDS.values()]
        texts += [f"the {w} {name}." for w in tw.SIZE_RADIUS]
        texts += [f"{name} is in red color.", f"{CLIPSCORE_PREFIX}{tw.article(colour)} {name}."]
    for solid in tw.SOLIDS:
        texts += [t.format(solid) for t in DEPTH_TEMPLATES] + [t.format(solid) for t in CIFAR_TEMPLATES]
    texts += [t.format(objs="a red circle, an orange star and a blue square") for t in LIST_TEMPLATES]
    texts += ["there is a red circle and a blue star in this image.", CLIPSCORE_PREFIX.lower() + "a red circle."]
    for t in texts:
        words.update(t.split())
    return texts + sorted(words)


def vocabulary_ids(tokenizer, extra_texts=()) -> torch.Tensor:
    ids = set()
    texts = vocabulary_texts() + list(extra_texts)
    for i in range(0, len(texts), 512):
        ids.update(tokenizer(texts[i : i + 512]).unique().tolist())
    return torch.tensor(sorted(ids), dtype=torch.long)


def save_checkpoint(model, path: Path, rows: torch.Tensor, meta: dict, fp16: bool = True) -> int:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.endswith("attn_mask")}
    state = compact_rows(state, "token_embedding.weight", rows)
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    state = {k: v.contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
    os.replace(tmp, path)
    return path.stat().st_size


def previous_sessions(path: Path) -> list:
    """The training records stored in an existing checkpoint's metadata."""
    from safetensors import safe_open

    if not path.is_file():
        return []
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    earlier = json.loads(meta.get("earlier_sessions", "[]"))
    return earlier + ([json.loads(meta["training"])] if "training" in meta else [])


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def class_embeddings(model, tokenizer, names, templates):
    out = []
    for name in names:
        feats = F.normalize(model.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1)
        out.append(F.normalize(feats.mean(0), dim=-1))
    return torch.stack(out)


@torch.no_grad()
def eval_zeroshot(model, tokenizer, preprocess, n=300, seed=1_000_003, size=32) -> float:
    data = tw.classification_samples(n, seed, size)
    images = torch.stack([preprocess(im) for im in data.images])
    feats = F.normalize(model.encode_image(images), dim=-1)
    classes = class_embeddings(model, tokenizer, data.class_names, CIFAR_TEMPLATES)
    pred = (feats @ classes.t()).argmax(1).numpy()
    return float((pred == data.labels).mean())


@torch.no_grad()
def eval_depth(model, tokenizer, size, n=120, seed=1_000_033) -> float:
    clouds = tw.point_clouds(n, seed)
    views = depth_views(torch.from_numpy(clouds.points[:, :DEPTH_POINTS]), size)
    b, v = views.shape[:2]
    feats = F.normalize(model.encode_image(views.flatten(0, 1)), dim=-1).view(b, v, -1)
    classes = class_embeddings(model, tokenizer, clouds.class_names, [DEPTH_PROMPT])
    scores = torch.einsum("bvd,cd->bc", feats, classes)
    return float((scores.argmax(1).numpy() == clouds.labels).mean())


def falip_bias(box, image_wh, size: int, patch: int, alpha=0.2, sigma=100.0) -> torch.Tensor:
    """The FALIP CLS-row attention bias for one box (square resize to ``size``)."""
    grid = size // patch
    sx, sy = size / image_wh[0], size / image_wh[1]
    x0, y0 = min(box[0] * sx, size), min(box[1] * sy, size)
    x1, y1 = min((box[0] + box[2]) * sx, size), min((box[1] + box[3]) * sy, size)
    c0, c1 = max(math.ceil(x0 / patch), 1) - 1, max(math.ceil(x1 / patch), 1) - 1
    r0, r1 = max(math.ceil(y0 / patch), 1) - 1, max(math.ceil(y1 / patch), 1) - 1
    h, w = r1 - r0 + 1, c1 - c0 + 1
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    g = torch.exp(-((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * sigma**2))
    g = (g - g.min() + 1e-6) / (g.max() + 1e-6 - g.min()) * alpha
    bias = torch.zeros(1 + grid * grid, 1 + grid * grid)
    for r in range(h):
        for c in range(w):
            bias[0, 1 + (r0 + r) * grid + (c0 + c)] = g[r, c]
    return bias


@torch.no_grad()
def encode_with_bias(model, images, bias, last_blocks=4):
    visual = model.visual
    x = visual._embeds(images)
    blocks = visual.transformer.resblocks
    for i, blk in enumerate(blocks):
        x = blk(x, attn_mask=bias if i >= len(blocks) - last_blocks else None)
    pooled, _ = visual._pool(x)
    return F.normalize(pooled @ visual.proj, dim=-1)


@torch.no_grad()
def eval_rec(model, tokenizer, size, patch, n=80, seed=1_000_061, hard=False) -> tuple[float, float]:
    """REC accuracy of FALIP and of cropping each box."""
    scenes = tw.rec_scenes(n, seed, 128, hard=hard)
    falip = crop = total = 0
    for scene in scenes:
        x = normalise(torch.from_numpy(to_uint8(scene.image, size))[None])
        feats = torch.cat([encode_with_bias(model, x, falip_bias(o.box, scene.image.size, size, patch)) for o in scene.objects])
        crops = [crop_image(scene.image, xywh_to_xyxy(o.box)) for o in scene.objects]  # the crop baseline's own cut
        crops = normalise(torch.from_numpy(np.stack([to_uint8(c, size) for c in crops])))
        crop_feats = F.normalize(model.encode_image(crops), dim=-1)
        for ref in scene.refs:
            texts = [REC_PREFIX + s.lower() for s in ref.sentences]
            t = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
            falip += int(((t @ feats.t()).argmax(1) == ref.target).sum())
            crop += int(((t @ crop_feats.t()).argmax(1) == ref.target).sum())
            total += len(texts)
    return falip / max(total, 1), crop / max(total, 1)


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--mix", default="single=32,scene=24,size=48,list=12,depth=12",
                   help="items per batch by kind: single, scene, size (pairs), list, depth")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--state", type=Path, default=None, help="full-precision resume state (default: toyclip_train_state.pt in the temp dir)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", type=Path, default=None,
                   help="start from the weights of this checkpoint (e.g. the shipped file) with a fresh optimiser")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=300, help="0: no evaluation")
    p.add_argument("--minutes", type=float, default=None,
                   help="time budget of this session: the schedule is compressed to fit, and the run stops and saves")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--fp32", action="store_true", help="store fp32 weights instead of fp16")
    return p.parse_args(argv)


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        small = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "ln" in name or name.endswith("class_embedding")
        (no_decay if small else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import open_clip

    register_model_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH)
    tokenizer = open_clip.get_tokenizer(ARCH)
    size = model.visual.image_size[0]
    patch = model.visual.patch_size[0]
    mix = {k: int(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
    mix = {k: mix.get(k, 0) for k in ("single", "scene", "size", "list", "depth")}
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    state_path = args.state or Path(tempfile.gettempdir()) / "toyclip_train_state.pt"
    start, used_tokens, elapsed_before, history = 0, set(), 0.0, []
    if args.init:
        from clipbench.models.checkpoints import ROWS_SUFFIX, expand_compact, read_checkpoint

        init = read_checkpoint(args.init)
        model.load_state_dict(expand_compact(init, model.state_dict()), strict=False)
        used_tokens.update(init.get("token_embedding.weight" + ROWS_SUFFIX, torch.zeros(0)).tolist())
        history = previous_sessions(args.init)
        print(f"initialised from {args.init}", flush=True)
    if args.resume and state_path.exists():
        saved = torch.load(state_path, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        start, used_tokens, elapsed_before = saved["step"], set(saved["tokens"]), saved.get("elapsed", 0.0)
        history = saved.get("history") or previous_sessions(args.out)
        print(f"resumed at step {start}", flush=True)

    def schedule_progress(step):
        return min(max((step - args.warmup) / max(1, args.steps - args.warmup), 0.0), 1.0)

    start_progress = schedule_progress(start)

    def lr_at(step, session_seconds=0.0):
        """Linear warm-up, then cosine decay over the steps; with a time budget, the rest of the
        schedule is squeezed into this session's budget if the steps would not fit."""
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = schedule_progress(step)
        if args.minutes:
            by_time = start_progress + (1 - start_progress) * session_seconds / (args.minutes * 60)
            progress = max(progress, by_time)
        return args.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    config = {
        "arch": ARCH, "seed": args.seed, "steps": args.steps, "lr": args.lr, "warmup": args.warmup,
        "weight_decay": args.weight_decay, "mix": mix, "batch_size": sum(mix.values()),
        "loss": "multi-positive symmetric CLIP", "optimizer": "AdamW(0.9, 0.98)",
        "open_clip": open_clip.__version__, "torch": torch.__version__,
        "minutes_budget": args.minutes, "resumed_from_step": start if args.resume else None,
        "initialised_from": args.init.name if args.init else None,
    }

    def save(step, elapsed):
        rows = vocabulary_ids(tokenizer, extra_texts=())
        rows = torch.unique(torch.cat([rows, torch.tensor(sorted(used_tokens), dtype=torch.long)]))
        meta = {"training": {**config, "steps_done": step, "minutes": round(elapsed / 60, 1)},
                "earlier_sessions": history, "vocab_rows": len(rows)}
        nbytes = save_checkpoint(model, args.out, rows, meta, fp16=not args.fp32)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "tokens": sorted(used_tokens), "elapsed": elapsed, "history": history}, state_path)
        print(f"step {step}: saved {args.out} ({nbytes / 1e6:.2f} MB, {len(rows)} token rows)", flush=True)

    def evaluate(step):
        try:
            _evaluate(step)
        except Exception as exc:  # a broken evaluation must not end a long run
            print(f"step {step}: evaluation failed: {exc!r}", flush=True)
        model.train()

    def _evaluate(step):
        model.eval()
        msg = f"step {step}: zeroshot32={eval_zeroshot(model, tokenizer, preprocess):.3f}"
        msg += f" zeroshot64={eval_zeroshot(model, tokenizer, preprocess, size=64, n=300):.3f}"
        if mix["depth"]:
            msg += f" depth={eval_depth(model, tokenizer, size):.3f}"
        rec, rec_crop = eval_rec(model, tokenizer, size, patch)
        hard, hard_crop = eval_rec(model, tokenizer, size, patch, hard=True)
        msg += f" rec={rec:.3f} (crop {rec_crop:.3f}) rec_hard={hard:.3f} (crop {hard_crop:.3f})"
        print(msg, flush=True)

    stream = BatchStream(args.seed, start, args.steps, mix, size)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=args.workers, prefetch_factor=4 if args.workers else None
    )
    session_start = time.time()
    t0 = session_start - elapsed_before
    model.train()
    step = start
    for step, (rgb, depth, texts, pos) in enumerate(loader, start=start):
        lr = lr_at(step, time.time() - session_start)
        for g in opt.param_groups:
            g["lr"] = lr
        images = normalise(rgb)
        if depth is not None:
            images = torch.cat([images, depth])
        tokens = tokenizer(texts)
        used_tokens.update(tokens.unique().tolist())
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        loss = multi_positive_clip_loss(img, txt, model.logit_scale.exp(), pos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        elapsed = time.time() - t0
        if step % 25 == 0 or step < 5:
            print(f"step {step} loss {loss.item():.4f} scale {model.logit_scale.exp().item():.1f} "
                  f"lr {lr:.2e} {elapsed / 60:.1f} min", flush=True)
        done = step + 1
        if done % args.save_every == 0 or done == args.steps:
            save(done, elapsed)
        if args.eval_every and done % args.eval_every == 0 and done != args.steps:
            evaluate(done)
        if args.minutes and time.time() - session_start > args.minutes * 60:
            print(f"time budget of {args.minutes} min reached at step {done}", flush=True)
            save(done, elapsed)
            break
    model.eval()
    if args.eval_every:
        evaluate(step + 1)
    print(f"done in {(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

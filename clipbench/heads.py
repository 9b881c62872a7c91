"""Head sensitivity (FALIP's analysis): how much each (layer, head)'s CLS attention inside the box changes
when a red circle is drawn around it, against the plain image.

For every image+box, the CLS query's softmax attention of every block and head is taken on the plain image
and on the image with the red ellipse inscribed in the box (line width int(max(W, H)/200), at least 1, clipbench's
``visual_prompts.draw_ellipses``; ``--prompt red_circle_falip`` also blurs outside the ellipse). The mass
inside the box sums the attention over the box's patch tokens (FALIP's own box -> patch mapping and
resize). Per (layer, head) the script writes the mean plain mass, prompted mass, their difference
(``delta``) and mean |difference| to ``head_sensitivity.csv``, a layers x heads heatmap of ``delta`` to
``head_sensitivity.png`` and, with ``--top-k K``, a FALIP method config selecting the K heads with the
largest ``--rank-by`` value (``falip_top<K>.yaml``: copy it to conf/method/ (of a checkout) and use ``method=falip_top<K>``,
or pass the printed overrides).

Model and boxes come from clipbench's Hydra config, as ``key=value`` overrides: ``model=...`` (default
the bundled toy CLIP), and the gold boxes of any REC or region-classification dataset (``dataset=refcoco``,
``refcoco_hf``, ``reclip_jsonl``, ``coco_regions``, ``cub``, ... or an ``experiment=`` that sets one). Or
``--images DIR --boxes FILE.json``, the JSON being ``{"file.jpg": [[x0, y0, x1, y1], ...], ...}`` or
``[{"file": "file.jpg", "box": [x0, y0, x1, y1]}, ...]`` (pixel boxes on the original image).

Every ViT family FALIP supports works (open_clip ViTs, CoCa, timm SigLIP/EVA towers, Hugging Face CLIP);
on towers without a CLS token (SigLIP's MAP head) the single row ``probe`` is the pooling probe's heads.

    clipbench-toy-world                                                       # offline example
    clipbench-heads experiment=toy_falip_head_sensitivity --limit 40 --out runs/heads --top-k 4
    clipbench-heads model=vit_b_16 dataset=refcoco dataset.root=DATA/refer dataset.images=DATA/coco/train2014
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipbench.data.base import open_rgb
from clipbench.errors import ClipbenchError, ConfigError, DataError
from clipbench.methods.foveal_bias import RESIZE_MODES, PatchGrid, image_transform, region_patch_weights
from clipbench.methods.visual_prompts import RED, draw_ellipses, falip_line_width, red_circle_falip
from clipbench.metrics.boxes import Box
from clipbench.models import load_model
from clipbench.models.attention import patch_attention

PROMPTS = {
    "red_circle": lambda image, box: draw_ellipses(image, [box], RED, falip_line_width(*image.size, min_width=1)),
    "red_circle_falip": lambda image, box: red_circle_falip(image, [box]),
}


def read_samples(images_dir: Path, boxes_file: Path) -> list[tuple[Path, Box]]:
    """(image path, box) pairs from the JSON box file."""
    try:
        data = json.loads(boxes_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{boxes_file}: cannot read the box file ({exc})") from None
    if isinstance(data, dict):
        pairs = [(name, box) for name, boxes in data.items() for box in boxes]
    elif isinstance(data, list) and all(isinstance(d, dict) and {"file", "box"} <= set(d) for d in data):
        pairs = [(d["file"], d["box"]) for d in data]
    else:
        raise DataError(f"{boxes_file}: expected {{file: [[x0, y0, x1, y1], ...]}} or [{{file, box}}, ...]")
    out = []
    for name, box in pairs:
        if not (isinstance(box, (list, tuple)) and len(box) == 4):
            raise DataError(f"{boxes_file}: box {box!r} of {name} is not [x0, y0, x1, y1]")
        out.append((images_dir / name, tuple(float(v) for v in box)))
    return out


def compose_config(overrides: list[str]):
    """clipbench's config with the given ``key=value`` overrides (``experiment=``, ``model=``, ``dataset=``...)."""
    from hydra import compose, initialize_config_dir

    import clipbench.config  # noqa: F401  (the ${asset:} resolver)
    from clipbench.cli import CONF_DIR

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(bad[0], "is neither an option nor a key=value override")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def dataset_samples(cfg) -> list[tuple[Path, Box]]:
    """(image path, gold box) pairs of the configured REC or region dataset (one per referred object or box)."""
    from clipbench.config import to_schema
    from clipbench.data import DATASETS
    from clipbench.runner import build_dataset, resolve_groups

    cfg = resolve_groups(cfg)  # the dataset's roots come from ${paths.*}
    name = cfg.dataset.get("name")
    spec = DATASETS.get(name)
    if not spec.tasks & {"rec", "region_cls"}:
        raise ConfigError("dataset", f"{name!r} has no boxes; use a REC or region dataset (e.g. dataset=refcoco, "
                          "coco_regions, or experiment=toy_falip_head_sensitivity)")
    dataset = build_dataset(to_schema(spec.config, cfg.dataset, "dataset"))
    pairs: dict[tuple, None] = {}
    if hasattr(dataset, "sentences"):
        for entry in dataset.images:
            for sentence in entry.sentences:
                pairs[(entry.path, tuple(float(v) for v in sentence.gold_box))] = None
    else:
        for sample in dataset.samples:
            for box in sample.boxes:
                pairs[(sample.path, tuple(float(v) for v in box))] = None
    return list(pairs)


def measure(loaded, samples, prompt: str = "red_circle", resize: str = "square", batch_size: int = 8):
    """Per (layer, head): mean CLS mass inside the box on plain and prompted images, and their difference."""
    transform = image_transform(loaded, resize)
    grid = PatchGrid.of(loaded)
    draw = PROMPTS[prompt]
    plain_sum = prompt_sum = abs_sum = None
    n = skipped = 0
    for start in range(0, len(samples), batch_size):
        tensors, masks = [], []
        for path, box in samples[start : start + batch_size]:
            image = open_rgb(path)  # the runs' reader: FIFOs, decompression bombs, odd modes skip and count
            if image is None:
                skipped += 1
                continue
            inside = region_patch_weights([box], image.width, image.height, grid, resize, alpha=1.0, shape="uniform")
            if not inside.any():
                skipped += 1
                continue
            tensors += [transform(image), transform(draw(image, box))]
            masks.append(inside.flatten())
        if not masks:
            continue
        maps, labels = patch_attention(loaded, torch.stack(tensors))  # (2B, rows, H, g*g)
        mask = torch.stack(masks).to(maps.device)[:, None, None, :]
        plain = (maps[0::2] * mask).sum(-1)
        prompted = (maps[1::2] * mask).sum(-1)
        batch = [plain.sum(0), prompted.sum(0), (prompted - plain).abs().sum(0)]
        if plain_sum is None:
            plain_sum, prompt_sum, abs_sum = batch
        else:
            plain_sum, prompt_sum, abs_sum = plain_sum + batch[0], prompt_sum + batch[1], abs_sum + batch[2]
        n += len(masks)
    if n == 0:
        raise DataError("no usable image+box (unreadable images or boxes outside the image)")
    depth, heads = plain_sum.shape
    layer, head = np.meshgrid(np.arange(depth), np.arange(heads), indexing="ij")
    table = pd.DataFrame({
        "layer": np.asarray(labels, dtype=object)[layer.ravel()], "head": head.ravel(),
        "mass_plain": (plain_sum / n).cpu().numpy().ravel(), "mass_prompt": (prompt_sum / n).cpu().numpy().ravel(),
    })
    table["delta"] = table["mass_prompt"] - table["mass_plain"]
    table["abs_delta"] = (abs_sum / n).cpu().numpy().ravel()
    table["n"] = n
    return table, skipped


def top_heads(table: pd.DataFrame, k: int, rank_by: str = "delta") -> dict[int, list[int]]:
    """The k (layer, head) pairs with the largest ``rank_by``, grouped by layer."""
    best = table.sort_values([rank_by, "layer", "head"], ascending=[False, True, True]).head(k)
    picked: dict = {}
    order = {label: i for i, label in enumerate(dict.fromkeys(table["layer"].tolist()))}
    for layer, head in sorted(zip(best["layer"].tolist(), best["head"].tolist()), key=lambda p: (order[p[0]], p[1])):
        picked.setdefault(layer if layer == "probe" else int(layer), []).append(int(head))
    return picked


def method_keys(picked: dict) -> dict:
    """FALIP's layers/heads keys for the picked heads (on a pooling probe: its heads only)."""
    if list(picked) == ["probe"]:
        return {"heads": picked["probe"]}
    return {"layers": [int(layer) for layer in picked], "heads": list(picked.values())}


def method_config(picked: dict, k: int, rank_by: str) -> str:
    keys = "".join(f"{key}: {json.dumps(value)}\n" for key, value in method_keys(picked).items())
    return f"# FALIP with the top-{k} heads by {rank_by} (clipbench-heads)\ndefaults:\n  - falip\n  - _self_\n\n{keys}"


def heatmap(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = table.pivot(index="layer", columns="head", values="delta").reindex(list(dict.fromkeys(table["layer"]))).to_numpy()
    limit = float(np.abs(grid).max()) or 1.0
    fig, ax = plt.subplots(figsize=(1 + 0.45 * grid.shape[1], 1 + 0.35 * grid.shape[0]))
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer (block)")
    ax.set_xticks(range(grid.shape[1]))
    ax.set_yticks(range(grid.shape[0]), list(dict.fromkeys(table["layer"].astype(str))))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="CLS attention mass in box: prompt - plain")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clipbench-heads", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="clipbench config overrides: experiment=..., model=..., dataset=...")
    parser.add_argument("--images", type=Path, help="with --boxes: folder the box file's names are relative to")
    parser.add_argument("--boxes", type=Path, help="JSON box file (see the module doc) instead of dataset=...")
    parser.add_argument("--out", default=Path("head_sensitivity"), type=Path)
    parser.add_argument("--prompt", default="red_circle", choices=sorted(PROMPTS))
    parser.add_argument("--resize", default="square", choices=RESIZE_MODES)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N image+box pairs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--top-k", type=int, default=None, help="write a method config selecting the top-k heads")
    parser.add_argument("--rank-by", default="delta", choices=["delta", "abs_delta"])
    args = parser.parse_args(argv)
    try:
        if (args.images is None) != (args.boxes is None):
            raise ConfigError("--boxes", "--images and --boxes go together")
        cfg = compose_config(args.overrides)
        samples = read_samples(args.images, args.boxes) if args.boxes else dataset_samples(cfg)
        samples = samples[: args.limit]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = load_model(str(cfg.model.arch), cfg.model.get("pretrained"), device=args.device)
        table, skipped = measure(loaded, samples, args.prompt, args.resize, args.batch_size)
    except ClipbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "head_sensitivity.csv", index=False)
    n = int(table["n"].iloc[0])
    heatmap(table, args.out / "head_sensitivity.png", f"{loaded.arch}, {args.prompt}, n={n}")
    print(f"{n} image+box pairs ({skipped} skipped); wrote {args.out / 'head_sensitivity.csv'} and .png")
    print(table.sort_values(args.rank_by, ascending=False).head(10).to_string(index=False))
    if args.top_k:
        picked = top_heads(table, args.top_k, args.rank_by)
        path = args.out / f"falip_top{args.top_k}.yaml"
        path.write_text(method_config(picked, args.top_k, args.rank_by))
        compact = {"separators": (",", ":")}
        overrides = " ".join(f"'method.{k}={json.dumps(v, **compact)}'" for k, v in method_keys(picked).items())
        print(f"wrote {path}; as overrides: method=falip {overrides}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

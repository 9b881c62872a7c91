"""``clipbench-search``: text-to-image search over a folder of images.

    clipbench-search --images DIR --query "a red circle" -k 3

Embeds the folder once (cached on disk by model and file contents), ranks the images by cosine
similarity to the query, prints the ranking and writes a contact sheet PNG of the top k.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from clipbench.config import ASSETS_DIR
from clipbench.data.base import to_rgb
from clipbench.data.captions import IMAGE_SUFFIXES
from clipbench.errors import ClipbenchError, ConfigError, DataError
from clipbench.tasks.base import RunContext

if TYPE_CHECKING:  # torch is imported once a search runs: --help and argument errors answer at once
    import torch

DEFAULT_ARCH = "toyclip"
DEFAULT_CHECKPOINT = ASSETS_DIR / "toyclip.safetensors"
CELL = 256
LABEL_HEIGHT = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clipbench-search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--query", required=True, help="the text to search for")
    parser.add_argument("-k", "--top-k", type=int, default=3, dest="k", help="how many images to show (default 3)")
    parser.add_argument("--arch", default=DEFAULT_ARCH, help="open_clip architecture (default: the bundled toyclip)")
    parser.add_argument(
        "--pretrained", default=None,
        help="open_clip tag or local .pt/.bin/.safetensors (default for toyclip: the bundled checkpoint)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-dir", default=".cache/clipbench", help="where folder embeddings are cached")
    parser.add_argument("--out", default="search_results.png", help="contact sheet PNG of the top k")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def rank(image_feats: torch.Tensor, query_feat: torch.Tensor) -> list[tuple[int, float]]:
    """(index, cosine) of the readable images, best first (ties keep folder order)."""
    import torch

    readable = ~torch.isnan(image_feats).any(dim=1)
    scores = image_feats[readable].float() @ query_feat.float()
    index = torch.nonzero(readable).flatten()
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), int(index[i])))
    return [(int(index[i]), float(scores[i])) for i in order]


def contact_sheet(paths: list[Path], scores: list[float], query: str, out: Path) -> Path:
    """A row of thumbnails with rank, score and file name under each, the query on top."""
    font = ImageFont.load_default()
    header = 30
    sheet = Image.new("RGB", (max(1, len(paths)) * CELL, header + CELL + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 8), f"query: {query}", fill="black", font=font)
    for i, (path, score) in enumerate(zip(paths, scores)):
        with Image.open(path) as im:
            thumb = to_rgb(im)
        thumb.thumbnail((CELL - 8, CELL - 8), Image.BICUBIC)
        if max(thumb.size) < CELL - 8:  # small images are enlarged so they stay visible
            scale = (CELL - 8) / max(thumb.size)
            thumb = thumb.resize((max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale))), Image.NEAREST)
        x0 = i * CELL + (CELL - thumb.width) // 2
        sheet.paste(thumb, (x0, header + (CELL - thumb.height) // 2))
        draw.text((i * CELL + 6, header + CELL + 4), f"#{i + 1}  {score:.3f}", fill="black", font=font)
        draw.text((i * CELL + 6, header + CELL + 20), path.name[:36], fill="dimgray", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def search(args: argparse.Namespace) -> int:
    import torch

    from clipbench.models import load_model
    from clipbench.runtime import Throughput, resolve_device
    from clipbench.tasks.retrieval import ImageFiles, image_features, texts_features

    folder = Path(args.images).expanduser()
    if not folder.is_dir():
        raise ConfigError("--images", f"{folder} is not a folder")
    if args.k < 1:
        raise ConfigError("-k", f"must be >= 1, got {args.k}")
    if not args.query.strip():
        raise ConfigError("--query", "is empty")
    pretrained = args.pretrained
    if pretrained is None and args.arch == DEFAULT_ARCH:
        if not DEFAULT_CHECKPOINT.is_file():
            raise ConfigError("--pretrained", f"the bundled {DEFAULT_CHECKPOINT.name} is missing; pass --pretrained")
        pretrained = str(DEFAULT_CHECKPOINT)
    paths = list_images(folder)
    if not paths:
        raise ConfigError("--images", f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    device = resolve_device(args.device)
    model = load_model(args.arch, pretrained, "fp32", device)
    ctx = RunContext(device=device, batch_size=args.batch_size, num_workers=0, cache_dir=args.cache_dir,
                     progress=not args.no_progress)
    files = ImageFiles(paths)
    meter = Throughput(device)
    feats = image_features(model, files, ["search"], ctx, meter, desc="embedding folder")
    readable = int((~torch.isnan(feats).any(dim=1)).sum())
    if readable == 0:
        raise DataError(f"--images: none of the {len(paths)} image(s) in {folder} could be read")
    source = "embedded" if meter.forward_seconds > 0 else "loaded from the cache:"
    print(f"{source} {readable} image(s) from {folder}" + (f" ({len(paths) - readable} unreadable, skipped)" if readable < len(paths) else ""))
    query = texts_features(model, [args.query], ctx)[0]
    ranked = rank(feats, query)
    top = ranked[: args.k]
    width = max(len(str(paths[i].relative_to(folder))) for i, _ in top) if top else 4
    print(f"{'rank':>4}  {'score':>7}  {'file':<{width}}")
    for r, (i, score) in enumerate(top, 1):
        print(f"{r:>4}  {score:>7.4f}  {str(paths[i].relative_to(folder)):<{width}}")
    sheet = contact_sheet([paths[i] for i, _ in top], [s for _, s in top], args.query, Path(args.out))
    print(f"contact sheet: {sheet}")
    return 0


def main(argv: list[str] | None = None) -> None:
    from clipbench.cli import _QuietOpenClip

    logging.getLogger().addFilter(_QuietOpenClip())
    args = parse_args(argv)
    try:
        sys.exit(search(args))
    except ClipbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Convert open_clip's published results tables into experiments/reported/open_clip.csv.

    python scripts/convert_open_clip_results.py [--src ../shared/data/open_clip] [--out experiments/reported/open_clip.csv]

One reported row per (architecture, pretrained tag, dataset, metric), in clipbench's reported format:
dataset is clip_benchmark's name, metric is clipbench's (top1; image/text_retrieval_recall@k), values
are fractions as published. Keys already in another reported file are left to that file.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipbench.paths import reported_dir  # noqa: E402
from clipbench.report.reported import REPORTED_COLUMNS, load_reported  # noqa: E402

PAPER = "open_clip results table"
SOURCE = "open_clip docs/{file} (89fb801)"
CLASSIFICATION_COLUMNS = {
    "ImageNet 1k": "imagenet1k", "Caltech-101": "vtab/caltech101", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100",
    "CLEVR Counts": "vtab/clevr_count_all", "CLEVR Distance": "vtab/clevr_closest_object_distance",
    "Country211": "country211", "Describable Textures": "vtab/dtd", "EuroSAT": "vtab/eurosat",
    "FGVC Aircraft": "fgvc_aircraft", "Food-101": "food101", "GTSRB": "gtsrb", "ImageNet Sketch": "imagenet_sketch",
    "ImageNet v2": "imagenetv2", "ImageNet-A": "imagenet-a", "ImageNet-O": "imagenet-o", "ImageNet-R": "imagenet-r",
    "KITTI Vehicle Distance": "vtab/kitti_closest_vehicle_distance", "MNIST": "mnist", "ObjectNet": "objectnet",
    "Oxford Flowers-102": "vtab/flowers", "Oxford-IIIT Pet": "vtab/pets", "Pascal VOC 2007": "voc2007",
    "PatchCamelyon": "vtab/pcam", "Rendered SST2": "renderedsst2", "RESISC45": "vtab/resisc45",
    "Stanford Cars": "cars", "STL-10": "stl10", "SUN397": "sun397", "SVHN": "vtab/svhn",
    "iWildCam": "wilds/iwildcam", "Camelyon17": "wilds/camelyon17", "FMoW": "wilds/fmow",
    "Dollar Street": "dollar_street", "GeoDE": "geode",
}
RETRIEVAL_DATASETS = {"Flickr": "flickr30k", "MSCOCO": "mscoco_captions"}


def retrieval_column(column: str) -> tuple[str, str] | None:
    """``Flickr image retr. R@5`` -> (flickr30k, image_retrieval_recall@5)."""
    parts = column.split()
    if len(parts) != 4 or parts[0] not in RETRIEVAL_DATASETS or parts[2] != "retr." or not parts[3].startswith("R@"):
        return None
    return RETRIEVAL_DATASETS[parts[0]], f"{parts[1]}_retrieval_recall@{parts[3][2:]}"


def convert(src: Path) -> list[dict]:
    rows = []
    tables = [("openclip_classification_results.csv", "zeroshot"), ("openclip_retrieval_results.csv", "retrieval")]
    for name, task in tables:
        with open(src / name, newline="") as f:
            for rec in csv.DictReader(f):
                for column, value in rec.items():
                    if task == "zeroshot" and column in CLASSIFICATION_COLUMNS:
                        dataset, metric = CLASSIFICATION_COLUMNS[column], "top1"
                    elif task == "retrieval" and retrieval_column(column):
                        dataset, metric = retrieval_column(column)
                    else:
                        continue
                    if value in ("", None):
                        continue
                    rows.append({
                        "paper": PAPER, "table": name.removesuffix(".csv"), "task": task, "dataset": dataset,
                        "split": "test", "method": "clip", "model": rec["name"], "setting": f"pretrained={rec['pretrained']}",
                        "metric": metric, "value": f"{float(value):.4f}", "unit": "fraction",
                        "source": SOURCE.format(file=name), "verified": "true",
                    })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "open_clip")
    parser.add_argument("--out", type=Path, default=reported_dir() / "open_clip.csv")
    args = parser.parse_args()
    others = [p for p in sorted(reported_dir().glob("*.csv")) if p.resolve() != args.out.resolve()]
    existing = load_reported(others)
    taken = set(zip(existing["model"], existing["setting"], existing["dataset"], existing["metric"]))
    rows = [r for r in convert(args.src) if (r["model"], r["setting"], r["dataset"], r["metric"]) not in taken]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REPORTED_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()

"""Write the seeded toy world to disk in each real dataset's release format.

    clipbench-toy-world [--out data/toy] [--seed 0] [--scale 1.0] [--force] [--quiet]

Every part goes through the same ``write_*`` function the tests use for that format (``clipbench.toy.writers``),
and is read back by the real loaders (dataset.root=data/toy/...; with another --out, paths.toy=DIR
points +toy=... at it). Re-running with the same settings does nothing. ``python scripts/make_toy_world.py``
in a checkout is the same.

Layout under --out:
  cifar/cifar-100-python/{train,test,meta}      colour x shape classes ("red circle", ...), 32x32
  linprobe/{train,val,test}/<class>/*.png       the same classes in image-folder layout, for the linear probe
  refcoco/{refs(unc).p,instances.json}          REC scenes; split val = normal, testB = the hard subset
                                                (every distractor shares the target's colour or shape;
                                                one shares both, at the other size: "big"/"small" tells them apart)
  regions/{regions.json}                        COCO-style region classification
  modelnet40_ply_hdf5_2048/                     3-D primitives (train for view-weight search, test)
  flickr8k/{ExpertAnnotations.txt,CrowdFlowerAnnotations.txt,Flickr8k.token.txt}
                                                rated candidate captions (Flickr8k-Expert and -CF layouts)
  flickr30k/dataset_flickr30k.json              a retrieval gallery (Karpathy layout, test split)
  compositionality/{val2017/,<subset>.json}     SugarCrepe's 7 subsets: two-object scenes, true and negative captions
  compositionality/{dataset_dict.json,test/}    Winoground-style pairs (a save_to_disk copy with the hub set's columns)
  xtd10/{xtd10/images/,xtd10-{en,de,fr}.json}   one caption per image in English, German and French (XTD10 layout)
  images/                                       every image file the above refer to
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from clipbench.errors import ClipbenchError
from clipbench.toy import compositional as tc
from clipbench.toy import world as tw
from clipbench.toy.writers.caption_selection import (
    write_multilingual_captions,
    write_sugar_crepe,
    write_winoground,
)
from clipbench.toy.writers.classification import write_cifar100, write_imagefolder
from clipbench.toy.writers.clipscore_corpora import write_flickr8k
from clipbench.toy.writers.pointclouds import write_modelnet40
from clipbench.toy.writers.refer import write_refer
from clipbench.toy.writers.regions import write_coco_regions
from clipbench.toy.writers.retrieval_galleries import write_karpathy

FORMAT_VERSION = 6
BASE_SIZES = {
    "cifar_train": 300, "cifar_test": 600, "rec_val": 200, "rec_hard": 120, "regions": 150,
    "points_train": 240, "points_test": 300, "judged_images": 120, "gallery": 120,
    "sugar_crepe": 100, "winoground": 100, "translated": 120,
    "probe_train": 240, "probe_val": 90, "probe_test": 300,
}


def _save(image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path.name


def write_classification(out: Path, seed: int, sizes: dict) -> None:
    for split, n, offset in (("train", sizes["cifar_train"], 100), ("test", sizes["cifar_test"], 0)):
        data = tw.classification_samples(n, seed + offset, size=32)
        write_cifar100(out / "cifar", split, np.stack([np.asarray(im) for im in data.images]), data.labels.tolist(), data.class_names)


def write_probe_set(out: Path, seed: int, sizes: dict) -> None:
    for split, offset in (("train", 200), ("val", 300), ("test", 400)):
        data = tw.classification_samples(sizes[f"probe_{split}"], seed + offset, size=32)
        write_imagefolder(out / "linprobe", split, data.images, data.labels.tolist(), data.class_names)


def write_rec(out: Path, seed: int, sizes: dict) -> None:
    images, annotations, refs = [], [], []
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(tw.CLASS_NAMES)]
    parts = [("val", tw.rec_scenes(sizes["rec_val"], seed, refs_per_scene=2)),
             ("testB", tw.rec_scenes(sizes["rec_hard"], seed + 1, hard=True))]
    sent_id = 0
    for split, scenes in parts:
        for scene in scenes:
            image_id = len(images) + 1
            file_name = _save(scene.image, out / "images" / f"toy_rec_{image_id:06d}.png")
            images.append({"id": image_id, "file_name": file_name, "width": scene.image.width, "height": scene.image.height})
            ann_ids = []
            for obj in scene.objects:
                ann_ids.append(len(annotations) + 1)
                annotations.append({"id": ann_ids[-1], "image_id": image_id, "category_id": obj.label + 1,
                                    "bbox": [float(v) for v in obj.box], "area": float(obj.box[2] * obj.box[3]), "iscrowd": 0})
            for ref in scene.refs:
                sentences = []
                for text in ref.sentences:
                    sentences.append({"raw": text, "sent": text.lower(), "sent_id": sent_id, "tokens": text.lower().split()})
                    sent_id += 1
                target = scene.objects[ref.target]
                refs.append({"ref_id": len(refs), "ann_id": ann_ids[ref.target], "category_id": target.label + 1,
                             "image_id": image_id, "file_name": file_name, "split": split,
                             "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences})
    write_refer(out / "refcoco", refs, images, annotations, categories)


def write_regions(out: Path, seed: int, sizes: dict) -> None:
    data = tw.region_samples(sizes["regions"], seed)
    images, annotations = [], []
    for i, sample in enumerate(data.samples):
        file_name = _save(sample.image, out / "images" / f"toy_region_{i:06d}.png")
        images.append({"id": i + 1, "file_name": file_name, "width": sample.image.width, "height": sample.image.height})
        for box in sample.boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": sample.label + 1,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(data.class_names)]
    write_coco_regions(out / "regions" / "regions.json", images, annotations, categories)


def write_points(out: Path, seed: int, sizes: dict) -> None:
    for split, n, offset in (("train", sizes["points_train"], 100), ("test", sizes["points_test"], 0)):
        data = tw.point_clouds(n, seed + offset)
        write_modelnet40(out, split, data.points, data.labels.tolist(), data.class_names)


def write_judgments(out: Path, seed: int, sizes: dict) -> None:
    judged = tw.caption_judgments(sizes["judged_images"], seed)
    captions, expert, judged_pairs, kinds = {}, [], [], []
    for i, item in enumerate(judged):
        image = _save(item.image, out / "images" / f"{3000000000 + i}_toy{i:04d}.jpg")
        captions[image] = list(item.references)
        judged_pairs.append((image, f"{image}#0"))  # CrowdFlower also judged an image's own captions
        kinds.append("reference")
        for j, cand in enumerate(item.candidates):
            source = f"candidate_{i:04d}_{j}.jpg"  # candidates come from no rated image, as in the release's pools
            captions[source] = [cand.text]
            expert.append((image, f"{source}#0", cand.ratings))
            judged_pairs.append((image, f"{source}#0"))
            kinds.append(cand.kind)
    votes = tw.crowdflower_votes(kinds, seed)
    crowdflower = [(image, caption_id, n_yes, n_no) for (image, caption_id), (n_yes, n_no) in zip(judged_pairs, votes)]
    write_flickr8k(out / "flickr8k", captions, expert=expert, crowdflower=crowdflower)


def write_gallery(out: Path, seed: int, sizes: dict) -> None:
    items = []
    for i, item in enumerate(tw.retrieval_gallery(sizes["gallery"], seed)):
        name = _save(item.image, out / "images" / f"toy_gallery_{i:06d}.jpg")
        items.append((name, "test", item.captions))
    write_karpathy(out / "flickr30k" / "dataset_flickr30k.json", "flickr30k", items)


def write_compositionality(out: Path, seed: int, sizes: dict) -> None:
    for k, (subset, pairs) in enumerate(tc.sugar_crepe_pairs(sizes["sugar_crepe"], seed).items()):
        write_sugar_crepe(out / "compositionality", subset, [(p.image, p.caption, p.negative) for p in pairs], prefix=str(k + 1))
    write_winoground(out / "compositionality", [(p.images, p.captions) for p in tc.winoground_pairs(sizes["winoground"], seed)])


def write_translated(out: Path, seed: int, sizes: dict) -> None:
    images, captions = tc.translated_gallery(sizes["translated"], seed)
    paths = [out / "xtd10" / "xtd10" / "images" / f"toy_xtd_{i:06d}.jpg" for i in range(len(images))]
    for image, path in zip(images, paths):
        _save(image, path)
    for language, texts in captions.items():
        write_multilingual_captions(out / "xtd10", "xtd10", language, paths, texts)


PARTS = [write_classification, write_probe_set, write_rec, write_regions, write_points, write_judgments, write_gallery,
         write_compositionality, write_translated]


def make_toy_world(out: Path, seed: int = 0, scale: float = 1.0, force: bool = False, quiet: bool = False) -> Path:
    sizes = {k: max(8, int(round(v * scale))) for k, v in BASE_SIZES.items()}
    manifest = {"format_version": FORMAT_VERSION, "seed": seed, "sizes": sizes}
    stamp = out / "MANIFEST.json"
    if not force and stamp.is_file() and json.loads(stamp.read_text()) == manifest:
        if not quiet:
            print(f"toy world already at {out} (seed {seed}); --force to rewrite")
        return out
    out.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for part in PARTS:
        if not quiet:
            print(f"  {part.__name__.replace('write_', '')} ...", flush=True)
        part(out, seed, sizes)
    stamp.write_text(json.dumps(manifest, indent=1))
    print(f"toy world written to {out} (seed {seed}, scale {scale})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="clipbench-toy-world", description="Write the seeded toy world in real dataset formats.")
    parser.add_argument("--out", type=Path, default=Path("data/toy"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every part's size")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.scale <= 0:
        sys.exit("error: --scale must be > 0")
    try:
        make_toy_world(args.out, args.seed, args.scale, args.force, args.quiet)
    except ClipbenchError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()

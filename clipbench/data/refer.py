"""Referring expression comprehension data: the refer release, jxu124/refcoco-style HF rows, ReCLIP jsonl.

Every loader produces a ``RecDataset``: images, each with its proposals (gold annotations, or a detector's
boxes from a MAttNet/ReCLIP ``dets_dict`` JSON) and the sentences that refer to one of its objects.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from clipbench.data.base import (
    ImageRoot,
    is_regular_file,
    load_hf_split,
    open_rgb,
    register_dataset,
    require_dir,
    require_file,
)
from clipbench.errors import ConfigError, DataError
from clipbench.metrics.boxes import Box, is_malformed, parse_xywh, xywh_to_xyxy

# ---------------------------------------------------------------- the common structure


@dataclass
class RefSentence:
    ref_id: int
    sent_id: int
    text: str
    gold_ann_id: int | None
    gold_box: Box  # x0, y0, x1, y1

    @property
    def sample_id(self) -> str:
        return f"{self.ref_id}:{self.sent_id}"


@dataclass
class Proposal:
    box: Box  # x0, y0, x1, y1 as given (clipping to the image happens at evaluation)
    ann_id: int | None = None  # the annotation id for gold proposals, None for detections


@dataclass
class RecImage:
    image_id: int | str
    path: Path
    proposals: list[Proposal] = field(default_factory=list)
    sentences: list[RefSentence] = field(default_factory=list)


@dataclass
class RecDataset:
    images: list[RecImage]
    split: str
    gold_proposals: bool  # correct = same annotation id; otherwise IoU > threshold

    def image(self, entry: RecImage) -> Image.Image | None:
        return open_rgb(entry.path)

    def sentences(self) -> Iterable[RefSentence]:
        for entry in self.images:
            yield from entry.sentences

    def __len__(self) -> int:
        return sum(len(e.sentences) for e in self.images)


@dataclass
class _Ref:
    ref_id: int
    image_id: Any
    ann_id: int | None
    gold_box: Box
    sentences: list[tuple[int, str]]  # (sent_id, text)


def assemble(
    refs: Sequence[_Ref], proposals: dict[Any, list[Proposal]], paths: dict[Any, Path], split: str, gold: bool
) -> RecDataset:
    """Group refs by image, in order of first appearance."""
    images: OrderedDict[Any, RecImage] = OrderedDict()
    for ref in refs:
        entry = images.get(ref.image_id)
        if entry is None:
            entry = images[ref.image_id] = RecImage(ref.image_id, paths[ref.image_id], list(proposals.get(ref.image_id, [])))
        entry.sentences += [RefSentence(ref.ref_id, sid, text, ref.ann_id, ref.gold_box) for sid, text in ref.sentences]
    return RecDataset(list(images.values()), split, gold)


def load_detections(path: str | Path) -> dict[str, list[Proposal]]:
    """A detector's boxes per image id (as a string).

    Accepts ReCLIP's ``dets_dict`` (``{image_id: [{box: [x, y, w, h], ...}]}``) and MAttNet's
    ``{dets: [{image_id, box: [x, y, w, h], ...}]}`` or a plain list of such dets.
    """
    path = Path(path)
    data = _read_json(path)
    try:
        if isinstance(data, dict) and "dets" not in data:
            return {str(k): [Proposal(xywh_to_xyxy(d["box"])) for d in dets] for k, dets in data.items()}
        dets = data["dets"] if isinstance(data, dict) else data
        out: dict[str, list[Proposal]] = {}
        for d in dets:
            out.setdefault(str(d["image_id"]), []).append(Proposal(xywh_to_xyxy(d["box"])))
        return out
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a detections file in dets_dict format ({type(exc).__name__}: {exc})") from None


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: could not read JSON ({type(exc).__name__}: {exc})") from None


def _with_detections(proposals: dict[Any, list[Proposal]], detections: str | None) -> tuple[dict[Any, list[Proposal]], bool]:
    if not detections:
        return proposals, True
    dets = load_detections(detections)
    return {k: dets.get(str(k), []) for k in proposals}, False


# ---------------------------------------------------------------- the refer release

SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
SPLITS = {"unc": ("train", "val", "testA", "testB"), "umd": ("train", "val", "test"), "google": ("train", "val")}
REFER_HOW = (
    "get refcoco.zip / refcoco+.zip / refcocog.zip from the refer project (github.com/lichengunc/refer, "
    "data/README.md) and point dataset.root at the folder holding refs(<splitBy>).p and instances.json "
    "(or at its parent with one folder per dataset)"
)
IMAGES_HOW = "point dataset.images at the COCO train2014 image folder (cocodataset.org)"
REFS_FILE = "refs({split_by}).p"  # a Python-2 pickle of the refs list
INSTANCES_FILE = "instances.json"  # COCO-style images and annotations


@dataclass
class ReferConfig:
    name: str = "refcoco"
    root: str | None = None  # holds refs(<split_by>).p and instances.json, or <dataset>/ folders with them
    images: str | None = None  # COCO train2014 images
    split: str = "val"
    split_by: str | None = None  # default: unc for refcoco/refcoco+, umd for refcocog
    detections: str | None = None  # dets_dict JSON of detector proposals; null = gold boxes
    sentence_field: str = "raw"  # raw | sent
    allow_outside_images: bool = False  # accept absolute or ../ file names that leave dataset.images

    def validate(self) -> None:
        split_by = self.split_by or SPLIT_BY[self.name]
        if split_by not in SPLITS:
            raise ConfigError("dataset.split_by", f"{split_by!r} is not allowed; use one of {sorted(SPLITS)}")
        if self.split not in SPLITS[split_by]:
            raise ConfigError("dataset.split", f"{self.split!r} is not a {self.name} ({split_by}) split; use one of {SPLITS[split_by]}")
        if self.sentence_field not in ("raw", "sent"):
            raise ConfigError("dataset.sentence_field", f"{self.sentence_field!r} is not allowed; use raw or sent")
        folder = refer_dir(self)
        if not (folder / INSTANCES_FILE).is_file():
            raise ConfigError("dataset.root", f"{folder / INSTANCES_FILE} does not exist; {REFER_HOW}")
        require_dir(self.images, "dataset.images", IMAGES_HOW)
        if self.detections:
            require_file(self.detections, "dataset.detections", "give a dets_dict JSON (MAttNet detections, as ReCLIP ships them)")


def refer_dir(cfg: ReferConfig) -> Path:
    """The folder holding refs(<split_by>).p: ``root`` itself or ``root/<dataset>``."""
    root = require_dir(cfg.root, "dataset.root", REFER_HOW)
    refs_name = REFS_FILE.format(split_by=cfg.split_by or SPLIT_BY[cfg.name])
    for folder in (root, root / cfg.name):
        if (folder / refs_name).is_file():
            return folder
    raise ConfigError("dataset.root", f"no {refs_name} in {root} or {root / cfg.name}; {REFER_HOW}")


class _PlainDataUnpickler(pickle.Unpickler):
    """Containers and scalars only: any global (class, function) is refused, so no code can run."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, MemoryError)


def read_refs(path: Path) -> list[dict]:
    """The refs list of a refer ``refs(*).p`` (a Python-2 pickle), checked for the keys evaluation needs."""
    try:
        with open(path, "rb") as f:
            refs = _PlainDataUnpickler(f, fix_imports=True, encoding="utf-8", errors="replace").load()
    except PICKLE_ERRORS as exc:
        raise DataError(f"{path}: not a valid refer refs pickle ({exc}); only plain containers and scalars are allowed") from None
    needed = ("ref_id", "ann_id", "image_id", "split", "sentences")
    if not isinstance(refs, list) or not all(isinstance(r, dict) and all(k in r for k in needed) for r in refs):
        raise DataError(f"{path}: malformed refs file; expected a list of dicts with keys {list(needed)}")
    return refs


def _instances(path: Path) -> tuple[dict, dict]:
    """(annotations by image id, image records by id) from a COCO-style instances.json."""
    data = _read_json(path)
    try:
        ids = Counter(im["id"] for im in data.get("images", []))
        images = {im["id"]: im for im in data.get("images", [])}
        anns: dict[Any, list[dict]] = {}
        for ann in data["annotations"]:
            anns.setdefault(ann["image_id"], []).append(ann)
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: malformed instances file ({type(exc).__name__}: {exc})") from None
    repeated = [(i, n) for i, n in ids.items() if n > 1]
    if repeated:  # one record would silently stand for the other's file name and refs
        raise DataError(f"{path}: image id {repeated[0][0]} appears {repeated[0][1]} times in 'images' "
                        f"({len(repeated)} repeated id(s)); each image needs one record")
    return anns, images


def report_malformed(path: Path, boxes: dict) -> None:
    """One line naming the file and the first annotation whose bbox is not four numbers."""
    bad = [ann_id for ann_id, box in boxes.items() if is_malformed(box)]
    if bad:
        print(f"{path}: {len(bad)} annotation(s) with a malformed bbox (first: id {bad[0]}); "
              "their boxes are skipped and counted")


_ANN_SUFFIX = re.compile(r"_\d+(\.\w+)$")


def coco_file_name(ref_file_name: str) -> str:
    """refer's ref file_name carries the annotation id (``COCO_train2014_000000581857_16.jpg``); drop it."""
    return _ANN_SUFFIX.sub(r"\1", ref_file_name)


def load_refer(cfg: ReferConfig) -> RecDataset:
    folder = refer_dir(cfg)
    refs_path = folder / REFS_FILE.format(split_by=cfg.split_by or SPLIT_BY[cfg.name])
    instances_path = folder / INSTANCES_FILE
    refs = read_refs(refs_path)
    anns_by_image, image_records = _instances(instances_path)
    ann_box = {a["id"]: parse_xywh(a.get("bbox")) for anns in anns_by_image.values() for a in anns}
    report_malformed(instances_path, ann_box)
    images_root = ImageRoot(cfg.images, cfg.allow_outside_images)
    selected, paths = [], {}
    try:
        for r in refs:
            if r["split"] != cfg.split:
                continue
            if r["ann_id"] not in ann_box:
                raise DataError(f"{refs_path}: ref {r['ref_id']} names annotation {r['ann_id']}, which {instances_path} lacks")
            record = image_records.get(r["image_id"])
            name = record["file_name"] if record else coco_file_name(r["file_name"])
            paths[r["image_id"]] = images_root.path(name)
            sentences = [(int(s["sent_id"]), str(s[cfg.sentence_field])) for s in r["sentences"]]
            selected.append(_Ref(int(r["ref_id"]), r["image_id"], int(r["ann_id"]), ann_box[r["ann_id"]], sentences))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{refs_path}: malformed ref ({type(exc).__name__}: {exc})") from None
    if not selected:
        raise DataError(f"{refs_path}: split {cfg.split!r} has no refs")
    images_root.report()
    proposals = {
        image_id: [Proposal(ann_box[a["id"]], int(a["id"])) for a in anns_by_image.get(image_id, [])]
        for image_id in paths
    }
    proposals, gold = _with_detections(proposals, cfg.detections)
    return assemble(selected, proposals, paths, cfg.split, gold)


def build_refer(cfg: ReferConfig) -> RecDataset:
    return load_refer(cfg)


for _name in SPLIT_BY:  # refcoco, refcoco+, refcocog share the loader; the config's name picks the folder
    register_dataset(_name, ReferConfig, tasks={"rec"})(build_refer)


# ---------------------------------------------------------------- Hugging Face jxu124/refcoco-style rows

HF_SPLITS = {"val": "validation", "testA": "test"}  # jxu124/refcoco(+)'s "test" split is testA


@dataclass
class HFReferConfig:
    name: str = "refcoco_hf"
    path: str = "jxu124/refcoco"  # hub name (jxu124/refcoco, jxu124/refcocoplus, jxu124/refcocog) or save_to_disk folder
    split: str = "val"  # val, testA, testB (refcocog: val, test); jxu124's own names work too
    images: str | None = None  # COCO train2014 images (image_path is resolved under it, or its file name)
    instances: str | None = None  # instances.json: all COCO annotations of the image become the proposals
    detections: str | None = None
    root: str | None = None  # cache_dir for hub downloads
    sentence_field: str = "raw"
    allow_outside_images: bool = False  # accept absolute or ../ file names that leave dataset.images

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("dataset.path", "is not set; give jxu124/refcoco (or refcocoplus, refcocog) or a save_to_disk folder")
        require_dir(self.images, "dataset.images", IMAGES_HOW)
        if self.instances:
            require_file(self.instances, "dataset.instances", "give the refer release's instances.json")
        if self.detections:
            require_file(self.detections, "dataset.detections", "give a dets_dict JSON (MAttNet detections, as ReCLIP ships them)")
        if self.sentence_field not in ("raw", "sent"):
            raise ConfigError("dataset.sentence_field", f"{self.sentence_field!r} is not allowed; use raw or sent")


def _loads_maybe(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def _resolve_image(images_root: ImageRoot, *names: str | None) -> Path | None:
    """The first of ``names`` (as given, then by file name alone) that exists under the image root."""
    given = [n for n in names if n]
    if any(images_root.path(n) is None for n in given):
        return None
    candidates = [images_root.folder / n for n in given] + [images_root.folder / Path(n).name for n in given]
    return next((p for p in candidates if is_regular_file(p)), candidates[0] if candidates else images_root.folder)


def load_refer_hf(cfg: HFReferConfig) -> RecDataset:
    ds = load_hf_split(cfg.path, cfg.split, cfg.root, aliases=HF_SPLITS)
    images_root = ImageRoot(cfg.images, cfg.allow_outside_images)
    refs, paths, proposals = [], {}, {}
    try:
        for row in ds:
            image_id = row["image_id"]
            gold = xywh_to_xyxy(row["bbox"])
            sentences = _loads_maybe(row["sentences"]) or []
            refs.append(_Ref(int(row["ref_id"]), image_id, int(row["ann_id"]), gold,
                             [(int(s["sent_id"]), str(s[cfg.sentence_field])) for s in sentences]))
            fallback = coco_file_name(row["file_name"]) if row.get("file_name") else None
            paths[image_id] = _resolve_image(images_root, row.get("image_path"), fallback)
            found = proposals.setdefault(image_id, {})
            found[int(row["ann_id"])] = gold
            raw = _loads_maybe(row.get("raw_anns"))
            for ann in raw if isinstance(raw, list) else []:
                if isinstance(ann, dict) and "id" in ann and "bbox" in ann:
                    found.setdefault(int(ann["id"]), xywh_to_xyxy(ann["bbox"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"dataset.path={cfg.path}: rows are not jxu124/refcoco-style ({type(exc).__name__}: {exc})") from None
    images_root.report()
    if cfg.instances:
        anns_by_image, _ = _instances(Path(cfg.instances))
        gold_props = {i: [Proposal(parse_xywh(a.get("bbox")), int(a["id"])) for a in anns_by_image.get(i, [])] for i in paths}
    else:  # the rows name only referred objects: each image's proposals are the referred objects of the split
        gold_props = {i: [Proposal(box, aid) for aid, box in sorted(found.items())] for i, found in proposals.items()}
    gold_props, gold = _with_detections(gold_props, cfg.detections)
    return assemble(refs, gold_props, paths, cfg.split, gold)


@register_dataset("refcoco_hf", HFReferConfig, tasks={"rec"})
def build_refer_hf(cfg: HFReferConfig) -> RecDataset:
    return load_refer_hf(cfg)


# ---------------------------------------------------------------- ReCLIP jsonl


@dataclass
class ReclipJsonlConfig:
    name: str = "reclip_jsonl"
    path: str | None = None  # the jsonl file; may contain {split}, e.g. /data/reclip/refcoco_{split}.jsonl
    split: str = "val"
    images: str | None = None
    detections: str | None = None
    allow_outside_images: bool = False  # accept absolute or ../ file names that leave dataset.images

    def validate(self) -> None:
        require_file(self.jsonl_path(), "dataset.path", "give ReCLIP's jsonl (e.g. refcoco_val.jsonl from github.com/allenai/reclip)")
        require_dir(self.images, "dataset.images", IMAGES_HOW)
        if self.detections:
            require_file(self.detections, "dataset.detections", "give a dets_dict JSON (MAttNet detections, as ReCLIP ships them)")

    def jsonl_path(self) -> str | None:
        return self.path.replace("{split}", self.split) if self.path else None


def load_reclip_jsonl(cfg: ReclipJsonlConfig) -> RecDataset:
    path = Path(str(cfg.jsonl_path())).expanduser()
    images_root = ImageRoot(cfg.images, cfg.allow_outside_images)
    refs, paths, proposals = [], {}, {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                anns = {int(a["id"]): xywh_to_xyxy(a["bbox"]) for a in row["anns"]}
                ann_id = int(row["ann_id"])
                sentences = [(int(s.get("sent_id", k)), str(s["raw"])) for k, s in enumerate(row["sentences"])]
                image_id = row["image_id"]
                refs.append(_Ref(int(row.get("ref_id", line_no)), image_id, ann_id, anns[ann_id], sentences))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{path}, line {line_no + 1}: not a ReCLIP jsonl row ({type(exc).__name__}: {exc})") from None
            paths[image_id] = _resolve_image(images_root, row["file_name"])
            found = proposals.setdefault(image_id, {})
            for aid, box in anns.items():
                found.setdefault(aid, box)
    images_root.report()
    gold_props = {i: [Proposal(box, aid) for aid, box in found.items()] for i, found in proposals.items()}
    gold_props, gold = _with_detections(gold_props, cfg.detections)
    return assemble(refs, gold_props, paths, cfg.split, gold)


@register_dataset("reclip_jsonl", ReclipJsonlConfig, tasks={"rec"})
def build_reclip_jsonl(cfg: ReclipJsonlConfig) -> RecDataset:
    return load_reclip_jsonl(cfg)

"""Caption data: sets to score with CLIPScore, human-judgment corpora, and retrieval galleries.

Every loader reads its release's real on-disk format; a ``write_<format>`` next to it writes that
format (tests and the toy world use them). Scoring sets (task=clipscore):

* ``captions``: the official CLIPScore tool's inputs (candidates JSON ``{image_id: caption}``, an image
  folder whose file stems are the ids, optional references JSON ``{image_id: [refs]}``).
* ``flickr8k_expert`` / ``flickr8k_cf``: ``ExpertAnnotations.txt`` / ``CrowdFlowerAnnotations.txt``
  with ``Flickr8k.token.txt``.
* ``composite``: the AMT ``{8k,30k,coco}_correctness.csv`` files plus each source's own captions.
* ``pascal50s``: ``pair_pascal.mat`` (pairs, categories) and ``consensus_pascal.mat`` (48 triplets per pair).

Retrieval galleries (task=retrieval): Karpathy-split JSON (``flickr30k``, ``coco_captions``) and
Hugging Face caption datasets (``hf_captions``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipbench.data.base import (
    IMAGE_ERRORS,
    ImageRoot,
    file_identity,
    load_hf_split,
    open_rgb,
    register_dataset,
    require_dir,
    require_file,
)
from clipbench.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# ---------------------------------------------------------------- shared structures


@dataclass
class JudgedCaption:
    """One candidate caption of one image, its references and the human ratings it received."""

    image_id: str
    candidate: str
    references: list[str]
    ratings: list[float] = field(default_factory=list)
    candidate_id: str = ""


@dataclass
class CaptionPair:
    """Two candidates of one image judged against each other (Pascal-50S)."""

    image_id: str
    caption_a: str
    caption_b: str
    references: list[str]  # one per judgment, in judgment order
    winners: list[int]  # per judgment: 0 = A preferred, 1 = B preferred
    category: str


@dataclass
class CaptionSet:
    """Captions to score against images, and how to compare the scores with human judgments.

    ``protocol``: ``score`` (no judgments), ``kendall`` (``items`` with ratings; ``tau_variant`` b or
    c) or ``pairwise`` (``pairs``, accuracy against the majority).
    """

    name: str
    images: dict[str, Path]  # image id -> file
    protocol: str
    items: list[JudgedCaption] = field(default_factory=list)
    pairs: list[CaptionPair] = field(default_factory=list)
    tau_variant: str | None = None
    rating_name: str = "rating"
    references_per_draw: int = 5
    draws: int = 5

    @property
    def has_references(self) -> bool:
        rows = self.items or self.pairs
        return bool(rows) and all(r.references for r in rows)


def is_caption(text: Any) -> bool:
    """A usable caption: a string with some non-space text."""
    return isinstance(text, str) and bool(text.strip())


def check_caption(text: Any, where: str, allow_empty: bool = False) -> str:
    """A caption must be a (non-empty, unless ``allow_empty``) string; the error names where it came from.
    Loaders whose task skips and counts empty captions allow them."""
    if allow_empty and isinstance(text, str):
        return text
    if not is_caption(text):
        raise DataError(f"{where}: caption must be a non-empty string, got {text!r}")
    return text


def normalise_caption(text: str) -> str:
    """For matching the same caption across files: lower case, single spaces, no space before punctuation."""
    text = " ".join(text.lower().split())
    text = re.sub(r"\s+([.,!?;:])", r"\1", text)
    return text.rstrip(" .")


def without(references: Iterable[str], candidate: str) -> list[str]:
    """``references`` minus any that is the candidate itself."""
    key = normalise_caption(candidate)
    return [r for r in references if normalise_caption(r) != key]


def image_index(folder: Path) -> dict[str, Path]:
    """Image files directly in ``folder``, by file stem."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _tab_lines(path: Path, min_fields: int, what: str):
    """(line number, fields) of a tab-separated file; a malformed line is one clear error."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < min_fields:
                raise DataError(f"{path}:{lineno}: malformed line, expected {what}: {line[:80]!r}")
            yield lineno, fields


def _number(text: str, path: Path, lineno: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: {what} {text!r} is not a number") from None
    if not np.isfinite(value):
        raise DataError(f"{path}:{lineno}: {what} {text!r} is not finite")
    return value


# ---------------------------------------------------------------- official tool's JSON inputs


def read_candidates_json(path: str | Path) -> dict[str, str]:
    data = _read_json(Path(path))
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{image_id: caption}}")
    return {str(k): check_caption(v, f"{path}: image {k!r}", allow_empty=True) for k, v in data.items()}


def read_references_json(path: str | Path) -> dict[str, list[str]]:
    data = _read_json(Path(path))
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{image_id: [references]}}")
    out = {}
    for k, refs in data.items():
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, list) or not refs:
            raise DataError(f"{path}: image {k!r}: references must be a non-empty list of strings")
        out[str(k)] = [check_caption(r, f"{path}: image {k!r} reference", allow_empty=True) for r in refs]
    return out


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def write_caption_files(
    folder: str | Path, candidates: dict[str, str], references: dict[str, list[str]] | None = None
) -> tuple[Path, Path | None]:
    """``candidates.json`` (and ``references.json``) in the official tool's layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cand_path = folder / "candidates.json"
    cand_path.write_text(json.dumps(candidates, indent=1))
    ref_path = None
    if references is not None:
        ref_path = folder / "references.json"
        ref_path.write_text(json.dumps(references, indent=1))
    return cand_path, ref_path


CAPTIONS_HOW = "give the official tool's candidates JSON, image folder and optional references JSON"


@dataclass
class CaptionFilesConfig:
    name: str = "captions"
    candidates: str | None = None  # {image_id: caption}
    images: str | None = None  # folder; image id = file stem
    references: str | None = None  # optional {image_id: [references]}
    allow_outside_images: bool = False  # accept absolute or ../ file names that leave dataset.images

    def validate(self) -> None:
        require_file(self.candidates, "dataset.candidates", CAPTIONS_HOW)
        require_dir(self.images, "dataset.images", CAPTIONS_HOW)
        if self.references not in (None, ""):
            require_file(self.references, "dataset.references", CAPTIONS_HOW)


@register_dataset("captions", CaptionFilesConfig, tasks={"clipscore"})
def build_captions(cfg: CaptionFilesConfig) -> CaptionSet:
    candidates = read_candidates_json(cfg.candidates)
    references = read_references_json(cfg.references) if cfg.references else {}
    missing_refs = [k for k in candidates if references and k not in references]
    if missing_refs:
        raise DataError(f"{cfg.references}: no references for image {missing_refs[0]!r} ({len(missing_refs)} missing)")
    files = image_index(Path(cfg.images))
    images_root = ImageRoot(cfg.images, cfg.allow_outside_images)
    images = {k: files.get(k) or images_root.path(k) for k in candidates}  # a missing file is skipped later
    images_root.report()
    items = [JudgedCaption(k, c, list(references.get(k, []))) for k, c in candidates.items()]
    return CaptionSet("captions", images, "score", items)


# ---------------------------------------------------------------- Flickr8k (Hodosh et al. 2013)

FLICKR8K_TOKENS = "Flickr8k.token.txt"
FLICKR8K_EXPERT = "ExpertAnnotations.txt"
FLICKR8K_CF = "CrowdFlowerAnnotations.txt"
FLICKR8K_HOW = (
    "download the Flickr8k text release (Flickr8k_text.zip: Flickr8k.token.txt, ExpertAnnotations.txt, "
    "CrowdFlowerAnnotations.txt) and point dataset.root at it; dataset.images at Flicker8k_Dataset/"
)


def read_caption_tokens(path: str | Path) -> dict[str, dict[int, str]]:
    """``image#k<TAB>caption`` lines (Flickr8k.token.txt, Flickr30k's results_20130124.token) -> image -> k -> caption."""
    path = Path(path)
    out: dict[str, dict[int, str]] = defaultdict(dict)
    for lineno, fields in _tab_lines(path, 2, "image#k<TAB>caption"):
        image, sep, k = fields[0].rpartition("#")
        if not sep or not k.isdigit() or not image:
            raise DataError(f"{path}:{lineno}: caption id {fields[0]!r} is not <image>#<k>")
        out[image][int(k)] = check_caption(fields[1], f"{path}:{lineno}: {fields[0]}", allow_empty=True)
    return dict(out)


def _caption_lookup(tokens: dict[str, dict[int, str]], caption_id: str, path: Path, lineno: int) -> str:
    image, _, k = caption_id.rpartition("#")
    try:
        return tokens[image][int(k)]
    except (KeyError, ValueError):
        raise DataError(f"{path}:{lineno}: caption {caption_id!r} is not in {FLICKR8K_TOKENS}") from None


def read_flickr8k_judgments(path: str | Path, tokens: dict[str, dict[int, str]], kind: str) -> list[JudgedCaption]:
    """Expert (``image  caption_id  e1 e2 e3``) or CrowdFlower (``image  caption_id  yes_fraction  n_yes  n_no``).

    As the official ``download.py`` (jmhessel/clipscore): Expert drops a candidate whose text is one of the
    image's references, and each expert rating stays its own judgment. CrowdFlower keeps every judgment
    (the rating is the yes-fraction) and removes each candidate whose text is in the image's reference list
    from that list (first occurrence); the list is shared, so all judgments of the image use the reduced list.
    """
    path = Path(path)
    items = []
    shared_refs: dict[str, list[str]] = {}
    for lineno, fields in _tab_lines(path, 5, "image<TAB>caption_id<TAB>three numbers"):
        image, caption_id = fields[0], fields[1]
        candidate = _caption_lookup(tokens, caption_id, path, lineno)
        if image not in tokens:
            raise DataError(f"{path}:{lineno}: image {image!r} has no captions in {FLICKR8K_TOKENS}")
        if kind == "expert":
            refs = [c for k, c in sorted(tokens[image].items())]
            if candidate in refs:
                continue
            ratings = [_number(v, path, lineno, "expert rating") for v in fields[2:5]]
            if any(not 1 <= r <= 4 for r in ratings):
                raise DataError(f"{path}:{lineno}: expert ratings must be 1-4, got {fields[2:5]}")
        else:
            ratings = [_number(fields[2], path, lineno, "yes fraction")]
            refs = shared_refs.setdefault(image, [c for k, c in sorted(tokens[image].items())])
            if candidate in refs:
                refs.remove(candidate)
        items.append(JudgedCaption(Path(image).stem, candidate, refs, ratings, caption_id))
    if not items:
        raise DataError(f"{path}: no judgments to evaluate (the file is empty or judges only references)")
    return [replace(it, references=list(it.references)) for it in items]  # the final lists, one copy each


def write_flickr8k(
    root: str | Path,
    captions: dict[str, list[str]],
    expert: Sequence[tuple[str, str, Sequence[int]]] = (),
    crowdflower: Sequence[tuple[str, str, int, int]] = (),
) -> Path:
    """The Flickr8k text release: ``captions`` is image file -> its captions (ids ``file#k``);
    ``expert`` rows (image, caption_id, [e1, e2, e3]); ``crowdflower`` rows (image, caption_id, n_yes, n_no)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / FLICKR8K_TOKENS, "w") as f:
        for image, caps in captions.items():
            for k, c in enumerate(caps):
                f.write(f"{image}#{k}\t{c}\n")
    with open(root / FLICKR8K_EXPERT, "w") as f:
        for image, caption_id, ratings in expert:
            f.write("\t".join([image, caption_id, *(str(int(r)) for r in ratings)]) + "\n")
    with open(root / FLICKR8K_CF, "w") as f:
        for image, caption_id, n_yes, n_no in crowdflower:
            f.write(f"{image}\t{caption_id}\t{n_yes / (n_yes + n_no):g}\t{n_yes}\t{n_no}\n")
    return root


@dataclass
class Flickr8kConfig:
    name: str = "flickr8k_expert"
    root: str | None = None  # holds Flickr8k.token.txt and the annotation file
    images: str | None = None  # Flicker8k_Dataset/ (image files)

    def validate(self) -> None:
        root = require_dir(self.root, "dataset.root", FLICKR8K_HOW)
        annotations = FLICKR8K_EXPERT if self.name == "flickr8k_expert" else FLICKR8K_CF
        for name in (FLICKR8K_TOKENS, annotations):
            require_file(root / name, "dataset.root", FLICKR8K_HOW)
        require_dir(self.images, "dataset.images", FLICKR8K_HOW)


def _build_flickr8k(cfg: Flickr8kConfig, kind: str) -> CaptionSet:
    root = Path(cfg.root)
    tokens = read_caption_tokens(root / FLICKR8K_TOKENS)
    annotations = root / (FLICKR8K_EXPERT if kind == "expert" else FLICKR8K_CF)
    items = read_flickr8k_judgments(annotations, tokens, kind)
    images = {it.image_id: Path(cfg.images) / f"{it.image_id}.jpg" for it in items}  # ids are file stems
    variant, rating = ("c", "expert rating") if kind == "expert" else ("b", "yes fraction")
    return CaptionSet(cfg.name, images, "kendall", items, tau_variant=variant, rating_name=rating)


@register_dataset("flickr8k_expert", Flickr8kConfig, tasks={"clipscore"})
def build_flickr8k_expert(cfg: Flickr8kConfig) -> CaptionSet:
    return _build_flickr8k(cfg, "expert")


@dataclass
class Flickr8kCFConfig(Flickr8kConfig):
    name: str = "flickr8k_cf"


@register_dataset("flickr8k_cf", Flickr8kCFConfig, tasks={"clipscore"})
def build_flickr8k_cf(cfg: Flickr8kCFConfig) -> CaptionSet:
    return _build_flickr8k(cfg, "crowdflower")


# ---------------------------------------------------------------- Composite (Aditya et al. 2015)

COMPOSITE_FILES = {"8k": "8k_correctness.csv", "30k": "30k_correctness.csv", "coco": "coco_correctness.csv"}
COMPOSITE_HOW = (
    "download the Composite dataset (AMT results {8k,30k,coco}_correctness.csv) into dataset.root; "
    "references come from dataset.flickr8k_captions / flickr30k_captions / coco_captions"
)


def read_composite_csv(path: str | Path) -> list[tuple[str, list[str], list[float], int]]:
    """AMT results (';'-separated): per HIT (image file, candidate texts, correctness ratings, line).

    Columns ``Input.image_url``, ``Input.text1..k`` and ``Answer.Q1Answer..k``; rows without an image
    URL (the release's trailing summary lines) are ignored.
    """
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=";")
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        col = {name.strip(): i for i, name in enumerate(header)}
        if "Input.image_url" not in col:
            raise DataError(f"{path}:1: no Input.image_url column; is this a Composite *_correctness.csv?")
        k = 1
        while f"Input.text{k}" in col:
            k += 1
        texts = [col[f"Input.text{i}"] for i in range(1, k)]
        answers = [col.get(f"Answer.Q{i}Answer") for i in range(1, k)]
        if not texts or None in answers:
            raise DataError(f"{path}:1: expected Input.text1..k and Answer.Q1Answer..Qk columns")
        rows = []
        for row in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= col["Input.image_url"] or not row[col["Input.image_url"]].strip():
                continue
            if len(row) <= max(texts + answers):
                raise DataError(f"{path}:{lineno}: malformed line, {len(row)} fields for {len(header)} columns")
            url = row[col["Input.image_url"]].strip()
            cands = [check_caption(row[i], f"{path}:{lineno}: Input.text{j + 1}") for j, i in enumerate(texts)]
            ratings = [_number(row[i], path, lineno, f"Answer.Q{j + 1}Answer") for j, i in enumerate(answers)]
            rows.append((url.rsplit("/", 1)[-1], cands, ratings, lineno))
    return rows


def write_composite_csv(path: str | Path, hits: Sequence[tuple[str, Sequence[str], Sequence[int]]]) -> Path:
    """AMT batch results as the release has them: (image_url, candidate texts, correctness ratings) per HIT,
    followed by the release's two trailing summary lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = max(len(t) for _, t, _ in hits)
    header = ["HITId", "HITTypeId", "Title", "Description", "Keywords", "Reward", "WorkerId", "Input.image_url"]
    header += [f"Input.text{i}" for i in range(1, k + 1)] + [f"Answer.Q{i}Answer" for i in range(1, k + 1)]
    header += ["Approve", "Reject"]
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=";")
        writer.writerow(header)
        for n, (url, texts, ratings) in enumerate(hits):
            writer.writerow(
                [f"HIT{n:05d}", "T1", "Rate captions, please", "Judge how correct, and how thorough, each caption is",
                 "image, caption", "$0.05", f"W{n % 7}", url, *texts, *(str(int(r)) for r in ratings), "", ""]
            )
        writer.writerow([""] * len(header))
        writer.writerow([""] * len(header))
    return path


def read_coco_captions(path: str | Path) -> dict[str, list[str]]:
    """COCO ``captions_*.json`` -> image file stem -> captions."""
    data = _read_json(Path(path))
    try:
        names = {img["id"]: Path(img["file_name"]).stem for img in data["images"]}
        out: dict[str, list[str]] = defaultdict(list)
        for ann in data["annotations"]:
            out[names[ann["image_id"]]].append(ann["caption"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a COCO captions file (missing {exc})") from None
    return dict(out)


def write_coco_captions(path: str | Path, captions: dict[str, list[str]]) -> Path:
    """COCO captions JSON for image files -> captions (ids numbered from 1)."""
    images, annotations = [], []
    for i, (file_name, caps) in enumerate(captions.items(), 1):
        images.append({"id": i, "file_name": file_name})
        annotations += [{"id": len(annotations) + 1, "image_id": i, "caption": c} for c in caps]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


@dataclass
class CompositeConfig:
    name: str = "composite"
    root: str | None = None  # holds {8k,30k,coco}_correctness.csv
    images: str | None = None  # one folder holding the rated images (file names as in Input.image_url)
    subsets: list[str] = field(default_factory=lambda: ["8k", "30k", "coco"])
    flickr8k_captions: str | None = None  # Flickr8k.token.txt
    flickr30k_captions: str | None = None  # results_20130124.token
    coco_captions: str | None = None  # captions_val2014.json

    def validate(self) -> None:
        root = require_dir(self.root, "dataset.root", COMPOSITE_HOW)
        bad = [s for s in self.subsets if s not in COMPOSITE_FILES]
        if bad or not self.subsets:
            raise ConfigError("dataset.subsets", f"{bad or 'empty'} not allowed; choose from {list(COMPOSITE_FILES)}")
        for s in self.subsets:
            require_file(root / COMPOSITE_FILES[s], "dataset.root", COMPOSITE_HOW)
        for key in ("flickr8k_captions", "flickr30k_captions", "coco_captions"):
            if getattr(self, key) not in (None, ""):
                require_file(getattr(self, key), f"dataset.{key}", COMPOSITE_HOW)
        require_dir(self.images, "dataset.images", COMPOSITE_HOW)


COMPOSITE_REFERENCES = {"8k": ("flickr8k_captions", FLICKR8K_TOKENS), "30k": ("flickr30k_captions", "results_20130124.token"),
                        "coco": ("coco_captions", "captions_val2014.json")}


def _composite_references(cfg: CompositeConfig, subset: str) -> dict[str, list[str]]:
    """The subset's own captions: the configured file, else its release file name inside root, else none."""
    key, default = COMPOSITE_REFERENCES[subset]
    source = getattr(cfg, key) or (Path(cfg.root) / default if (Path(cfg.root) / default).is_file() else None)
    if not source:
        print(f"note: no dataset.{key}: composite {subset} captions have no references (RefCLIP-S is skipped)")
        return {}
    if subset == "coco":
        return read_coco_captions(source)
    return {Path(img).stem: [c for _, c in sorted(caps.items())] for img, caps in read_caption_tokens(source).items()}


@register_dataset("composite", CompositeConfig, tasks={"clipscore"})
def build_composite(cfg: CompositeConfig) -> CaptionSet:
    items, images = [], {}
    for subset in cfg.subsets:
        references = _composite_references(cfg, subset)
        path = Path(cfg.root) / COMPOSITE_FILES[subset]
        for file_name, cands, ratings, lineno in read_composite_csv(path):
            image_id = Path(file_name).stem
            images[image_id] = Path(cfg.images) / file_name
            refs = references.get(image_id, [])
            for j, (cand, rating) in enumerate(zip(cands, ratings)):
                items.append(JudgedCaption(image_id, cand, without(refs, cand), [rating], f"{subset}:{lineno}:{j + 1}"))
    return CaptionSet("composite", images, "kendall", items, tau_variant="c", rating_name="correctness")


# ---------------------------------------------------------------- Pascal-50S (Vedantam et al. 2015)

PASCAL_PAIRS = "pair_pascal.mat"
PASCAL_CONSENSUS = "consensus_pascal.mat"
PASCAL_JUDGMENTS = 48
PASCAL_CATEGORIES = {1: "HC", 2: "HI", 3: "HM", 4: "MM"}
PASCAL_HOW = (
    "download the CIDEr release's pyCIDErConsensus folder (pair_pascal.mat, consensus_pascal.mat) into "
    "dataset.root and the Pascal-50S images (VOC JPEGImages) into dataset.images"
)


def _unwrap(value):
    """A MATLAB cell/char/number as loaded by scipy, down to a str or a Python number."""
    while isinstance(value, np.ndarray):
        if value.dtype.kind == "U":
            return "".join(value.ravel().tolist())
        if value.size != 1:
            raise ValueError(f"expected one value, got an array of shape {value.shape}")
        value = value.ravel()[0]
    if isinstance(value, (np.str_, str)):
        return str(value)
    return value.item() if isinstance(value, np.generic) else value


def _loadmat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except (ValueError, OSError, TypeError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from None


def _records(array: np.ndarray, n_fields: int, path: Path, key: str) -> list[list]:
    """Rows of a MATLAB struct array (or cell array of cells) as lists of unwrapped values."""
    rows = []
    for i, rec in enumerate(np.asarray(array).ravel()):
        parts = list(rec) if not isinstance(rec, np.ndarray) else list(np.asarray(rec).ravel())
        try:
            values = [_unwrap(p) for p in parts]
        except ValueError as exc:
            raise DataError(f"{path}: {key} entry {i + 1}: {exc}") from None
        if len(values) != n_fields:
            raise DataError(f"{path}: {key} entry {i + 1} has {len(values)} fields, expected {n_fields}")
        rows.append(values)
    return rows


def read_pascal50s(root: str | Path) -> list[CaptionPair]:
    """Pairs from ``pair_pascal.mat`` (``new_input``: image, A, B; ``category`` 1-4) with their 48
    judgments from ``consensus_pascal.mat`` (``triplets``: reference, candidate 1, candidate 2, winner).

    The winner field is 1 when candidate 1 was judged closer to the reference, anything else for
    candidate 2; pair i owns triplets 48*i .. 48*i+47.
    """
    root = Path(root)
    pair_path = _pascal_file(root, PASCAL_PAIRS)
    consensus_path = _pascal_file(root, PASCAL_CONSENSUS)
    pair_mat, consensus = _loadmat(pair_path), _loadmat(consensus_path)
    for key, mat, path in (("new_input", pair_mat, pair_path), ("category", pair_mat, pair_path),
                           ("triplets", consensus, consensus_path)):
        if key not in mat:
            raise DataError(f"{path}: no {key!r} variable; is this the Pascal-50S release?")
    pairs = _records(pair_mat["new_input"], 3, pair_path, "new_input")
    categories = np.asarray(pair_mat["category"]).ravel()
    triplets = _records(consensus["triplets"], 4, consensus_path, "triplets")
    if len(categories) != len(pairs) or len(triplets) != PASCAL_JUDGMENTS * len(pairs):
        raise DataError(
            f"{root}: {len(pairs)} pairs, {len(categories)} categories and {len(triplets)} triplets; "
            f"expected {PASCAL_JUDGMENTS} triplets per pair"
        )
    out = []
    for i, ((image, a, b), cat) in enumerate(zip(pairs, categories)):
        a, b = check_caption(a, f"{pair_path}: pair {i + 1} A").strip(), check_caption(b, f"{pair_path}: pair {i + 1} B").strip()
        if int(cat) not in PASCAL_CATEGORIES:
            raise DataError(f"{pair_path}: pair {i + 1} has category {cat}; expected 1-4")
        refs, winners = [], []
        for j, (ref, ta, tb, winner) in enumerate(triplets[i * PASCAL_JUDGMENTS : (i + 1) * PASCAL_JUDGMENTS]):
            chosen = str(ta if winner == 1 else tb).strip()
            if chosen not in (a, b):
                raise DataError(
                    f"{consensus_path}: triplet {i * PASCAL_JUDGMENTS + j + 1} does not judge pair {i + 1} ({chosen[:40]!r})"
                )
            refs.append(check_caption(ref, f"{consensus_path}: triplet {i * PASCAL_JUDGMENTS + j + 1}").strip())
            winners.append(0 if chosen == a else 1)
        out.append(CaptionPair(Path(str(image)).stem, a, b, refs, winners, PASCAL_CATEGORIES[int(cat)]))
    return out


def _pascal_file(root: Path, name: str) -> Path:
    for candidate in (root / name, root / "pyCIDErConsensus" / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root}: no {name}; {PASCAL_HOW}")


def write_pascal50s(root: str | Path, pairs: Sequence[CaptionPair]) -> Path:
    """``pair_pascal.mat`` and ``consensus_pascal.mat`` in the release's layout (MATLAB struct arrays;
    triplet fields are 1x1 cells, winner 1 = first candidate, 2 = second). Image ids without a suffix get .jpg."""
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    codes = {v: k for k, v in PASCAL_CATEGORIES.items()}
    new_input = np.empty((1, len(pairs)), dtype=[("image", "O"), ("A", "O"), ("B", "O")])
    triplets = np.empty((1, PASCAL_JUDGMENTS * len(pairs)), dtype=[("A", "O"), ("B", "O"), ("C", "O"), ("winner", "O")])
    for i, p in enumerate(pairs):
        if len(p.references) != PASCAL_JUDGMENTS or len(p.winners) != PASCAL_JUDGMENTS:
            raise ConfigError("pairs", f"each pair needs {PASCAL_JUDGMENTS} references and winners")
        file_name = p.image_id if Path(p.image_id).suffix else f"{p.image_id}.jpg"
        new_input[0, i] = (file_name, p.caption_a, p.caption_b)
        for j, (ref, w) in enumerate(zip(p.references, p.winners)):
            triplets[0, i * PASCAL_JUDGMENTS + j] = (_cell(ref), _cell(p.caption_a), _cell(p.caption_b), np.array([[1.0 + w]]))
    savemat(root / PASCAL_PAIRS, {"new_input": new_input, "category": np.array([[codes[p.category] for p in pairs]], float)})
    savemat(root / PASCAL_CONSENSUS, {"triplets": triplets})
    return root


def _cell(text: str) -> np.ndarray:
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = text
    return cell


@dataclass
class Pascal50sConfig:
    name: str = "pascal50s"
    root: str | None = None  # holds pair_pascal.mat and consensus_pascal.mat (or pyCIDErConsensus/)
    images: str | None = None  # the pairs' image files
    references: int = 5  # references drawn from the 48 judgments' references
    draws: int = 5  # draws averaged over

    def validate(self) -> None:
        root = require_dir(self.root, "dataset.root", PASCAL_HOW)
        for name in (PASCAL_PAIRS, PASCAL_CONSENSUS):
            if not ((root / name).is_file() or (root / "pyCIDErConsensus" / name).is_file()):
                raise ConfigError("dataset.root", f"{root} has no {name}; {PASCAL_HOW}")
        require_dir(self.images, "dataset.images", PASCAL_HOW)
        if not 1 <= self.references <= PASCAL_JUDGMENTS:
            raise ConfigError("dataset.references", f"must be 1-{PASCAL_JUDGMENTS}, got {self.references}")
        if self.draws < 1:
            raise ConfigError("dataset.draws", f"must be >= 1, got {self.draws}")


@register_dataset("pascal50s", Pascal50sConfig, tasks={"clipscore"})
def build_pascal50s(cfg: Pascal50sConfig) -> CaptionSet:
    pairs = read_pascal50s(cfg.root)
    files = image_index(Path(cfg.images))
    images = {p.image_id: files.get(p.image_id, Path(cfg.images) / f"{p.image_id}.jpg") for p in pairs}
    return CaptionSet("pascal50s", images, "pairwise", pairs=pairs, references_per_draw=cfg.references, draws=cfg.draws)


# ---------------------------------------------------------------- retrieval galleries


class RetrievalSet:
    """Gallery images with their captions; ``text_to_image[t]`` is the image caption t describes."""

    def __init__(self, name: str, images: Sequence, captions: Sequence[Sequence[str]], key: Any, empty_captions: int = 0):
        self.name = name
        self._images = list(images)
        self.captions = [c for caps in captions for c in caps]
        self.text_to_image = [i for i, caps in enumerate(captions) for _ in caps]
        self.key = key  # identifies the annotations for the embedding cache
        self.empty_captions = empty_captions  # dropped while reading

    def identity(self) -> list:
        """What the gallery embeddings depend on: the annotations and each image file (path, size, mtime)."""
        return [self.key, file_identity(p for p in self._images if p is None or isinstance(p, (str, Path)))]

    def __len__(self) -> int:
        return len(self._images)

    def image(self, index: int) -> Image.Image | None:
        item = self._images[index]
        if item is None or isinstance(item, (str, Path)):
            return open_rgb(item)
        try:
            return item().convert("RGB")
        except IMAGE_ERRORS:
            return None

    def label(self, index: int) -> int:
        return index

    def subset(self, n: int) -> RetrievalSet:
        """The first ``n`` images and their captions."""
        caps: list[list[str]] = [[] for _ in range(min(n, len(self)))]
        for text, owner in zip(self.captions, self.text_to_image):
            if owner < n:
                caps[owner].append(text)
        return RetrievalSet(self.name, self._images[:n], caps, [self.key, n], self.empty_captions)


def read_karpathy(path: str | Path, split: str, images: str | Path, allow_outside_images: bool = False) -> RetrievalSet:
    """Karpathy's ``dataset_{flickr30k,coco}.json``: images[].{filename, filepath?, split, sentences[].raw}."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: expected a Karpathy split file with an 'images' list")
    files, captions, empty = [], [], 0
    images_root = ImageRoot(images, allow_outside_images)
    for i, img in enumerate(data["images"]):
        try:
            if img["split"] != split and not (split == "train" and img["split"] == "restval"):
                continue
            rel = Path(img.get("filepath", "")) / img["filename"]
            raw = [s["raw"] for s in img["sentences"]]
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path}: images[{i}] lacks {exc}") from None
        caps = [c for c in raw if is_caption(c)]
        empty += len(raw) - len(caps)
        files.append(images_root.path(rel))
        captions.append(caps)
    if not files:
        raise DataError(f"{path}: no images in split {split!r}")
    images_root.report()
    stat = path.stat()
    return RetrievalSet(path.stem, files, captions, [str(path.resolve()), stat.st_size, stat.st_mtime_ns, split], empty)


def write_karpathy(
    path: str | Path, dataset: str, items: Sequence[tuple[str, str, Sequence[str]]], filepath: str | None = None
) -> Path:
    """``dataset_<name>.json``: items are (filename, split, captions); COCO adds ``filepath`` (e.g. val2014)."""
    images = []
    sent_id = 0
    for i, (filename, split, caps) in enumerate(items):
        sentences = []
        for c in caps:
            sentences.append({"tokens": c.lower().strip(" .").split(), "raw": c, "imgid": i, "sentid": sent_id})
            sent_id += 1
        entry = {"filename": filename, "imgid": i, "split": split, "sentences": sentences,
                 "sentids": [s["sentid"] for s in sentences]}
        if filepath is not None:
            entry["filepath"] = filepath
        images.append(entry)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "dataset": dataset}))
    return path


KARPATHY_HOW = (
    "download Karpathy's caption_datasets (dataset_flickr30k.json / dataset_coco.json) into dataset.root "
    "and the images into dataset.images"
)


@dataclass
class KarpathyConfig:
    name: str = "flickr30k"
    root: str | None = None  # holds dataset_<name>.json
    images: str | None = None  # flickr30k-images/ or the COCO root holding train2014/ val2014/
    split: str = "test"
    annotation: str = "dataset_flickr30k.json"
    allow_outside_images: bool = False  # accept absolute or ../ file names that leave dataset.images

    def validate(self) -> None:
        root = require_dir(self.root, "dataset.root", KARPATHY_HOW)
        require_file(root / self.annotation, "dataset.annotation", KARPATHY_HOW)
        require_dir(self.images, "dataset.images", KARPATHY_HOW)
        if self.split not in ("train", "val", "test", "restval"):
            raise ConfigError("dataset.split", f"{self.split!r} is not allowed; use train, val, test or restval")


@dataclass
class CocoKarpathyConfig(KarpathyConfig):
    name: str = "coco_captions"
    annotation: str = "dataset_coco.json"


@register_dataset("flickr30k", KarpathyConfig, tasks={"retrieval"})
def build_flickr30k(cfg: KarpathyConfig) -> RetrievalSet:
    return read_karpathy(Path(cfg.root) / cfg.annotation, cfg.split, cfg.images, cfg.allow_outside_images)


@register_dataset("coco_captions", CocoKarpathyConfig, tasks={"retrieval"})
def build_coco_captions(cfg: CocoKarpathyConfig) -> RetrievalSet:
    return read_karpathy(Path(cfg.root) / cfg.annotation, cfg.split, cfg.images, cfg.allow_outside_images)


@dataclass
class HFCaptionsConfig:
    name: str = "hf_captions"
    path: str | None = None  # hub name (e.g. nlphuji/flickr_1k_test_image_text_retrieval) or a save_to_disk folder
    split: str = "test"
    image_column: str = "image"
    caption_column: str = "caption"  # a string or a list of strings per image
    root: str | None = None  # cache_dir for hub downloads

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("dataset.path", "is not set; give a Hugging Face dataset name or a save_to_disk folder")


def read_hf_captions(cfg: HFCaptionsConfig) -> RetrievalSet:
    ds = load_hf_split(cfg.path, cfg.split, cfg.root)
    for col, key in ((cfg.image_column, "dataset.image_column"), (cfg.caption_column, "dataset.caption_column")):
        if col not in ds.column_names:
            raise ConfigError(key, f"{col!r} is not a column; columns are {ds.column_names}")
    captions, empty = [], 0
    for i, caps in enumerate(ds[cfg.caption_column]):
        caps = [caps] if isinstance(caps, str) else caps
        if not isinstance(caps, list):
            raise DataError(f"{cfg.path}: row {i}: {cfg.caption_column!r} must be a caption or a list of captions")
        kept = [c for c in caps if is_caption(c)]
        empty += len(caps) - len(kept)
        captions.append(kept)
    column = ds.select_columns([cfg.image_column])
    images = [_HFImage(column, i, cfg.image_column) for i in range(len(ds))]
    key = [cfg.path, cfg.split, getattr(ds, "_fingerprint", None) or hashlib.sha256(str(captions).encode()).hexdigest()]
    return RetrievalSet(Path(str(cfg.path)).name, images, captions, key, empty)


class _HFImage:
    def __init__(self, ds, index: int, column: str):
        self.ds, self.index, self.column = ds, index, column

    def __call__(self) -> Image.Image:
        value = self.ds[self.index][self.column]
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, dict) and value.get("path"):
            image = open_rgb(value["path"])
            if image is None:
                raise OSError(f"unreadable image {value['path']}")
            return image
        raise OSError(f"row {self.index}: {self.column!r} holds no image")


@register_dataset("hf_captions", HFCaptionsConfig, tasks={"retrieval"})
def build_hf_captions(cfg: HFCaptionsConfig) -> RetrievalSet:
    return read_hf_captions(cfg)

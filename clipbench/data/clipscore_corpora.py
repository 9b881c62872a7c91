"""Caption sets to score with CLIPScore (task=clipscore), with the human judgments to compare against.

Every loader reads its release's real on-disk format (``clipbench.toy.writers.clipscore_corpora`` writes
each of them):

* ``captions``: the official CLIPScore tool's inputs (candidates JSON ``{image_id: caption}``, an image
  folder whose file stems are the ids, optional references JSON ``{image_id: [refs]}``).
* ``flickr8k_expert`` / ``flickr8k_cf``: ``ExpertAnnotations.txt`` / ``CrowdFlowerAnnotations.txt``
  with ``Flickr8k.token.txt``.
* ``composite``: the AMT ``{8k,30k,coco}_correctness.csv`` files plus each source's own captions.
* ``pascal50s``: ``pair_pascal.mat`` (pairs, categories) and ``consensus_pascal.mat`` (48 triplets per pair).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from clipbench.data.base import ImageRoot, register_dataset, require_dir, require_file
from clipbench.data.captions import check_caption, image_index, read_json, without
from clipbench.errors import ConfigError, DataError

# ---------------------------------------------------------------- the structures the task scores


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


# ---------------------------------------------------------------- reading the releases' text files


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
    data = read_json(Path(path))
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{image_id: caption}}")
    return {str(k): check_caption(v, f"{path}: image {k!r}", allow_empty=True) for k, v in data.items()}


def read_references_json(path: str | Path) -> dict[str, list[str]]:
    data = read_json(Path(path))
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{image_id: [references]}}")
    out = {}
    for k, refs in data.items():
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, list) or not refs:
            raise DataError(f"{path}: image {k!r}: references must be a non-empty list of strings")
        out[str(k)] = [check_caption(r, f"{path}: image {k!r} reference", allow_empty=True) for r in refs]
    return out


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


def read_coco_captions(path: str | Path) -> dict[str, list[str]]:
    """COCO ``captions_*.json`` -> image file stem -> captions."""
    data = read_json(Path(path))
    try:
        names = {img["id"]: Path(img["file_name"]).stem for img in data["images"]}
        out: dict[str, list[str]] = defaultdict(list)
        for ann in data["annotations"]:
            out[names[ann["image_id"]]].append(ann["caption"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a COCO captions file (missing {exc})") from None
    return dict(out)


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

"""The CLIPScore corpora's release formats (read by ``clipbench.data.clipscore_corpora``): the official
tool's JSON inputs, the Flickr8k text release, Composite's AMT CSVs with COCO captions, and Pascal-50S."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipbench.data.clipscore_corpora import (
    FLICKR8K_CF,
    FLICKR8K_EXPERT,
    FLICKR8K_TOKENS,
    PASCAL_CATEGORIES,
    PASCAL_CONSENSUS,
    PASCAL_JUDGMENTS,
    PASCAL_PAIRS,
    CaptionPair,
)
from clipbench.errors import ConfigError


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

"""clip_benchmark's published webdataset layout (read by ``clipbench.data.catalogue``), and a generated suite in it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from clipbench.data.catalogue import WDS_NSHARDS, WDS_SHARD, WDS_TYPE


def write_wds(
    root: str | Path, split: str, samples, classnames=None, templates=None, dataset_type: str | None = None,
    shard_size: int = 64, image_format: str = "png",
) -> Path:
    """Shards in clip_benchmark's published layout. ``samples``: (PIL image, label) where label is an int
    (cls), a 0/1 vector (npy, multilabel) or a list of captions (txt, retrieval)."""
    root = Path(root)
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    samples = list(samples)
    nshards = max(1, -(-len(samples) // shard_size))
    for s in range(nshards):
        with tarfile.open(folder / WDS_SHARD.format(index=s), "w") as tar:
            for i in range(s * shard_size, min((s + 1) * shard_size, len(samples))):
                image, label = samples[i]
                buf = io.BytesIO()
                image.save(buf, format=image_format.upper().replace("JPG", "JPEG"))
                members = {image_format: buf.getvalue()}
                if isinstance(label, (int, np.integer)):
                    members["cls"] = str(int(label)).encode()
                elif isinstance(label, (list, tuple)) and label and isinstance(label[0], str):
                    members["txt"] = "\n".join(label).encode()
                else:
                    npy = io.BytesIO()
                    np.save(npy, np.asarray(label))
                    members["npy"] = npy.getvalue()
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"s{i:07d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (folder / WDS_NSHARDS).write_text(str(nshards))
    # clip_benchmark's builder reads the class names and templates
    if classnames is not None:
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    if dataset_type is not None:
        (root / WDS_TYPE).write_text(dataset_type + "\n")
    return root


def write_generated_suite(
    root: str | Path, datasets: dict[str, int], n: int = 24, size: int = 32, seed: int = 0, split: str = "test",
    templates: list[str] | None = None, image_format: str = "png", shard_size: int | None = None,
) -> Path:
    """A small suite in clip_benchmark's wds layout under ``root/wds_<name>``: ``datasets`` maps a name to
    its number of classes (0: a retrieval set with two captions per image; a name ending in
    ``_multilabel``: 0/1 label vectors). Images are noisy flat colours, one colour per class."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for name, num_classes in datasets.items():
        k = max(num_classes, 1)
        palette = rng.integers(0, 256, (max(k, n), 3))
        labels = rng.integers(0, k, n)
        images = [
            Image.fromarray(np.clip(palette[c] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8))
            for c in (labels if num_classes else range(n))
        ]
        folder = root / f"wds_{name.replace('/', '-')}"
        if num_classes == 0:
            samples = [(im, [f"a picture number {i}", f"colour {palette[i].tolist()}"]) for i, im in enumerate(images)]
            write_wds(folder, split, samples, dataset_type="retrieval", shard_size=shard_size or max(1, n // 2), image_format=image_format)
            continue
        names = [f"{name.split('/')[-1]} class {c}" for c in range(k)]
        prompts = templates or ["a photo of a {c}.", "a blurry photo of the {c}.", "itap of a {c}."]
        per_shard = shard_size or max(1, n // 2)
        if name.endswith("_multilabel"):
            vectors = (rng.random((n, k)) < 0.3).astype(np.int64)
            vectors[np.arange(n), labels] = 1
            samples = list(zip(images, vectors))
            write_wds(folder, split, samples, names, prompts, "multilabel", per_shard, image_format)
        else:
            write_wds(folder, split, list(zip(images, labels.tolist())), names, prompts, None, per_shard, image_format)
    return root

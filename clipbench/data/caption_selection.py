"""Image-caption selection sets of clip_benchmark's catalogue (task=compositionality): SugarCrepe's seven
subsets (``sugar_crepe/<subset>``) and Winoground, built by the package itself without a transform, so
instance i is the package's own ``(images, captions)``.

On disk, as the package reads them:

* ``sugar_crepe/<subset>``: ``root/val2017/*.jpg`` (COCO val2017) and ``root/<subset>.json``, the release's
  ``{"<id>": {"filename", "caption", "negative_caption"}}`` (github.com/RAIVNLab/sugar-crepe, data/).
* ``winoground``: ``root`` is the ``cache_dir`` of ``load_dataset("facebook/winoground")`` (a gated hub
  set: accept its terms and log in once), or a ``save_to_disk`` copy of it (``root/dataset_dict.json``)
  with its columns ``image_0, image_1, caption_0, caption_1``.
"""

from __future__ import annotations

from pathlib import Path

from clipbench.data.base import IMAGE_ERRORS, to_rgb
from clipbench.errors import ConfigError, DataError

SUGAR_CREPE_SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
SUGAR_CREPE_IMAGES = "val2017"
SUGAR_CREPE_HOW = ("dataset.root holds COCO's val2017/ (images.cocodataset.org/zips/val2017.zip) and the subset's "
                   "<subset>.json from github.com/RAIVNLab/sugar-crepe (data/)")
WINOGROUND_COLUMNS = ("image_0", "image_1", "caption_0", "caption_1")
WINOGROUND_SAVED = "dataset_dict.json"


def is_selection(name: str) -> bool:
    return name.startswith("sugar_crepe/") or name == "winoground"


def check_selection_name(name: str) -> None:
    if name.startswith("sugar_crepe") and name.split("/", 1)[-1] not in SUGAR_CREPE_SUBSETS:
        raise ConfigError("dataset.name", f"{name!r}: SugarCrepe's subsets are {', '.join(SUGAR_CREPE_SUBSETS)} "
                          "(dataset.name=sugar_crepe/<subset>)")


def check_selection_root(name: str, root: Path, download: bool) -> None:
    """The files the package would otherwise fetch (it downloads whatever is missing, without asking)."""
    if not name.startswith("sugar_crepe/"):
        return
    subset = name.split("/", 1)[1]
    missing = [p for p in (root / SUGAR_CREPE_IMAGES, root / f"{subset}.json") if not p.exists()]
    if missing and not download:
        raise ConfigError("dataset.root", f"{missing[0]} does not exist; {SUGAR_CREPE_HOW} (or dataset.download=true)")


class CaptionSelectionSet:
    """Instances of (images, captions); image i goes with caption i. ``sample_ids`` are the release's keys."""

    def __init__(self, name: str, ds, sample_ids: list[str], indices: list[int] | None = None):
        self.name, self.ds, self.sample_ids = name, ds, sample_ids
        self.indices = list(range(len(sample_ids))) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def instance(self, i: int):
        """(RGB images, captions) of instance i; (None, None) when an image is missing or unreadable."""
        try:
            images, captions = self.ds[self.indices[i]]
            images = images if isinstance(images, (list, tuple)) else [images]
            return [to_rgb(im) for im in images], [str(c) for c in captions]
        except IMAGE_ERRORS:
            return None, None

    def subset(self, n: int) -> CaptionSelectionSet:
        return CaptionSelectionSet(self.name, self.ds, self.sample_ids[:n], self.indices[:n])


def _saved_winoground(root: Path):
    """The package's WinoGround class over a ``save_to_disk`` copy (its ``__init__`` would load the hub's)."""
    from clip_benchmark.datasets.winoground import WinoGround
    from datasets import load_from_disk

    try:
        test = load_from_disk(str(root))["test"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{root}: not a save_to_disk copy of facebook/winoground with a test split ({exc})") from None
    missing = [c for c in WINOGROUND_COLUMNS if c not in test.column_names]
    if missing:
        raise DataError(f"{root}: the winoground copy lacks the columns {missing}")
    ds = WinoGround.__new__(WinoGround)
    ds.ds, ds.transform = test, None
    return ds


def build_selection(cfg, root: Path, build_package_dataset) -> CaptionSelectionSet:
    """``build_package_dataset(cfg, root, task)``: the catalogue's call of clip_benchmark's ``build_dataset``."""
    if cfg.name == "winoground" and (root / WINOGROUND_SAVED).is_file():
        ds = _saved_winoground(root)
    else:
        ds = build_package_dataset(cfg, root, "image_caption_selection")
    ids = list(ds.idx_strings) if hasattr(ds, "idx_strings") else [str(i) for i in range(len(ds))]
    return CaptionSelectionSet(cfg.name, ds, ids)

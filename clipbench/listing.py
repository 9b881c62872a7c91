"""``clipbench-list``: what can be run. Tasks with their datasets and methods, experiments, open_clip models.

    clipbench-list                 # tasks and experiments (and how to list the models)
    clipbench-list tasks           # task -> datasets (dataset=) and methods (method=)
    clipbench-list experiments
    clipbench-list models [--filter ViT-B]   # open_clip architectures (model.arch=) and pretrained tags
    clipbench-list languages       # dataset.language= of clip_benchmark's multilingual sets
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from collections.abc import Iterable

from omegaconf import OmegaConf

from clipbench.models.archs import arch_names
from clipbench.paths import CONF_DIR, experiments_dir
from clipbench.results.table import format_table


def _option_nodes(group: str) -> dict:
    """Config option (what users type) -> its keys, merged over the schema and options its defaults name."""
    return {path.stem: _merged(path) for path in sorted((CONF_DIR / group).glob("*.yaml"))}


def _merged(path):
    from clipbench.config.schemas import schema, schema_defaults

    node = OmegaConf.to_container(OmegaConf.load(path))  # unresolved: ${paths.*} needs the whole config
    merged = {}
    for base in (d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"):
        if base.startswith("/schema/"):  # /schema/<group>/<name>@_here_
            _, _, group, name = base.split("@")[0].split("/")
            merged |= schema_defaults(schema(group, name))
        else:
            merged |= _merged(path.with_name(f"{base}.yaml"))
    return OmegaConf.create(merged | {k: v for k, v in node.items() if k != "defaults"})


def _option_names(group: str) -> dict[str, str]:
    """Config option -> the registry name it selects (a catalogue's loader, e.g. clip_benchmark, else its name)."""
    return {option: str(node.get("catalogue") or node.get("name", option)) for option, node in _option_nodes(group).items()}


def _measures(spec, method_node) -> bool:
    """Whether task ``spec`` takes this method option (its method list and ``check_method``)."""
    from clipbench.config import to_schema
    from clipbench.errors import ConfigError
    from clipbench.methods import METHODS

    if spec.methods is not None and method_node.name not in spec.methods:
        return False
    try:
        spec.check_method(to_schema(METHODS.get(method_node.name).config, method_node, "method"))
    except ConfigError:
        return False
    return True


def task_rows() -> list[dict]:
    from clipbench.data import DATASETS
    from clipbench.methods import METHODS
    from clipbench.tasks import TASKS

    datasets = _option_names("dataset")
    methods = {option: node for option, node in _option_nodes("method").items() if node.get("name") in METHODS}
    rows = []
    for task in TASKS.names():
        spec = TASKS.get(task)
        served = [option for option, name in datasets.items() if name in DATASETS and task in DATASETS.get(name).tasks]
        usable = [option for option, node in methods.items() if _measures(spec, node)]
        rows.append({"task": task, "datasets (dataset=)": " ".join(served), "methods (method=)": " ".join(usable)})
    return rows


def experiment_rows() -> list[dict]:
    return [{"experiment": path.stem, "what it runs": _first_paragraph(path)}
            for path in sorted(experiments_dir().glob("*.yaml"))]


def _first_paragraph(path) -> str:
    """The header comment's first paragraph, whole (it may run over several lines)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or "@package" in line:
            if lines or not line.startswith("#"):
                break
            continue
        text = line.lstrip("#").strip()
        if not text:
            break
        lines.append(text)
    return " ".join(lines)


def language_rows() -> list[dict]:
    """``dataset=clip_benchmark dataset.name=<name>``: the languages clip_benchmark ships for it (beyond English only)."""
    from clipbench.data.catalogue_languages import (
        BABEL,
        CAPTION_LANGUAGES,
        IMAGENET_NAMES,
        MULTILINGUAL_RETRIEVAL,
        dataset_languages,
    )

    names = [*MULTILINGUAL_RETRIEVAL, *CAPTION_LANGUAGES, *IMAGENET_NAMES, BABEL]
    return [{"dataset.name": name, "dataset.language=": " ".join(dataset_languages(name))} for name in names]


def model_rows(pattern: str = "") -> list[dict]:
    import open_clip

    from clipbench.models.factory import available_archs

    tags: dict[str, list[str]] = {}
    for arch, tag in open_clip.list_pretrained():
        tags.setdefault(arch, []).append(tag)
    return [
        {"model.arch": arch, "model.pretrained (open_clip tags; or a local file, or null)": " ".join(tags.get(arch, [])) or "-"}
        for arch in available_archs() if pattern.lower() in arch.lower()
    ]


def _print(title: str, rows: Iterable[dict], width: int) -> None:
    rows = list(rows)
    print(f"\n{title}")
    print(format_table(_wrapped(rows, width), list(rows[0])) if rows else "(none)")


def _wrapped(rows: list[dict], width: int) -> list[dict]:
    """Cells wrapped at word boundaries so the table fits ``width`` columns (0: one line per row). The first
    column stays whole; the others share what is left in proportion to their longest cell."""
    columns = list(rows[0])
    longest = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    room = width - longest[columns[0]] - 4 - 3 * (len(columns) - 1)  # the grid's borders and padding
    wide = sum(longest[c] for c in columns[1:])
    if width <= 0 or room >= wide:
        return rows
    limit = {c: max(len(c), 12, room * longest[c] // wide) for c in columns[1:]}
    return [{c: v if c == columns[0] else "\n".join(textwrap.wrap(str(v), limit[c]) or [""]) for c, v in r.items()}
            for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipbench-list", description="What clipbench can run, as tables.")
    parser.add_argument("what", nargs="?", choices=["all", "tasks", "experiments", "models", "languages"], default="all")
    parser.add_argument("--filter", default="", help="only architectures whose name contains this text")
    parser.add_argument("--width", type=int, default=shutil.get_terminal_size((100, 24)).columns,
                        help="wrap cells to fit this many columns (default: the terminal's); 0: one line per row")
    args = parser.parse_args(argv)
    if args.what in ("all", "tasks"):
        _print("Tasks (task=), the datasets that serve them and the methods they accept", task_rows(), args.width)
    if args.what in ("all", "experiments"):
        _print("Experiments (clipbench -m experiment=<name>; the whole description heads experiments/<name>.yaml)",
               experiment_rows(), args.width)
    if args.what in ("all", "languages"):
        _print("Languages (dataset.language=, default en) of clip_benchmark's multilingual sets", language_rows(),
               args.width)
    if args.what == "all":  # open_clip's tag list needs open_clip, and with it torch: seconds
        print(f"\nopen_clip architectures ({len(arch_names())}) and their tags: clipbench-list models [--filter TEXT]")
    if args.what == "models":
        _print(f"open_clip architectures{f' matching {args.filter!r}' if args.filter else ''}", model_rows(args.filter),
               args.width)


if __name__ == "__main__":
    main()

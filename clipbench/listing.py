"""``clipbench-list``: what can be run. Tasks with their datasets and methods, experiments, open_clip models.

    clipbench-list                 # everything
    clipbench-list tasks           # task -> datasets (dataset=) and methods (method=)
    clipbench-list experiments
    clipbench-list models [--filter ViT-B]   # open_clip architectures (model.arch=) and pretrained tags
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from omegaconf import OmegaConf

from clipbench.paths import CONF_DIR, experiments_dir
from clipbench.results.table import format_table


def _option_names(group: str) -> dict[str, str]:
    """Config option (what users type) -> the registry name it selects: its ``name``, else the option or schema
    (``/schema/<group>/<name>@_here_``) it extends."""
    out = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        node = OmegaConf.load(path)
        while "name" not in node and node.get("defaults"):
            base = next(d for d in node.defaults if isinstance(d, str) and d != "_self_")
            if base.startswith("/schema/"):
                node = OmegaConf.create({"name": base.split("/")[3].split("@")[0]})
            else:
                node = OmegaConf.load(path.with_name(f"{base}.yaml"))
        out[path.stem] = str(node.get("name", path.stem))
    return out


def task_rows() -> list[dict]:
    from clipbench.data import DATASETS
    from clipbench.methods import METHODS
    from clipbench.tasks import TASKS

    datasets, methods = _option_names("dataset"), _option_names("method")
    rows = []
    for task in TASKS.names():
        spec = TASKS.get(task)
        served = [option for option, name in datasets.items() if name in DATASETS and task in DATASETS.get(name).tasks]
        usable = [option for option, name in methods.items() if name in METHODS and (spec.methods is None or name in spec.methods)]
        rows.append({"task": task, "datasets (dataset=)": " ".join(served), "methods (method=)": " ".join(usable)})
    return rows


def experiment_rows() -> list[dict]:
    rows = []
    for path in sorted(experiments_dir().glob("*.yaml")):
        comment = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                        if line.startswith("#") and "@package" not in line), "")
        rows.append({"experiment": path.stem, "what it runs": comment})
    return rows


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


def _print(title: str, rows: Iterable[dict]) -> None:
    rows = list(rows)
    print(f"\n{title}")
    print(format_table(rows, list(rows[0])) if rows else "(none)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipbench-list", description="What clipbench can run, as tables.")
    parser.add_argument("what", nargs="?", choices=["all", "tasks", "experiments", "models"], default="all")
    parser.add_argument("--filter", default="", help="only architectures whose name contains this text")
    args = parser.parse_args(argv)
    if args.what in ("all", "tasks"):
        _print("Tasks (task=), the datasets that serve them and the methods they accept", task_rows())
    if args.what in ("all", "experiments"):
        _print("Experiments (clipbench -m experiment=<name>)", experiment_rows())
    if args.what in ("all", "models"):
        _print(f"open_clip architectures{f' matching {args.filter!r}' if args.filter else ''}", model_rows(args.filter))


if __name__ == "__main__":
    main()

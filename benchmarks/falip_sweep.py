"""FALIP sweeps grouped into one pass over the data vs the same configs as separate jobs, in one process.

Two sweeps on the toy REC set (clipbench-toy-world), per model (the bundled toy CLIP and a random-init
ViT-B-16; the timing does not depend on the weights):

* head sensitivity: one config per (block, head) of the last 4 blocks, the bias on that block and head
  alone (``layers=[b]``, ``heads=[h]``): 48 configs on a ViT-B/16;
* grid: alpha in 0.05..0.8 x layers = the last 1, 2, 3 or 4 blocks (5 x 4 = 20 configs).

"separate" evaluates each config with the task's ``evaluate`` (the model, dataset and text features already
loaded, as in one sweep process); "grouped" evaluates them all with ``evaluate_many`` (clipbench/grouped.py).
Printed per sweep: both wall times and their ratio (goal >= 3x for the 48-config sweep at ViT-B-16), the
marginal cost of one more config in the group as a fraction of one config alone, the peak memory of each
path (CUDA allocation on GPU, else the process's peak RSS), the ratio of the process CPU times too (on a shared
machine it depends less on the other users' load than the wall time), and the share of one config's time alone spent
decoding and preprocessing images, in the unbiased prefix (embedding and blocks before the first biased one)
and in the rest (biased suffix, pooling, scoring): the ratio's limit is about 1 / (suffix share) for many
configs. The numbers of both paths are checked equal.

    .venv/bin/python benchmarks/falip_sweep.py [--toy-root data/toy] [--limit 40] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"toyclip": None, "ViT-B-16": "null"}  # arch -> model.pretrained override (None: the config's own)


@dataclass
class Clock:
    """Seconds spent decoding images and in the unbiased prefix, summed over the calls it watches."""

    decode: float = 0.0
    prefix: float = 0.0
    first_biased: list[int] = field(default_factory=list)  # the current config's first biased block


@contextmanager
def watched(clock: Clock, dataset, methods, tower_type) -> Iterator[None]:
    """Time ``dataset.image``, the methods' input transform, the embedding and the prefix blocks."""
    saved = dataset.image, [m.transform for m in methods], tower_type.embed, tower_type.block

    def timed(fn, slot):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(clock, slot, getattr(clock, slot) + time.perf_counter() - t0)
        return wrapper

    def block(self, i, x, ctx, mask=None):
        if mask is None and clock.first_biased and i < clock.first_biased[0]:
            return timed(saved[3], "prefix")(self, i, x, ctx)
        return saved[3](self, i, x, ctx, mask)

    dataset.image = timed(saved[0], "decode")
    for method, transform in zip(methods, saved[1]):
        method.transform = timed(transform, "decode")
    tower_type.embed = timed(saved[2], "prefix")
    tower_type.block = block
    try:
        yield
    finally:
        dataset.image = saved[0]
        for method, transform in zip(methods, saved[1]):
            method.transform = transform
        tower_type.embed, tower_type.block = saved[2], saved[3]


def sweeps(depth: int, heads: int) -> dict[str, list[list[str]]]:
    last4 = range(depth - 4, depth)
    return {
        f"heads {4 * heads}": [[f"method.layers=[{b}]", f"method.heads=[{h}]"] for b in last4 for h in range(heads)],
        "alpha x layers 20": [[f"method.alpha={a}", f"method.layers=[{','.join(str(-k) for k in range(n, 0, -1))}]"]
                              for a in (0.05, 0.1, 0.2, 0.4, 0.8) for n in (1, 2, 3, 4)],
    }


def built(common: list[str], jobs: list[list[str]], tmp: Path):
    """The validated configs and the built model, dataset, run context and methods of ``jobs``."""
    from hydra import compose, initialize_config_dir

    from clipbench.cli import CONF_DIR
    from clipbench.methods import METHODS
    from clipbench.runner import build, validate

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        configs = [compose("config", overrides=[*common, *job]) for job in jobs]
    vs = [validate(c) for c in configs]
    first = build(vs[0], configs[0], tmp)
    methods = [METHODS.get(v.method.name).build(v.method, first.model) for v in vs]
    return vs[0], first, methods


def measure(arch: str, pretrained: str | None, name: str, jobs: list[list[str]], args, tmp: Path) -> dict:
    from clipbench.models.attention import attention_tower
    from clipbench.runtime import peak_memory_mb, reset_peak_memory, synchronize
    from clipbench.tasks import TASKS

    common = ["+toy=rec", f"paths.toy={args.toy_root}", f"model.arch={arch}", f"device={args.device}", "num_workers=0",
              "progress=false", f"limit={args.limit}", f"cache_dir={tmp / 'cache'}"]
    common += [f"model.pretrained={pretrained}"] if pretrained else []
    v, b, methods = built(common, jobs, tmp)
    task = TASKS.get(v.task.name)
    TASKS.get(v.task.name).evaluate(b.model, b.dataset, methods[0], v.task, b.ctx)  # warm-up: text features, caches
    clock = Clock()
    tower_type = type(attention_tower(b.model.model, arch))

    cpu = {"separate": 0.0, "grouped": 0.0}

    def timed(fn, path: str | None = None) -> tuple[float, object, float]:
        reset_peak_memory(b.device)
        synchronize(b.device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        synchronize(b.device)
        if path:
            cpu[path] += time.process_time() - c0
        return time.perf_counter() - t0, out, peak_memory_mb(b.device)

    with watched(clock, b.dataset, methods, tower_type):
        separate, alone, peak_separate = 0.0, [], 0.0
        for method in methods:
            clock.first_biased[:] = [method.layers[0] if method.layers else 10**6]
            seconds, result, peak = timed(lambda m=method: task.evaluate(b.model, b.dataset, m, v.task, b.ctx), "separate")
            separate += seconds
            alone.append(result)
            peak_separate = max(peak_separate, peak)
        clock.first_biased[:] = []
        grouped, together, peak_grouped = timed(lambda: task.evaluate_many(b.model, b.dataset, methods, v.task, b.ctx),
                                                "grouped")
        one, _, _ = timed(lambda: task.evaluate_many(b.model, b.dataset, methods[:1], v.task, b.ctx))
    same = all(a.metrics == g.metrics and a.predictions == g.predictions for a, g in zip(alone, together))
    single = separate / len(methods)
    return {
        "model": arch, "sweep": name, "configs": len(methods), "separate_s": separate, "grouped_s": grouped,
        "ratio": separate / grouped, "cpu_ratio": cpu["separate"] / max(cpu["grouped"], 1e-9), "marginal": (grouped - one) / (len(methods) - 1) / single,
        "peak_separate_mb": peak_separate, "peak_grouped_mb": peak_grouped, "decode": clock.decode / separate,
        "prefix": clock.prefix / separate, "same": same,
    }


def table(rows: list[dict]) -> str:
    head = (f"{'model':10}{'sweep':20}{'configs':>8}{'separate s':>12}{'grouped s':>11}{'ratio':>7}{'cpu ratio':>10}{'marginal':>10}"
            f"{'peak sep MB':>13}{'peak grp MB':>13}{'decode':>8}{'prefix':>8}{'suffix':>8}{'same':>6}")
    lines = [head]
    for r in rows:
        suffix = 1 - r["decode"] - r["prefix"]
        lines.append(
            f"{r['model']:10}{r['sweep']:20}{r['configs']:8d}{r['separate_s']:12.2f}{r['grouped_s']:11.2f}{r['ratio']:6.2f}x{r['cpu_ratio']:9.2f}x"
            f"{r['marginal']:10.3f}{r['peak_separate_mb']:13.0f}{r['peak_grouped_mb']:13.0f}{r['decode']:8.1%}"
            f"{r['prefix']:8.1%}{suffix:8.1%}{'yes' if r['same'] else 'NO':>6}"
        )
    return "\n".join(lines)


def run(args) -> list[dict]:
    from clipbench.models.factory import vit_tower_shape

    warnings.filterwarnings("ignore", message=".*RANDOMLY INITIALISED.*|.*pretrained is null.*")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for arch in args.models:
            depth, heads = vit_tower_shape(arch)
            for name, jobs in sweeps(depth, heads).items():
                jobs = jobs[: args.max_configs] if args.max_configs else jobs
                rows.append(measure(arch, MODELS.get(arch), name, jobs, args, tmp))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-root", type=Path, default=None, help="the toy world (default: data/toy, written if missing)")
    parser.add_argument("--limit", type=int, default=40, help="REC sentences per config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: toyclip, ViT-B-16")
    parser.add_argument("--max-configs", type=int, default=0, help="only the first N configs of each sweep (0: all)")
    parser.add_argument("--quick", action="store_true", help="toy CLIP only, 4 sentences, 4 configs per sweep")
    args = parser.parse_args(argv)
    args.models = args.models.split(",")
    if args.quick:
        args.models, args.limit, args.max_configs = ["toyclip"], 4, 4
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    with torch.no_grad(), tempfile.TemporaryDirectory() as world:  # no_grad scoped: main() is called from tests
        if args.toy_root is None:
            args.toy_root = ROOT / "data" / "toy"
            if not (args.toy_root / "refcoco").is_dir():
                from clipbench.toy.make_world import make_toy_world

                args.toy_root = make_toy_world(Path(world) / "toy", quiet=True)
        rows = run(args)
    print(f"\nFALIP sweeps on the toy REC set ({args.limit} sentences, {args.device}): grouped (one pass) vs separate "
          "jobs in one process;\ncpu ratio = the same ratio of process CPU seconds; marginal = one more config's cost in the group / one config alone; decode, prefix, "
          "suffix = shares of the time alone")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()

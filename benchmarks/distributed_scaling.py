"""Toy zero-shot and retrieval sharded over 2 ranks x 1 thread vs 1 rank x 1 thread (torchrun, gloo on CPU).

    python benchmarks/distributed_scaling.py [--quick] [--scale 1] [--toy-root DIR] [--ranks 2] [--tasks zeroshot,retrieval] [overrides ...]

Each run is ``torchrun --nproc_per_node=N -m clipbench +toy=<task>`` with OMP_NUM_THREADS=1 and
``num_workers=0`` (each rank decodes its own images: one thread per rank in all). The evaluation
loop's time is metrics.json's ``seconds`` (the slowest rank's task evaluation, gather included; model load
and imports excluded); speedup = 1-rank seconds / N-rank seconds (goal >= 1.7 with 2 ranks on 2 free cores).
Peak memory is the largest rank's. The rows of both runs must be identical, or the benchmark fails.
Without --toy-root the toy world (``--scale``, default 1; 0.25 with --quick) is written to a temporary folder
first. At scale 1 the toy retrieval set has 600 captions, 3 text batches of 256 that 2 ranks share 2:1;
at scale 4 (2,400 captions) the shares even out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("zeroshot", "retrieval")
SAME = ["metric", "value", "n", "ci_low", "ci_high"]


def launch(out: Path, task: str, ranks: int, toy_root: Path, extra: list[str]) -> tuple[dict, pd.DataFrame]:
    """metrics.json and the rows of one ``torchrun`` run."""
    run_dir = out / f"{task}-{ranks}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "-m", "clipbench", f"+toy={task}",
           f"paths.toy={toy_root}", "device=cpu", "progress=false", f"results_csv={run_dir / 'results.csv'}",
           f"cache_dir={run_dir / 'cache'}", f"hydra.run.dir={run_dir}", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{task} with {ranks} rank(s) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads((run_dir / "metrics.json").read_text()), pd.read_csv(run_dir / "results.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy world at scale 0.25, limit=64")
    parser.add_argument("--toy-root", type=Path, default=None)
    parser.add_argument("--scale", type=float, default=1.0, help="toy world scale (without --toy-root)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated toy tasks")
    parser.add_argument("extra", nargs="*", help="more overrides, e.g. batch_size=32")
    args = parser.parse_args()
    extra = ["num_workers=0", *(["limit=64", "batch_size=16"] if args.quick else ["batch_size=32"]), *args.extra]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        toy_root = args.toy_root
        if toy_root is None:
            from clipbench.toy.make_world import make_toy_world

            toy_root = make_toy_world(tmp / "toy", scale=0.25 if args.quick else args.scale, quiet=True)
        for task in args.tasks.split(","):
            one, one_rows = launch(tmp, task, 1, toy_root, extra)
            many, many_rows = launch(tmp, task, args.ranks, toy_root, extra)
            if not one_rows[SAME].equals(many_rows[SAME]) or set(many_rows["world_size"]) != {args.ranks}:
                sys.exit(f"{task}: the {args.ranks}-rank rows differ from the 1-rank rows")
            lines.append((task, one["n"], one["seconds"], many["seconds"], one["peak_mem_mb"], many["peak_mem_mb"]))
    print(f"toy evaluation loop, 1 thread per rank, {os.cpu_count()} CPUs; identical rows both ways")
    print(f"{'task':10}{'n':>6}{'1 rank s':>10}{f'{args.ranks} ranks s':>11}{'speedup':>9}{'peak MB 1':>11}{f'peak MB {args.ranks}':>11}")
    for task, n, t1, tn, m1, mn in lines:
        print(f"{task:10}{n:>6}{t1:>10.2f}{tn:>11.2f}{t1 / tn:>9.2f}{m1:>11.0f}{mn:>11.0f}")


if __name__ == "__main__":
    main()

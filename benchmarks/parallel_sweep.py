"""A 9-job toy FALIP grid (alpha x masked blocks) with the parallel launcher vs the default sequential one.

    python benchmarks/parallel_sweep.py [--toy-root DIR] [--n-jobs 2] [overrides ...]

Both sweeps run the same jobs in fresh processes; the parallel one (``hydra/launcher=joblib``) starts
``--n-jobs`` workers that keep their model and dataset between jobs. Prints both wall times, checks
that both wrote the same metric values, and prints parallel_vs_sequential_wall (below 1 = faster).
Without --toy-root the toy world is written to a temporary folder first. The launcher splits the CPU
threads between its workers; run with OMP_NUM_THREADS=<cores> to see what one thread per core in every
worker costs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
GRID = ["experiment=toy_falip_head_sensitivity", "method.alpha=0.1,0.2,0.4"]  # x 3 block choices = 9 jobs
SAME_JOB = ["method_params", "metric"]


def sweep(tmp: Path, name: str, toy_root: Path, launcher: list[str], extra: list[str]) -> tuple[float, pd.DataFrame]:
    """Wall seconds of one sweep, and its rows."""
    out = tmp / name
    cmd = [sys.executable, "-m", "clipbench", "-m", *GRID, *launcher, f"paths.toy={toy_root}", "progress=false",
           f"results_csv={out / 'results.csv'}", f"cache_dir={out / 'cache'}", f"hydra.sweep.dir={out / 'sweep'}", *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or (out / "sweep" / "failures.csv").exists():
        sys.exit(f"{name} sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, pd.read_csv(out / "results.csv")


def same_values(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    key = SAME_JOB + ["value", "ci_low", "ci_high"]
    return len(a) == len(b) and a[key].sort_values(key).reset_index(drop=True).equals(b[key].sort_values(key).reset_index(drop=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-root", type=Path, default=None)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more overrides, e.g. limit=200")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        toy_root = args.toy_root
        if toy_root is None:
            from clipbench.toy.make_world import make_toy_world

            toy_root = make_toy_world(tmp / "toy", quiet=True)
        sequential, rows = sweep(tmp, "sequential", toy_root, [], args.extra)
        parallel, parallel_rows = sweep(tmp, "parallel", toy_root, ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
                                        args.extra)
    if not same_values(rows, parallel_rows):
        sys.exit("the parallel sweep's metric values differ from the sequential sweep's")
    print(f"9-job toy FALIP grid (task=rec, toyclip), {os.cpu_count()} CPUs; same metric values both ways")
    print(f"{'sequential (basic launcher)':36}{sequential:8.1f} s")
    print(f"{f'parallel (joblib, n_jobs={args.n_jobs})':36}{parallel:8.1f} s")
    print(f"parallel_vs_sequential_wall={parallel / sequential:.3f}")


if __name__ == "__main__":
    main()

"""A 6-job FALIP alpha sweep run twice: the second run reuses the on-disk text-embedding cache.

    python benchmarks/sweep_cache.py [--toy-root data/toy] [--arch toyclip] [--pretrained <file>]

Within each run the jobs also share the loaded model, the built dataset and the in-memory text cache
(one sweep process). Prints both wall times, the summed per-job evaluation times, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sweep(tmp: Path, name: str, args) -> tuple[float, float]:
    sweep_dir = tmp / name
    cmd = [
        sys.executable, "-m", "clipbench", "-m", "+toy=rec", "method=falip", "method.alpha=0.05,0.1,0.2,0.4,0.8,1.6",
        f"model.arch={args.arch}", f"cache_dir={tmp / 'cache'}", f"results_csv={tmp / 'results.csv'}",
        f"hydra.sweep.dir={sweep_dir}", "progress=false", "num_workers=0", *args.extra,
    ]
    if args.pretrained:
        cmd.append(f"model.pretrained={args.pretrained}")
    cmd.append(f"paths.toy={args.toy_root}")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or (sweep_dir / "failures.csv").exists():
        sys.exit(f"sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    evaluation = sum(json.loads(p.read_text())["seconds"] for p in sweep_dir.glob("*/metrics.json"))
    return wall, evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-root", type=Path, default=ROOT / "data" / "toy")
    parser.add_argument("--arch", default="toyclip")
    parser.add_argument("--pretrained", default=None, help="default: the model config's own (the bundled toy checkpoint)")
    parser.add_argument("extra", nargs="*", help="more overrides, e.g. limit=200")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        first = sweep(tmp, "first", args)
        second = sweep(tmp, "second", args)
    print(f"6-job alpha sweep (task=rec, method=falip, {args.arch}) on {args.toy_root}")
    print(f"{'':24}{'wall s':>10}{'evaluation s':>15}")
    print(f"{'first (cold cache)':24}{first[0]:10.1f}{first[1]:15.1f}")
    print(f"{'second (warm cache)':24}{second[0]:10.1f}{second[1]:15.1f}")
    print(f"sweep_second_vs_first_wall={second[0] / first[0]:.3f}")
    print(f"sweep_second_vs_first_evaluation={second[1] / first[1]:.3f}")


if __name__ == "__main__":
    main()

"""The GPU check: one table of what clipbench measures on one device, ready to run on a fresh GPU machine.

    bash benchmarks/gpu_check.sh          # on the GPU machine: CUDA, full size, sized for 8 minutes on one H100 (not yet timed on one)
    bash benchmarks/gpu_check.sh --cpu    # the same steps on CPU at a tiny size (what the tests run)

Steps, each row with its items/s and peak memory (CUDA allocation on GPU, reset per job or path; on CPU the
process's peak RSS so far):

* every job of ``experiments/toy_default.yaml`` on the toy world in fp32, bf16 and fp16, one process, the
  headline metric values of the precisions side by side (CPU: fp32 and bf16; clipbench refuses fp16
  autocast on CPU);
* the zero-shot suite (``benchmarks/zeroshot_suite.py``): clipbench, clipbench with its classifier cached,
  ``clip_benchmark eval`` and the bare ``encode_image`` forward on one generated wds set, random-init
  ViT-B-16, top-1 of clipbench and clip_benchmark compared;
* ``benchmarks/falip_rec.py``: FALIP's fast and per-box paths, red_circle and the plain forward per ViT family.

A step that fails leaves a FAILED row (its error on stderr) and the others' rows; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import falip_rec
import pandas as pd
import torch
import zeroshot_suite

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16", "fp16")
CPU_PRECISIONS = ("fp32", "bf16")  # clipbench.runtime refuses fp16 autocast on CPU
SIZES = {  # GPU: sized for 8 minutes on one H100 (an estimate until it runs on one); CPU: seconds, the same steps
    "cuda": {"toy_scale": 0.5, "suite": ["--datasets", "1", "--n", "10240", "--classes", "100", "--batch-size", "256",
                                          "--workers", "8"],
             "falip": ["--images", "3", "--boxes", "10", "--repeats", "3", "--threads", "4"]},
    "cpu": {"toy_scale": 0.05, "suite": ["--datasets", "1", "--n", "2", "--classes", "2", "--templates", "1", "--batch-size", "2",
                                         "--workers", "0"],
            "falip": ["--images", "1", "--boxes", "1", "--repeats", "1", "--threads", "2"]},
}
COLUMNS = ["step", "case", "metric", *PRECISIONS, *(f"items/s {p}" for p in PRECISIONS),
           *(f"peak MB {p}" for p in PRECISIONS)]


def cells(row: dict) -> dict:
    """Numbers as short text: metric values with 4 decimals, items/s with 3 significant digits, whole MB."""
    def text(column: str, v) -> str:
        if v is None or column in ("step", "case", "metric"):
            return v
        if column.startswith("peak MB"):
            return f"{v:.0f}"
        return f"{v:.4f}" if column in PRECISIONS else f"{v:.3g}" if v < 100 else f"{v:.0f}"
    return {c: text(c, v) for c, v in row.items()}


def toy_rows(device: str, scale: float, tmp: Path) -> list[dict]:
    """``experiment=toy_default`` over the precisions in one multirun; a row per (job, headline metric)."""
    from clipbench.report.plots import HEADLINE
    from clipbench.toy.make_world import make_toy_world

    make_toy_world(tmp / "toy", scale=scale, quiet=True)
    precisions = PRECISIONS if device == "cuda" else CPU_PRECISIONS
    csv = tmp / "toy.csv"
    cmd = [sys.executable, "-m", "clipbench", "-m", "experiment=toy_default", f"model.precision={','.join(precisions)}",
           f"device={device}", f"paths.toy={tmp / 'toy'}", f"results_csv={csv}", f"cache_dir={tmp / 'cache'}",
           f"hydra.sweep.dir={tmp / 'sweep'}", "progress=false"]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    if not csv.exists():
        raise RuntimeError(f"toy_default wrote no rows:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if proc.returncode != 0:  # some jobs failed (their errors on stderr); the others' rows still count
        print(proc.stderr[-3000:], file=sys.stderr)
    frame = pd.read_csv(csv, keep_default_na=False)
    frame = frame[frame["metric"].isin(HEADLINE)]
    rows: dict[tuple, dict] = {}
    for r in frame.itertuples():
        case = " ".join(str(x) for x in (r.task, r.dataset, r.split, r.method) if x)
        row = rows.setdefault((case, r.metric), {"step": "toy_default", "case": case, "metric": r.metric})
        row.update({r.model_precision: r.value, f"items/s {r.model_precision}": r.items_per_s,
                    f"peak MB {r.model_precision}": r.peak_mem_mb})
    return list(rows.values())


def suite_rows(device: str, size: list[str], tmp: Path) -> list[dict]:
    """The zero-shot suite's four paths; clipbench and clip_benchmark also give their top-1."""
    args = zeroshot_suite.build_parser().parse_args(["--arch", "ViT-B-16", "--device", device, *size])
    tmp.mkdir(parents=True, exist_ok=True)
    zeroshot_suite.prepare(args, tmp)
    results = zeroshot_suite.measure(args, tmp)
    different = zeroshot_suite.differences(results)
    for line in different:
        print("zero-shot suite, clipbench vs clip_benchmark: DIFFERENT " + line, file=sys.stderr)
    precision = "fp16" if device == "cuda" else "fp32"  # the suite's autocast
    rows = []
    for path, r in results.items():
        top1 = [m["top1"] for m in r["metrics"].values()]
        rows.append({"step": f"zeroshot_suite ViT-B-16 {r['items']} img", "case": path, "metric": ("top1 DIFFERENT" if different else "top1") if top1 else "",
                     precision: top1[0] if top1 else None, f"items/s {precision}": r["items"] / r["seconds"],
                     f"peak MB {precision}": r["peak_mem_mb"]})
    return rows


def falip_rows(device: str, size: list[str]) -> list[dict]:
    """falip_rec's paths per family, in fp32; items/s are boxes/s."""
    args = falip_rec.build_parser().parse_args(["--device", device, *size])
    return [{"step": f"falip_rec {r['family']}", "case": r["path"], "metric": "",
             "items/s fp32": r["boxes_per_s"], "peak MB fp32": r["peak_mem_mb"]} for r in falip_rec.measure(args)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run every step on CPU at a tiny size")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device is visible; use --cpu for the tiny CPU run")
    device = "cpu" if args.cpu else "cuda"
    size = SIZES[device]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        steps = {"toy_default": lambda: toy_rows(device, size["toy_scale"], tmp),
                 "zeroshot_suite": lambda: suite_rows(device, size["suite"], tmp / "suite"),
                 "falip_rec": lambda: falip_rows(device, size["falip"])}
        rows, failed = [], []
        for name, step in steps.items():
            try:
                rows += step()
            except (Exception, SystemExit) as error:  # one failed step leaves the others' rows in the table
                print(f"{name} failed: {error}", file=sys.stderr)
                rows.append({"step": name, "case": "FAILED: " + str(error).strip().splitlines()[-1][:80]})
                failed.append(name)
            print(f"{name}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    from clipbench.results.table import format_table

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"GPU check on {name}, torch {torch.__version__}, {time.perf_counter() - start:.0f} s")
    print(format_table([cells(r) for r in rows], COLUMNS))
    if device == "cpu":
        print("fp16 left blank on CPU: clipbench refuses fp16 autocast there")
    if failed:
        raise SystemExit(f"error: {', '.join(failed)} failed (stderr above)")


if __name__ == "__main__":
    main()

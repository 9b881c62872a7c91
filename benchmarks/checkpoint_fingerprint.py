"""The checkpoint fingerprint (sha256 of the whole file) against a plain read of the same file.

    .venv/bin/python benchmarks/checkpoint_fingerprint.py [--mb 600] [--dir /tmp] [--repeats 3]

Writes a ``--mb`` MB .safetensors file of random float32 tensors under ``--dir``, then, interleaved
and median of the repeats: the fingerprint with its memo cleared, a plain 16 MiB-chunk read of the
file, and the memoised second call. The file is deleted afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from clipbench.models import checkpoints


def plain_read(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=600)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = max(1, args.mb * 2**20 // (4 * 4096 * 64))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "checkpoint.safetensors"
        save_file({f"w{i}": torch.randn(4096, 64) for i in range(rows)}, str(path))
        hashed, read, memo = [], [], []
        for _ in range(args.repeats):
            checkpoints._FINGERPRINTS.clear()
            t0 = time.perf_counter()
            checkpoints.file_fingerprint(path)
            hashed.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            checkpoints.file_fingerprint(path)
            memo.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain_read(path)
            read.append(time.perf_counter() - t0)
        size = path.stat().st_size / 2**20
    h, r, m = (statistics.median(x) for x in (hashed, read, memo))
    print(f"file: {size:.0f} MiB")
    print(f"fingerprint (whole-file sha256): {h:.3f} s ({size / h:.0f} MiB/s)")
    print(f"plain read:                      {r:.3f} s; fingerprint / read = {h / r:.2f}")
    print(f"memoised second call:            {m * 1e6:.0f} us")


if __name__ == "__main__":
    main()

"""Seeding, device choice, precision contexts, throughput and peak-memory measurement."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clipbench.errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was requested but no CUDA device is visible; use device=cpu or auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError("device", f"{name!r} is not allowed; use auto, cpu or cuda")
    if name.startswith("cuda:"):
        index = name.split(":", 1)[1]
        if not index.isdigit():
            raise ConfigError("device", f"{name!r} is not allowed; use cuda:<index>, e.g. cuda:0")
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index) >= visible:
            raise ConfigError("device", f"{name} was requested but {visible} CUDA device(s) are visible; use device=cpu or auto")
    return torch.device(name)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """fp32 runs plain; bf16/fp16 use autocast on CUDA, and bf16 autocast on CPU."""
    if precision not in PRECISIONS:
        raise ConfigError("model.precision", f"{precision!r} is not allowed; use fp32, bf16 or fp16")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cpu":
        if precision == "fp16":
            raise ConfigError("model.precision", "fp16 autocast is not supported on CPU; use bf16 or fp32")
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


# On CPU a job's own peak is the kernel's resident high-water mark (VmHWM in /proc/self/status), which
# writing "5" to /proc/self/clear_refs resets to the current resident size (Linux >= 4.0, `man 5 proc`).
# getrusage's ru_maxrss is the process's peak since it started and cannot be reset, so a small job run
# after a large one in the same process would report the large one's memory; it stays the fallback
# where /proc is missing (macOS). Either way the peak includes what stays resident between jobs (the
# loaded model, cached datasets), as the GPU figure includes the weights.
PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA allocation on GPU, else the peak resident set size, both since :func:`reset_peak_memory`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        line = next(line for line in PROC_STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # kB
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        PROC_CLEAR_REFS.write_text("5")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Throughput:
    """Counts items and seconds: the whole loop (end to end) and the model forward alone."""

    device: torch.device
    items: int = 0
    forward_seconds: float = 0.0
    _start: float = field(default_factory=time.perf_counter)
    _end: float | None = None

    @contextlib.contextmanager
    def forward(self, n_items: int):
        synchronize(self.device)
        t0 = time.perf_counter()
        yield
        synchronize(self.device)
        self.forward_seconds += time.perf_counter() - t0
        self.items += n_items

    def stop(self) -> None:
        self._end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self._end or time.perf_counter()) - self._start

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def forward_items_per_s(self) -> float:
        return self.items / self.forward_seconds if self.forward_seconds > 0 else 0.0

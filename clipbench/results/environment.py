"""The environment a run measured in: library versions, Python, CUDA/cuDNN, CPU and GPU, determinism settings.

The whole record goes into metrics.json and the W&B config; its short hash (``env_key``) is the CSV's ``env``
column, so the report can tell rows measured in different environments apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from functools import lru_cache
from importlib import metadata

#: distributions whose versions can change a number (names as pip knows them)
LIBRARIES = ("torch", "torchvision", "open_clip_torch", "timm", "transformers", "clip-benchmark", "numpy", "pillow")


def library_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (nothing is imported); "" when not installed."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_record() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "cuda": torch.version.cuda or "", "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
        "gpu": sorted(set(names)), "gpu_count": len(names),
    }


def determinism() -> dict:
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
    }


@lru_cache(maxsize=1)
def machine_record() -> dict:
    return {
        "python": platform.python_version(), "implementation": sys.implementation.name,
        "os": f"{platform.system()} {platform.release()}", "libraries": library_versions(),
        "cpu": cpu_model(), "cpu_count": os.cpu_count() or 0, **gpu_record(),
    }


def environment_record() -> dict:
    """Everything above in one JSON-able dict; the same in every run of one machine and installation
    (the determinism settings are read anew: a process may change them between runs)."""
    return {**machine_record(), "determinism": determinism()}


def env_key(record: dict) -> str:
    """The CSV's ``env`` column: 12 hex digits of the record's hash (equal records, equal keys)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]

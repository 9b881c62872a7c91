"""Shared fixtures: a tiny random-init ViT registered with open_clip, and generated datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIGS = Path(__file__).resolve().parent / "assets"
os.environ["CLIPBENCH_MODEL_CONFIGS"] = str(TEST_CONFIGS)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
TINY_ARCH = "clipbench-test-vit"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def colour_images(n: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, list[int], list[str]]:
    """Flat-colour images with noise; label = colour index."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    labels = [int(x) for x in rng.integers(0, len(names), n)]
    base = np.array([COLOURS[names[i]] for i in labels], dtype=np.float32)[:, None, None, :]
    noise = rng.normal(0, 12, (n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), labels, names


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    from clipbench.toy.writers.classification import write_cifar100

    root = tmp_path_factory.mktemp("cifar")
    images, labels, names = colour_images(40)
    write_cifar100(root, "test", images, labels, names)
    return root


def run_cli(*args: str, cwd: Path | None = None, check: bool = False, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The installed console entry point, as a user runs it."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, *python_flags, "-m", "clipbench", *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"clipbench {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def base_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"model.arch={TINY_ARCH}", "model.pretrained=null", "device=cpu", "num_workers=0", "batch_size=16",
        f"results_csv={tmp_path / 'results.csv'}", f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "progress=false", *extra,
    ]


TOY_SEED, TOY_SCALE = 7, 0.25  # a small toy world, held out from training (seeded per step there)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    """The toy world on disk, written once per session by scripts/make_toy_world.py."""
    from helpers import load_script

    out = tmp_path_factory.mktemp("toy")
    load_script("make_toy_world").make_toy_world(out, seed=TOY_SEED, scale=TOY_SCALE, quiet=True)
    return out

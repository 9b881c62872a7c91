"""The built wheel runs on its own: configs, experiments and reported numbers ship inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

TOP_LEVEL_IGNORES = {".git", ".venv", "build", "data", "outputs", "multirun", "results", "wandb", ".cache", ".pytest_cache"}


def _build_ignores(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {n for n in names if (top and n in TOP_LEVEL_IGNORES) or n == "__pycache__" or n.endswith(".egg-info")}


def _sh(args, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; torch and the other dependencies come from this interpreter's site packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, source, ignore=_build_ignores)
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(source)])
    (wheel,) = (tmp / "dist").glob("clipbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "clipbench/conf/config.yaml" in names and "clipbench/experiments/toy_default.yaml" in names
    assert "clipbench/experiments/reported/falip.csv" in names
    assert "hydra_plugins/clipbench_experiments/experiment_source.py" in names
    venv = tmp / "venv"
    _sh([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = _sh([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "host_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _sh([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)])
    return venv


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"} | extra


def test_installed_wheel_runs_a_toy_job_from_any_folder(wheel_venv, tmp_path):
    bin_dir = wheel_venv / "bin"
    where = _sh([bin_dir / "python", "-c", "import clipbench; print(clipbench.__file__)"], cwd=tmp_path, env=_env()).stdout
    assert str(wheel_venv) in where  # the installed copy, not the checkout
    env = _env()
    assert "clipbench-toy-world" in _sh([bin_dir / "clipbench"], cwd=tmp_path, env=env).stdout
    _sh([bin_dir / "clipbench-toy-world", "--scale", "0.05", "--quiet"], cwd=tmp_path, env=env)  # data/toy, the presets' default
    toy_root = tmp_path / "data" / "toy"
    assert (toy_root / "cifar" / "cifar-100-python" / "test").is_file()
    proc = _sh([bin_dir / "clipbench", "+toy=zeroshot", "limit=8", "device=cpu", "num_workers=0", "progress=false"], cwd=tmp_path, env=env)
    assert "top1" in proc.stdout
    frame = pd.read_csv(tmp_path / "results" / "results.csv")
    assert set(frame.metric) >= {"top1", "top5"} and (frame.n[frame.metric == "top1"] == 8).all()
    shipped = _sh([bin_dir / "python", "-c", "from clipbench.paths import experiments_dir; print(experiments_dir())"],
                  cwd=tmp_path, env=env).stdout.strip()
    assert shipped.startswith(str(wheel_venv)) and Path(shipped, "toy_default.yaml").is_file()
    _sh([bin_dir / "clipbench-report", "--results", "results/results.csv", "--out", "report"], cwd=tmp_path, env=env)
    assert any((tmp_path / "report").iterdir())
    _sh([bin_dir / "clipbench-search", "--images", str(toy_root / "images"), "--query", "a red circle", "-k", "1",
         "--out", "hit.png", "--no-progress", "--cache-dir", "cache"], cwd=tmp_path, env=env)
    assert (tmp_path / "hit.png").stat().st_size > 0

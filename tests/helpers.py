"""In-process config composition for tests that do not need a subprocess."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

import clipbench.config  # noqa: F401  (registers resolvers)
from clipbench.cli import CONF_DIR


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def tmp_overrides(tmp_path: Path, *extra: str) -> list[str]:
    from conftest import TINY_ARCH

    return [
        f"model.arch={TINY_ARCH}", "model.pretrained=null", "device=cpu", "num_workers=0", "batch_size=16",
        f"results_csv={tmp_path / 'results.csv'}", f"cache_dir={tmp_path / 'cache'}", "progress=false", *extra,
    ]


def load_script(name: str):
    """A module from scripts/ (not an installed package)."""
    return load_module(Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py")


def load_module(path: Path):
    """A Python file outside the package (scripts/, benchmarks/) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git_commit_all(repo: Path, files: dict[str, str]) -> str:
    """Write ``files`` (name -> text) into ``repo``, a git repository made if needed, commit them all; the
    commit's 12-digit sha."""
    import subprocess

    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    if not (repo / ".git").exists():
        subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "files"], check=True)
    return subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

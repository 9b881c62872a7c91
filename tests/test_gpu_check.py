"""The GPU check's --cpu run: the same steps as on a GPU machine, at a tiny size, every row in its one table."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import falip_rec  # noqa: E402
import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory) -> subprocess.CompletedProcess:
    """``bash benchmarks/gpu_check.sh --cpu`` on this interpreter, as if no wheels had been fetched."""
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_WHEELS=str(tmp_path_factory.mktemp("no_wheels")))
    env.pop("CLIPBENCH_MODEL_CONFIGS", None)  # only the bundled and open_clip architectures, as on the GPU machine
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def table(stdout: str) -> list[dict]:
    """The printed table's rows as dicts under its header."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [dict(zip(split[0], cells)) for cells in split[1:]]


def datasets_of(job) -> int:
    """How many datasets (or languages of one) a toy_default job lists: each is a case of its own."""
    listed = [o.split("=", 1)[1] for o in job if o.startswith(("dataset.name=", "dataset.language="))]
    return len(listed[0].split(",")) if listed else 1


def test_cpu_run_prints_one_table_with_every_step(cpu_check):
    assert cpu_check.returncode == 0, cpu_check.stdout[-2000:] + cpu_check.stderr[-3000:]
    rows = table(cpu_check.stdout)
    assert rows and list(rows[0]) == gpu_check.COLUMNS
    toy = [r for r in rows if r["step"] == "toy_default"]
    jobs = OmegaConf.load(ROOT / "experiments" / "toy_default.yaml").hydra.sweeper.jobs
    assert len({r["case"] for r in toy}) == sum(map(datasets_of, jobs))  # every job, each of its datasets
    tasks = {OmegaConf.load(ROOT / "conf" / "toy" / f"{job[0].removeprefix('+toy=')}.yaml").defaults[0]["override /task"]
             for job in jobs}
    assert {r["case"].split()[0] for r in toy} == tasks
    for r in toy:  # fp32 and bf16 side by side; fp16 is refused on CPU
        assert all(r[f"{c}{p}"] for c in ("", "items/s ", "peak MB ") for p in gpu_check.CPU_PRECISIONS), r
        assert not r["fp16"]
    suite = {r["case"]: r for r in rows if r["step"].startswith("zeroshot_suite ViT-B-16")}
    assert set(suite) == {"clipbench", "clipbench (classifier cached by an earlier job)", "clip_benchmark eval",
                          "bare encode_image on pre-decoded tensors"}
    assert suite["clipbench"]["fp32"] == suite["clip_benchmark eval"]["fp32"] != ""
    assert suite["clipbench"]["metric"] == "top1"  # "top1 DIFFERENT" where clip_benchmark's metrics differ
    assert all(float(r["items/s fp32"]) > 0 and float(r["peak MB fp32"]) > 0 for r in suite.values())
    for family in falip_rec.FAMILIES:
        paths = {r["case"] for r in rows if r["step"] == f"falip_rec {family}" and float(r["items/s fp32"]) > 0}
        assert {"falip fast", "falip per-box", "plain forward", "falip forward"} <= paths, family


def test_a_checkout_on_pythonpath_finds_its_configs_and_experiments(monkeypatch):
    """On the GPU machine clipbench is not installed: ``clipbench.conf`` does not exist as a package there."""
    import importlib.util

    from clipbench import paths

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("clipbench.conf", "clipbench.experiments") else find_spec(name, *a))
    assert (paths._package_folder("clipbench.conf", "conf") / "config.yaml").is_file()
    assert (paths.experiments_dir() / "toy_default.yaml").is_file()

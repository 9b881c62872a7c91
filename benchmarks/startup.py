"""Start-up cost of the command-line entry points: wall time, ``python -X importtime`` totals, heavy modules.

    .venv/bin/python benchmarks/startup.py [--python PY] [--baseline PY] [--repeats 3] [--quick]

Each command runs as a user runs it (the console script of PY's environment, in a scratch folder): once under
``-X importtime``, whose top-level imports' cumulative microseconds are summed (``import s``), and ``--repeats``
times plain for the wall time (median) and peak resident memory, taking turns with the baseline. ``ratio`` is the wall time over a bare
``python -c pass`` measured in the same run; with ``--baseline PY2`` (e.g. another checkout's venv) the same
commands run under PY2 too and ``vs base`` is the wall-time ratio to it. ``heavy`` lists the large libraries
a command imported. The toy zero-shot run uses a small toy world written first (``--scale 0.1``).
``--quick``: one repetition of the commands that need no torch (all but the toy run), for a smoke test.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "open_clip", "transformers", "timm", "clip_benchmark", "pandas", "scipy",
         "matplotlib", "wandb", "cv2", "datasets", "h5py", "optuna", "sklearn")
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")

LIGHT_COMMANDS = {
    "clipbench --help": ("clipbench", "--help"),
    "clipbench-list": ("clipbench-list",),
    "clipbench task=nope": ("clipbench", "task=nope"),
    "clipbench method.layers=[20] (bad)": ("clipbench", "dataset=imagefolder", "dataset.root=.", "model.arch=ViT-B-32",
                                           "method=falip", "method.layers=[20]"),
    "clipbench-search --help": ("clipbench-search", "--help"),
}
COMMANDS = {
    **LIGHT_COMMANDS,
    "clipbench +toy=zeroshot": ("clipbench", "+toy=zeroshot", "paths.toy=toy", "device=cpu", "results_csv=results.csv",
                                "hydra.run.dir=run", "progress=false"),
}


def import_profile(stderr: str) -> tuple[float, set[str]]:
    """Seconds of the top-level imports (their cumulative times summed) and the heavy libraries among all imports."""
    total_us, heavy = 0, set()
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if not match:
            continue
        cumulative, indent, name = int(match[2]), match[3], match[4]
        if not indent:
            total_us += cumulative
        if name.split(".")[0] in HEAVY:
            heavy.add(name.split(".")[0])
    return total_us / 1e6, heavy


def run_once(argv: list[str], cwd: Path) -> tuple[float, float, str, int]:
    """Wall seconds, peak resident MB, stderr and exit code of one process."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="100", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return wall, usage.ru_maxrss / 1024, err.read(), proc.returncode


def command_argv(python: Path, command: tuple[str, ...]) -> list[str]:
    """The console script of ``python``'s environment (``python`` itself for the bare interpreter)."""
    return [str(python), *command[1:]] if command[0] == "python" else [str(python), str(python.parent / command[0]), *command[1:]]


def measure_all(pythons: list[Path], commands: dict, cwd: Path, repeats: int) -> list[dict]:
    """Per environment, each command's results. The environments take turns on every repetition, so a change
    in the machine's load falls on both alike."""
    commands = {"python -c pass": ("python", "-c", "pass"), **commands}
    results: list[dict] = [{} for _ in pythons]
    for label, command in commands.items():
        print(f"  {label}", file=sys.stderr, flush=True)
        runs: list[list] = [[] for _ in pythons]
        for i, python in enumerate(pythons):
            argv = command_argv(python, command)
            _, _, stderr, code = run_once([argv[0], "-X", "importtime", *argv[1:]], cwd)
            import_s, heavy = import_profile(stderr)
            results[i][label] = {"import": import_s, "heavy": heavy, "code": code}
        for _ in range(repeats):
            for i, python in enumerate(pythons):
                runs[i].append(run_once(command_argv(python, command), cwd))
        for i in range(len(pythons)):
            results[i][label] |= {"wall": statistics.median(r[0] for r in runs[i]), "mem": max(r[1] for r in runs[i])}
    return results


def table(results: dict, baseline: dict | None) -> str:
    bare = results["python -c pass"]["wall"]
    head = ["command", "wall s", "ratio", "import s", "import share", "peak MB", "exit", "heavy imported"]
    if baseline:
        head[3:3] = ["base wall s", "vs base", "base import s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in results.items():
        cells = [label, f"{r['wall']:.2f}", f"{r['wall'] / bare:.1f}x", f"{r['import']:.2f}",
                 f"{min(r['import'] / r['wall'], 1):.0%}", f"{r['mem']:.0f}", str(r["code"]), ", ".join(sorted(r["heavy"])) or "-"]
        if baseline:
            b = baseline[label]
            cells[3:3] = [f"{b['wall']:.2f}", f"{r['wall'] / b['wall']:.2f}x", f"{b['import']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_toy_world(python: Path, cwd: Path) -> None:
    subprocess.run([str(python), str(python.parent / "clipbench-toy-world"), "--out", str(cwd / "toy"), "--scale", "0.1",
                    "--quiet"], check=True, cwd=cwd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", type=Path, default=Path(sys.executable), help="the environment measured")
    parser.add_argument("--baseline", type=Path, help="another environment's python, measured the same way")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition of the commands that need no torch")
    args = parser.parse_args(argv)
    commands, repeats = (LIGHT_COMMANDS, 1) if args.quick else (COMMANDS, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        if not args.quick:
            write_toy_world(args.python, cwd)
        pythons = [args.python, *([args.baseline] if args.baseline else [])]
        results, *rest = measure_all(pythons, commands, cwd, repeats)
    baseline = rest[0] if rest else None
    print(f"{args.python} (wall: median of {repeats}; import s: top-level cumulative under -X importtime)")
    print(table(results, baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())

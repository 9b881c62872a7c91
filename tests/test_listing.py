"""What a newcomer types first: bare clipbench, clipbench-list, and docs that point at real places."""

from __future__ import annotations

import subprocess

from conftest import ROOT, TINY_ARCH, run_cli

from clipbench.listing import main as list_main


def test_bare_clipbench_prints_what_to_type():
    proc = run_cli()
    assert proc.returncode == 0, proc.stderr
    assert "+toy=zeroshot" in proc.stdout and "paths.toy" in proc.stdout and "clipbench-list" in proc.stdout
    assert "clipbench-toy-world" in proc.stdout and "clipbench-toy-world" in run_cli("--help").stdout


def _rows(text: str, first_cell: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"| {first_cell} ")]


def test_clipbench_list_tables(capsys):
    list_main(["tasks", "--width", "0"])  # one line per row, to read cells
    out = capsys.readouterr().out
    (rec,) = _rows(out, "rec")
    assert "refcoco" in rec and "falip_subtract" in rec and "red_circle_falip" in rec and "cifar100" not in rec
    (clipscore,) = _rows(out, "clipscore")
    assert "flickr8k_expert" in clipscore and "falip" not in clipscore  # clipscore takes method=clip only
    (probe,) = _rows(out, "linear_probe")
    assert "imagefolder" in probe and "clip_benchmark" in probe and "falip" not in probe
    list_main(["experiments"])
    assert _rows(capsys.readouterr().out, "toy_default")
    list_main(["models", "--filter", TINY_ARCH])
    (model,) = _rows(capsys.readouterr().out, TINY_ARCH)
    assert "| -" in model  # no open_clip tag for a local architecture
    list_main(["models", "--filter", "ViT-B-32"])
    assert "openai" in _rows(capsys.readouterr().out, "ViT-B-32")[0]


def test_docs_point_to_files_that_exist():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    mentions = [path for path in tracked if path.endswith((".py", ".yaml", ".md"))
                and "REFERENCE.md" in (ROOT / path).read_text(errors="ignore") and path != "tests/test_listing.py"]
    assert mentions == []  # REFERENCE.md is not part of the repository

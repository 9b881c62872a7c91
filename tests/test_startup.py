"""Start-up: commands that need no model answer without importing torch; registries import code on demand."""

import subprocess
import sys
import textwrap

from conftest import ROOT

BENCHMARK = ROOT / "benchmarks" / "startup.py"


def test_help_listing_and_config_errors_import_no_torch():
    """benchmarks/startup.py --quick runs --help, clipbench-list, two config errors and clipbench-search --help
    as users do, and names the heavy libraries each imported (from ``python -X importtime``)."""
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--quick"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| clipbench")}
    assert set(rows) == {"clipbench --help", "clipbench-list", "clipbench task=nope",
                         "clipbench method.layers=[20] (bad)", "clipbench-search --help"}, proc.stdout
    for command, cells in rows.items():
        exit_code, heavy = cells[-2], cells[-1]
        assert exit_code == ("2" if command.startswith("clipbench task=") or "(bad)" in command else "0"), (command, cells)
        assert heavy == "-", (command, heavy)  # none of torch, open_clip, transformers, timm, pandas, scipy, ...


def test_registry_imports_declared_code_on_first_use_and_finds_self_registering_modules(tmp_path, monkeypatch):
    package = tmp_path / "startup_pkg"
    package.mkdir()
    files = {
        "__init__.py": """
            from clipbench.registry import Registry
            THINGS = Registry("thing", package="startup_pkg", helpers=("helper",))
            THINGS.register("declared", THINGS.lazy("startup_pkg.impl", "make"))
        """,
        "impl.py": "def make():\n    return 'built'\n",
        "extra.py": "from startup_pkg import THINGS\nTHINGS.register('extra', 'own entry')\n",
        "helper.py": "raise ImportError('a helper module is never searched')\n",
    }
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    from startup_pkg import THINGS

    assert "startup_pkg.extra" not in sys.modules
    assert THINGS.names() == ["declared", "extra"]
    assert "startup_pkg.impl" not in sys.modules  # declared code waits for its first use
    assert THINGS.get("extra") == "own entry" and THINGS.get("declared")() == "built"
    assert "startup_pkg.impl" in sys.modules
    for name in [m for m in sys.modules if m.startswith("startup_pkg")]:
        monkeypatch.delitem(sys.modules, name)


def test_clipbench_list_names_the_models_command_instead_of_importing_open_clip(capsys):
    from clipbench.listing import main
    from clipbench.models.archs import arch_names

    main(["--width", "100"])
    out = capsys.readouterr().out
    assert "Tasks (task=)" in out and "Experiments" in out and "| ViT-B-32 " not in out
    pointer = [line for line in out.splitlines() if "clipbench-list models" in line]
    assert pointer == [f"open_clip architectures ({len(arch_names())}) and their tags: clipbench-list models [--filter TEXT]"]
    assert max(map(len, out.splitlines())) <= 100


def test_architecture_names_are_open_clips_list_without_importing_it():
    import open_clip

    from clipbench.models.archs import arch_names
    from clipbench.models.factory import available_archs

    assert arch_names() == sorted(available_archs()) and "toyclip" in arch_names() and "ViT-B-32" in open_clip.list_models()

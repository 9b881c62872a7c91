"""Finding things from the command line: shell completion, "did you mean", where a run's files went."""

import pytest
from conftest import base_args, run_cli


def test_shell_completion_installs():
    proc = run_cli("-sc", "install=bash")
    assert proc.returncode == 0, proc.stderr
    assert "hydra_bash_completion" in proc.stdout and "unknown key" not in proc.stderr


def test_a_mistyped_key_gets_the_closest_one():
    proc = run_cli("bach_size=3")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: bach_size: unknown key (did you mean 'batch_size'?)")
    far = run_cli("zzzz=1")
    assert far.returncode == 2 and "did you mean" not in far.stderr


def test_a_run_prints_its_run_directory(tmp_path, cifar_root):
    proc = run_cli(*base_args(tmp_path, f"dataset.root={cifar_root}", "dataset.check_integrity=false", "limit=4"),
                   check=True)
    assert f"run directory: {tmp_path / 'run'}" in proc.stdout.splitlines()
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_clipbench_list_fits_100_columns_with_whole_descriptions(capsys):
    from clipbench.listing import _first_paragraph, main
    from clipbench.paths import experiments_dir

    main(["experiments", "--width", "100"])
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    cells = " ".join(line.split("|")[2].strip() for line in out.splitlines() if line.count("|") == 3)
    for path in experiments_dir().glob("*.yaml"):
        whole = _first_paragraph(path)
        assert " ".join(whole.split()) in " ".join(cells.split()), path.name  # wrapped, never cut
    main(["experiments", "--width", "0"])
    assert max(map(len, capsys.readouterr().out.splitlines())) > 100  # one line per row on request


def test_a_missing_toy_world_points_to_its_writer(tmp_path):
    from helpers import compose_config

    from clipbench.errors import ConfigError
    from clipbench.runner import validate

    for toy in ("zeroshot", "rec", "region_cls"):
        with pytest.raises(ConfigError) as info:
            validate(compose_config([f"+toy={toy}", f"paths.toy={tmp_path / 'no_world'}"]))
        assert "run clipbench-toy-world" in str(info.value) and "download" not in str(info.value), toy
    with pytest.raises(ConfigError) as info:  # a real dataset root keeps its own advice
        validate(compose_config(["dataset.root=/nonexistent/cifar"]))
    assert "dataset.download=true" in str(info.value) and "toy" not in str(info.value)


def test_a_mistyped_option_is_one_line_with_the_closest_one(tmp_path):
    for args in (["method=fallip"], ["-m", "method=clip,fallip"]):
        proc = run_cli(*args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: method=fallip: no such option (did you mean 'falip'?)")
    (tmp_path / "method").mkdir()  # an option of the user's own, beside the shipped ones, is not refused
    (tmp_path / "method" / "mine.yaml").write_text("defaults:\n  - /schema/method/falip@_here_\n  - _self_\nalpha: 0.3\n")
    proc = run_cli("--config-dir", str(tmp_path), "method=mine", "--cfg", "job")
    assert proc.returncode == 0 and "alpha: 0.3" in proc.stdout, proc.stderr

"""Every experiment config, and every job or sweep value in it, composes and passes the schemas."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from clipbench.cli import CONF_DIR
from clipbench.errors import ConfigError
from clipbench.paths import experiments_dir
from clipbench.runner import validate
from hydra_plugins.clipbench_sweeper.job_list_sweeper import expand_jobs

EXPERIMENTS = sorted(p.stem for p in experiments_dir().glob("*.yaml"))
DATA_KEYS = ("dataset.", "model.pretrained")  # acceptable: no data or weights on this machine


def _compose(overrides):
    return compose("config", overrides=overrides, return_hydra_config=True)


def _jobs(name: str) -> list[list[str]]:
    sweeper = _compose([f"experiment={name}"]).hydra.sweeper
    if "jobs" in sweeper:
        params = [f"{key}={values}" for key, values in (sweeper.get("params") or {}).items()]
        return [[f"experiment={name}", *job] for job in expand_jobs(sweeper.jobs, params, models=sweeper.get("models"))]
    parser = OverridesParser.create()
    jobs = []
    for key, values in (sweeper.get("params") or {}).items():
        override = parser.parse_override(f"{key}={values}")
        for value in override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]:
            jobs.append([f"experiment={name}", f"{key}={value}"])
    return jobs or [[f"experiment={name}"]]


@pytest.fixture(scope="module", autouse=True)
def hydra_context():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_jobs_compose_and_validate(name):
    from omegaconf import OmegaConf

    for job in _jobs(name):
        cfg = _compose(job)
        cfg = OmegaConf.create({k: v for k, v in cfg.items() if k != "hydra"})
        _check_method_fits_task(cfg)  # also where the data is missing, which validation reads first
        try:
            validate(cfg)
        except ConfigError as exc:
            assert exc.key.startswith(DATA_KEYS), f"{job}: {exc}"


def _check_method_fits_task(cfg) -> None:
    from clipbench.config import to_schema
    from clipbench.methods import METHODS
    from clipbench.tasks import TASKS

    TASKS.get(cfg.task.name).check_method(to_schema(METHODS.get(cfg.method.name).config, cfg.method, "method"))


def test_every_paper_table_has_an_experiment():
    for name in ("falip_rec", "falip_region_cls", "falip_pointcloud", "pointclip", "clipscore_correlation",
                 "cifar100_model_variants", "falip_head_sensitivity", "toy_default"):
        assert name in EXPERIMENTS


def test_experiment_keys_override_the_primary_config():
    assert _compose(["experiment=toy_default"]).num_workers == 0
    assert _compose(["experiment=toy_default", "num_workers=3"]).num_workers == 3  # the command line still wins


@pytest.mark.parametrize("name", ["falip_rec", "falip_region_cls", "toy_falip_rec", "toy_falip_region_cls", "toy_default"])
def test_falip_tables_feed_every_method_the_same_square_input(name):
    for job in _jobs(name):
        cfg = _compose(job)
        if cfg.task.name in ("rec", "region_cls", "zeroshot"):
            assert cfg.method.resize == "square", job


def test_model_families_sweep_is_the_job_list_it_replaced():
    """The family experiment's sweeps expand to the 72 jobs once written out by hand, in the same order."""
    from pathlib import Path

    asset = Path(__file__).parent / "assets" / "falip_model_families_jobs.txt"
    written = [line.split(", ") for line in asset.read_text().splitlines() if not line.startswith("#")]
    expanded = _jobs("falip_model_families")
    assert len(written) == 72
    assert [frozenset(job) for job in expanded] == [frozenset(["experiment=falip_model_families", *job]) for job in written]


def test_a_job_may_sweep_and_the_params_multiply_every_job():
    jobs = expand_jobs([["+toy=rec", "method=falip"], ["task=rec", "dataset=a,b", "method=c,d"]], ["seed=0,1"])
    assert jobs[:2] == [["+toy=rec", "method=falip", "seed=0"], ["+toy=rec", "method=falip", "seed=1"]]
    assert [job[1:3] for job in jobs[2::2]] == [["dataset=a", "method=c"], ["dataset=a", "method=d"],
                                                ["dataset=b", "method=c"], ["dataset=b", "method=d"]]
    assert expand_jobs([], ["seed=0,1"]) == [["seed=0"], ["seed=1"]]

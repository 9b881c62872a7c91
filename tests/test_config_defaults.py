"""Each default is stated once, in its dataclass; a group YAML holds only what differs from it."""

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from clipbench.config.schemas import schema, schema_defaults
from clipbench.paths import CONF_DIR

GROUPS = ("task", "dataset", "method", "model", "logger")
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((Path(CONF_DIR) / group).glob("*.yaml"))]


@pytest.fixture(scope="module", autouse=True)
def hydra_context():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def _raw(group: str, option: str) -> dict:
    return yaml.safe_load((Path(CONF_DIR) / group / f"{option}.yaml").read_text()) or {}


def _base(group: str, option: str) -> tuple[str, dict]:
    """The option's schema name and the values it extends: the schema's defaults, or the option it inherits."""
    first = _raw(group, option)["defaults"][0]
    if first.startswith("/schema/"):
        name = first.split("/")[3].split("@")[0]
        return name, schema_defaults(schema(group, name))
    parent = compose("config", overrides=[f"{group}={first}"])[group]
    return _base(group, first)[0], OmegaConf.to_container(parent)


def _set_keys(group: str, option: str) -> dict:
    return {k: v for k, v in _raw(group, option).items() if k != "defaults"}


@pytest.mark.parametrize("group,option", OPTIONS)
def test_no_yaml_restates_a_default(group, option):
    _, base = _base(group, option)
    restated = {k: v for k, v in _set_keys(group, option).items() if k in base and base[k] == v}
    assert not restated, f"conf/{group}/{option}.yaml restates {restated}: drop them, the dataclass states them"


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_holds_exactly_its_schema_keys(group, option):
    name, _ = _base(group, option)
    composed = compose("config", overrides=[f"{group}={option}"])[group]
    assert list(composed) == list(schema_defaults(schema(group, name)))


def _extends_own_schema(group: str, option: str) -> bool:
    """True for conf/method/crop.yaml (extends /schema/method/crop); false for variants such as falip_subtract."""
    return group != "model" and _raw(group, option)["defaults"][0].startswith(f"/schema/{group}/{option}@")


@pytest.mark.parametrize("group,option", [(g, o) for g, o in OPTIONS if _extends_own_schema(g, o)])
def test_an_options_own_schema_gives_its_values(group, option):
    """conf/method/crop.yaml for CropConfig sets nothing the dataclass could say: a value written there instead of
    the dataclass would be a second default that can drift (as crop's multi_box once did). Left out: where the
    data lives (${paths.*}) and a name naming the option itself (refcoco+ is read by the refcoco loader)."""
    written = {k: v for k, v in _set_keys(group, option).items()
               if not str(v).startswith("${paths.") and not (k == "name" and v == option)}
    assert not written, f"conf/{group}/{option}.yaml sets {written}; state them in {schema(group, option).__name__}"


def test_a_key_left_to_the_schema_takes_a_plain_override():
    cfg = compose("config", overrides=["method=crop", "method.margin=0.1", "task=rec", "task.bank_size=7"])
    assert cfg.method.margin == 0.1 and cfg.task.bank_size == 7
    assert cfg.method.multi_box == "union"  # ReCLIP crops one rectangle around several boxes


def test_the_run_keys_come_from_their_schema():
    from clipbench.config import RunConfig

    cfg = OmegaConf.to_container(compose("config"))
    top = {k: v for k, v in cfg.items() if k not in (*GROUPS, "paths")}
    assert top == schema_defaults(RunConfig)
    primary = yaml.safe_load((Path(CONF_DIR) / "config.yaml").read_text())
    assert set(primary) == {"defaults", "hydra"}, "conf/config.yaml restates run keys: RunConfig states them"


def test_the_schema_tables_are_the_registries_configs():
    """Hydra reads method and task schemas from torch-free tables; they must be what the registries run."""
    from clipbench.config.methods import METHOD_CONFIGS
    from clipbench.config.tasks import TASK_CONFIGS
    from clipbench.methods import METHODS
    from clipbench.tasks import TASKS

    for registry, table in ((METHODS, METHOD_CONFIGS), (TASKS, TASK_CONFIGS)):
        assert registry.names() == sorted(table)
        assert all(registry.get(name).config is table[name] for name in table)


@pytest.mark.parametrize("overrides,method", [
    (["task=rec"], "falip"), (["task=rec", "method=clip"], "clip"), (["task=rec", "method=red_circle"], "red_circle"),
    (["+toy=rec"], "falip"), (["task=zeroshot"], "clip"), ([], "clip"),
])
def test_a_tasks_default_method(overrides, method):
    """INTERFACE.md: REC's default is FALIP, whether task=rec comes from the command line or a toy or experiment
    config; every other task's is plain CLIP, and method= on the command line always wins."""
    assert compose("config", overrides=overrides).method.name == method

"""FALIP through the command line: zero-shot with a region prior, config errors, experiment configs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from clipbench.cli import CONF_DIR as CONF
from tests.conftest import TINY_ARCH, base_args, run_cli


@pytest.mark.filterwarnings("ignore:model.pretrained is null")
def test_zeroshot_routes_falip_through_the_region_prior(cifar_root, tmp_path):
    from clipbench.config.methods import FalipConfig
    from clipbench.data.classification import Cifar100
    from clipbench.data.templates import CIFAR_TEMPLATES
    from clipbench.methods import METHODS
    from clipbench.methods.base import prior_box
    from clipbench.models import load_model
    from clipbench.models.text_cache import zero_shot_classifier

    loaded = load_model(TINY_ARCH, None, reuse=False)
    checkpoint = tmp_path / "tiny.pt"  # the CLI process must see the same random weights
    torch.save(loaded.model.state_dict(), checkpoint)
    args = base_args(
        tmp_path, f"model.pretrained={checkpoint}", "task=zeroshot", "dataset=cifar100", f"dataset.root={cifar_root}",
        "dataset.check_integrity=false", "method=falip", "method.layers=[-2,-1]", "method.alpha=2.0",
        "method.region=center:0.5", "save_predictions=true", "limit=6",
    )
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(tmp_path / "results.csv")
    assert set(rows["method"]) == {"falip"}
    params = json.loads(rows["method_params"].iloc[0])
    assert params["region"] == "center:0.5" and params["layers"] == [-2, -1] and params["alpha"] == 2.0
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(predictions) == 6

    # independent: FALIP features of the centred half box against the 18-template classifier
    cfg = FalipConfig(layers=[-2, -1], alpha=2.0, region="center:0.5")
    method = METHODS.get("falip").build(cfg, loaded)
    dataset = Cifar100(cifar_root, "test", check_integrity=False)
    classifier = zero_shot_classifier(loaded, dataset.classnames, CIFAR_TEMPLATES)
    images = [dataset.image(i) for i in range(6)]
    feats = torch.cat(method.encode_regions(images, [[[prior_box(im.width, im.height, "center:0.5")]] for im in images]))
    expected = loaded.logit_scale * feats @ classifier
    got = torch.tensor([json.loads(s) for s in predictions.sort_values("sample_id")["scores"]])
    assert torch.allclose(got, expected, atol=1e-3)
    plain = loaded.logit_scale * loaded.encode_image(torch.stack([method.transform(im) for im in images])) @ classifier
    assert (got - plain).abs().max() > 1e-2  # the prior region changed the scores


@pytest.mark.parametrize(
    "override, key",
    [("method.layers=[5]", "method.layers"), ("method.alpha=-1", "method.alpha"), ("method.heads=[[0],[1]] method.layers=[0,1,2]", "method.heads")],
)
def test_bad_falip_config_stops_with_one_line(cifar_root, tmp_path, override, key):
    args = base_args(
        tmp_path, "task=zeroshot", "dataset=cifar100", f"dataset.root={cifar_root}", "dataset.check_integrity=false",
        "method=falip", *override.split(),
    )
    proc = run_cli(*args)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "results.csv").exists()


def test_experiment_configs_compose():
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    with initialize_config_dir(str(CONF), version_base=None):
        heads = compose("config", overrides=["experiment=falip_head_sensitivity"], return_hydra_config=True)
        assert heads.task.name == "rec" and heads.dataset.name == "refcoco" and heads.method.name == "falip"
        assert heads.model.arch == "ViT-B-16" and heads.model.pretrained == "openai"
        sweeps = {k: parser.parse_override(f"{k}={v}") for k, v in heads.hydra.sweeper.params.items()}
        values = {k: list(o.sweep_iterator()) for k, o in sweeps.items()}
        assert values["method.alpha"] == [0.1, 0.2, 0.4, 0.8]
        assert [-4, -3, -2, -1] in values["method.layers"] and "all" in values["method.heads"]

        prior = compose("config", overrides=["experiment=cifar100_region_prior"], return_hydra_config=True)
        assert prior.task.name == "zeroshot" and prior.dataset.name == "cifar100"
        jobs = [list(job) for job in prior.hydra.sweeper.jobs]
        assert len(jobs) == 10 and ["method=falip", "method.region=center:0.5"] in jobs
        for job in jobs:
            one = compose("config", overrides=["experiment=cifar100_region_prior", *job])
            assert one.method.name in ("clip", "falip", "red_circle", "blur")
            assert one.method.region == dict(o.split("=") for o in job).get("method.region", "full")

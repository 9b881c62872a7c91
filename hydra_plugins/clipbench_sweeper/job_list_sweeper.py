"""A Hydra sweeper over an explicit list of jobs, for tables whose rows are not a Cartesian product.

    hydra:
      sweeper:
        _target_: hydra_plugins.clipbench_sweeper.job_list_sweeper.JobListSweeper   # or: defaults: - override /hydra/sweeper: job_list
        jobs:
          - [+toy=rec, method=falip]
          - [+toy=pointcloud, method=clip]
          - [task=rec, "dataset=refcoco,refcocog", "method=crop,falip"]   # a job may sweep: 4 jobs, first key outermost

A model comparison lists its models under ``models`` (docs/model_comparisons.md); each entry is a preset of
``conf/model`` or the whole model as a mapping (keys it leaves out take ModelConfig's defaults: open_clip,
``pretrained: null`` = random init), optionally with ``overrides`` of its own; every job runs once per model:

    hydra:
      sweeper:
        models:
          - vit_b_32                                                    # conf/model/vit_b_32.yaml
          - {arch: ViT-B-16, pretrained: laion2b_s34b_b88k}              # an open_clip tag
          - {arch: ViT-B-16, pretrained: /ckpt/ft.safetensors}           # a local checkpoint
          - {source: hf, arch: openai/clip-vit-base-patch16, overrides: [batch_size=32]}

Command-line overrides apply to every job; sweeps on the command line (``seed=0,1``) or in
``hydra.sweeper.params`` (``dataset.name: a,b``) multiply the list, each job's runs kept together.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from clipbench.errors import ConfigError


def _product(overrides) -> list[list[str]]:
    """The jobs of one override list, its sweeps expanded as Hydra's basic sweeper does (first key outermost)."""
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


MODEL_KEYS = ("source", "arch", "pretrained", "precision", "cache_dir")  # clipbench.config.ModelConfig
_PLAIN = re.compile(r"[\w./@:+${}~-]+")


def _value(value) -> str:
    """``value`` in Hydra's override grammar: null, true/false, a number, a plain word or path, else quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    if isinstance(value, (int, float)) or _PLAIN.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def model_job(entry) -> list[str]:
    """The overrides of one ``models`` entry: a preset name, or the whole model as a mapping plus its ``overrides``."""
    if isinstance(entry, str):
        return [f"model={entry}"]
    if not isinstance(entry, Mapping):
        raise ConfigError("hydra.sweeper.models", f"{entry!r} is neither a model preset name nor a mapping of model keys")
    unknown = sorted(set(entry) - set(MODEL_KEYS) - {"overrides"})
    if unknown or "arch" not in entry:
        raise ConfigError("hydra.sweeper.models", f"{dict(entry)} needs arch and takes only {', '.join(MODEL_KEYS)} "
                          f"and overrides{f' (not {unknown[0]})' if unknown else ''}")
    model = {"source": "open_clip", "pretrained": None} | {k: v for k, v in entry.items() if k != "overrides"}
    return [f"model.{key}={_value(value)}" for key, value in model.items()] + list(entry.get("overrides") or [])


def expand_jobs(jobs: list[list[str]], arguments: list[str], parser: OverridesParser | None = None,
                models: list | None = None) -> list[list[str]]:
    """Every job's own sweeps expanded, then each job times the sweeps in ``arguments`` (its runs kept together);
    with ``models``, the whole list once per model (the model outermost)."""
    parser = parser or OverridesParser.create()
    extras = _product(parser.parse_overrides(list(arguments)))
    listed = [model_job(m) + list(job) for m in models for job in (jobs or [[]])] if models else (jobs or [[]])
    return [job + extra for one in listed for job in _product(parser.parse_overrides(list(one))) for extra in extras]


class JobListSweeper(BasicSweeper):
    def __init__(
        self, jobs: list[list[str]] | None = None, max_batch_size: int | None = None, params: dict | None = None,
        models: list | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.jobs = [list(job) for job in (jobs or [])]
        self.models = list(models or [])

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            batch = expand_jobs(self.jobs, self._parse_config() + list(arguments), parser, self.models)
        except ConfigError as exc:  # one line, before any job runs
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.validate_batch_is_legal(batch)
        results = self.launcher.launch(batch, initial_job_idx=0)
        for r in results:
            _ = r.return_value
        return [results]

"""Package list: clipbench's modules plus the top-level conf/ and experiments/ folders, shipped as
clipbench.conf and clipbench.experiments."""

from setuptools import find_namespace_packages, setup

CONF_GROUPS = [f"clipbench.conf.{p}" for p in find_namespace_packages(where="conf")]

setup(
    packages=find_namespace_packages(include=["clipbench*", "hydra_plugins*"])
    + ["clipbench.conf", *CONF_GROUPS, "clipbench.experiments", "clipbench.experiments.reported"],
    package_dir={"clipbench.conf": "conf", "clipbench.experiments": "experiments"},
)

"""Package list: clipbench's modules plus the top-level experiments/ folder, shipped as clipbench/experiments."""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["clipbench*", "hydra_plugins*"]) + ["clipbench.experiments"],
    package_dir={"clipbench.experiments": "experiments"},
)

"""Import every module of a package so that its registry entries exist."""

import importlib
import pkgutil


def import_submodules(package_name: str, package_path, skip: tuple[str, ...] = ()) -> None:
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package_name}.{info.name}")

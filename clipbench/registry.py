"""A small name -> entry registry, used for tasks, datasets, methods and model sources.

An entry may name its code by module and attribute (``Registry.lazy``): the module is imported on first use,
so config checks and listings read the entries without importing torch. Modules of the registry's package
that no declared entry names, other than its ``helpers``, are imported the first time the registry is searched
(``package``), so a module that registers its own entry is still found."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None, helpers: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._package = package  # searched for undeclared entries once, on first need
        self._declared: set[str] = {f"{package}.{name}" for name in helpers}  # modules the search leaves alone

    def register(self, name: str, entry: T | None = None):
        """Register ``entry`` under ``name``; usable as a decorator when ``entry`` is omitted."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add(entry) if entry is not None else add

    def lazy(self, module: str, attr: str) -> Callable:
        """``module.attr``, imported on first call; the search for undeclared entries leaves ``module`` alone."""
        self._declared.add(module)
        return lazy(module, attr)

    def _search_package(self) -> None:
        if self._package is None:
            return
        import importlib

        from clipbench.discovery import import_submodules

        package, self._package = self._package, None
        skip = tuple(m.rpartition(".")[2] for m in self._declared if m.rpartition(".")[0] == package)
        import_submodules(package, importlib.import_module(package).__path__, skip=skip)

    def get(self, name: str) -> T:
        if name not in self._entries:
            self._search_package()
        if name not in self._entries:
            from clipbench.errors import ConfigError

            raise ConfigError(self.kind, f"unknown {self.kind} {name!r}; choose one of {sorted(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        if name not in self._entries:
            self._search_package()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        self._search_package()
        return sorted(self._entries)


def lazy(module: str, attr: str) -> Callable:
    """A registry entry resolved on first use, so optional heavy imports stay lazy."""
    import importlib

    def resolve() -> Callable:
        return getattr(importlib.import_module(module), attr)

    def load(*args, **kwargs):
        return resolve()(*args, **kwargs)

    load.resolve = resolve
    return load


def resolved(entry: Callable) -> Callable:
    """The function behind a registry entry, its module imported now (so that a timed call times only itself)."""
    resolve = getattr(entry, "resolve", None)
    return resolve() if resolve else entry

"""A name -> plug-in table filled by the modules of one package (datasets, retrieval)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from .errors import PramlocError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of the package ``package``, each registered by its own module under a
    name; every module of the package is imported on the first look-up, so adding a
    plug-in is adding a module. ``what`` names the kind in errors ("dataset")."""

    def __init__(self, package: str, what: str):
        self.package, self.what = package, what
        self.items: dict[str, T] = {}
        self._discovered = False

    def add(self, name: str, item: T) -> T:
        self.items[name] = item
        return item

    def _discover(self) -> None:
        if not self._discovered:
            self._discovered = True
            for mod in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
                importlib.import_module(f"{self.package}.{mod.name}")

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._discover()
        return sorted(self.items)

    def get(self, name: str) -> T:
        """The plug-in registered as ``name``, or a :class:`PramlocError` listing the known ones."""
        self._discover()
        if name not in self.items:
            raise PramlocError(f"unknown {self.what} {name!r} (known: {', '.join(sorted(self.items))})")
        return self.items[name]

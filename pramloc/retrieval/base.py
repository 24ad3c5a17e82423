"""The retrieval interface and the registry of its methods (see the package docstring).

Rows of an index are the map images, in the map's order (row ``i`` = map image ``i``);
the index stores no names (the map does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:
    from ..config import RetrievalConfig

METHODS: Registry[type["GlobalIndex"]] = Registry("pramloc.retrieval", "retrieval method")


class GlobalIndex(ABC):
    """One global vector per map image and nearest-neighbour search over them."""

    method: str = ""  # registry name, set by :func:`register`

    @classmethod
    @abstractmethod
    def fit(cls, descriptors: Sequence[np.ndarray], conf: "RetrievalConfig") -> "GlobalIndex":
        """Index of the map images from their local descriptors, one (N_i, D) array each."""

    @abstractmethod
    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        """The global vector (G,) of one image's local descriptors (N, D)."""

    @abstractmethod
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar map images to a global vector (G,): row indices (k,) int64
        and scores (k,) float32, best first."""

    @abstractmethod
    def subset(self, rows: Sequence[int]) -> "GlobalIndex":
        """The index of map images ``rows`` only (in that order), with the same vocabulary or
        model: the map images a structure-from-motion registered of those it was fitted on."""

    def extend(self, descriptors: Sequence[np.ndarray]) -> "GlobalIndex":
        """The index with rows for more map images appended (their local descriptors
        (N_i, D) each), with the same vocabulary or model: a map grown by ``update-map``."""
        from ..errors import PramlocError

        raise PramlocError(f"retrieval method {self.method!r} cannot add images to an index")

    @abstractmethod
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to store in the map file; :meth:`from_arrays` reads them back."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, arrays: dict) -> "GlobalIndex":
        """The index stored by :meth:`to_arrays`."""


def register(name: str):
    """Class decorator: make a :class:`GlobalIndex` subclass available as ``name``."""

    def deco(cls: type[GlobalIndex]) -> type[GlobalIndex]:
        cls.method = name
        return METHODS.add(name, cls)

    return deco


def get(method: str) -> type[GlobalIndex]:
    """The index class registered as ``method``."""
    return METHODS.get(method)


def fit(conf: "RetrievalConfig", descriptors: Sequence[np.ndarray]) -> GlobalIndex:
    """Index of the map images (local descriptors (N_i, D) each) with ``conf.method``."""
    return get(conf.method).fit(descriptors, conf)


def from_arrays(method: str, arrays: dict) -> GlobalIndex:
    """A stored index of ``method`` (the map manifest's)."""
    return get(method).from_arrays(arrays)

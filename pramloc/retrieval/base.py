"""The retrieval interface and the registry of its methods (see the package docstring).

Rows of an index are the map images, in the map's order (row ``i`` = map image ``i``);
the index stores no names (the map does).

What a method describes an image by differs: VLAD aggregates the image's sparse local
descriptors, the dense methods (AnyLoc, GeM) run a network over the image itself. Callers
hand every method the same :class:`RetrievalInput` (whatever they have of the image);
each method declares what it reads in :attr:`GlobalIndex.needs` and takes it from there,
so no caller special-cases a method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import PramlocError
from ..registry import Registry

if TYPE_CHECKING:
    from ..config import RetrievalConfig

METHODS: Registry[type["GlobalIndex"]] = Registry("pramloc.retrieval", "retrieval method")


@dataclass
class RetrievalInput:
    """One image as the retrieval methods may see it (any field may be missing; a method
    that needs a missing one raises :class:`PramlocError` naming it).

    - ``descriptors`` (N, D) float32: the image's local descriptors (the map's extractor);
    - ``keypoints`` (K, 2) float: pixel positions in the original image of keypoints with
      ``labels`` (K,) int: 0 background, l + 1 landmark l (a query: the recognizer's labels;
      a map image: its observations, labelled with their points' landmarks) and, for a map
      image, ``points`` (K,) int: the map point each observes (:func:`map_inputs`);
    - ``image``: the image file (read when a method needs it) or a grayscale (H, W) uint8 array;
    - ``name``: for messages.

    ``memo``: results computed from this image (dense feature maps), kept with it so that
    several methods fitted on the same inputs compute them once.
    """

    descriptors: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    image: Path | np.ndarray | None = None
    name: str = ""
    memo: dict[str, Any] = field(default_factory=dict, repr=False)
    labels: np.ndarray | None = None
    points: np.ndarray | None = None

    def require(self, what: str, method: str) -> Any:
        """Field ``what``, or an error naming the image, the method and the field."""
        value = getattr(self, what)
        if value is None:
            raise PramlocError(f"{self.name or 'image'}: retrieval method {method!r} needs the image's {what}")
        return value


def map_inputs(m, items: Sequence[RetrievalInput]) -> list[RetrievalInput]:
    """``items`` (one per map image of the :class:`~pramloc.mapio.LandmarkMap` ``m``, in its
    order) with the map's observations of each image: ``keypoints`` (K, 2), ``points`` (K,)
    and ``labels`` (K,) (landmark + 1)."""
    import dataclasses

    out = []
    for i, item in enumerate(items):
        lo, hi = int(m.image_offsets[i]), int(m.image_offsets[i + 1])
        points = np.asarray(m.image_points[lo:hi], np.int64)
        out.append(dataclasses.replace(item, keypoints=np.asarray(m.image_keypoints[lo:hi], np.float32),
                                       points=points, labels=np.asarray(m.point_landmark[points], np.int64) + 1,
                                       memo=item.memo))
    return out


def as_input(item: "RetrievalInput | np.ndarray") -> RetrievalInput:
    """A :class:`RetrievalInput`; a bare (N, D) array is an image's local descriptors."""
    return item if isinstance(item, RetrievalInput) else RetrievalInput(descriptors=np.asarray(item))


class GlobalIndex(ABC):
    """One global vector per map image and nearest-neighbour search over them."""

    method: str = ""  # registry name, set by :func:`register`
    needs: tuple[str, ...] = ("descriptors",)  # the RetrievalInput fields the method reads

    @classmethod
    @abstractmethod
    def fit(cls, items: Sequence[RetrievalInput], conf: "RetrievalConfig") -> "GlobalIndex":
        """Index of the map images, one :class:`RetrievalInput` each (in map order)."""

    @abstractmethod
    def describe(self, item: "RetrievalInput | np.ndarray") -> np.ndarray:
        """The global vector (G,) of one image (a bare array: its local descriptors (N, D))."""

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


def fit(conf: "RetrievalConfig", items: Sequence["RetrievalInput | np.ndarray"]) -> GlobalIndex:
    """Index of the map images with ``conf.method``: one :class:`RetrievalInput` per image
    (or its local descriptors (N_i, D))."""
    return get(conf.method).fit([as_input(i) for i in items], conf)


def from_arrays(method: str, arrays: dict) -> GlobalIndex:
    """A stored index of ``method`` (the map manifest's)."""
    return get(method).from_arrays(arrays)

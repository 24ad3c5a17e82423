"""Global image descriptors for retrieval: one small interface (:mod:`.base`), one module
per method: VLAD of the local descriptors (:mod:`.vlad`), and over a dense backbone
(:mod:`.backbones`: XFeat, DISK, a DINOv2 checkpoint; :mod:`.dense`) AnyLoc (:mod:`.anyloc`),
GeM (:mod:`.gem`), SuperVLAD (:mod:`.supervlad`) and landmark VLAD (:mod:`.landmark_vlad`).

A method is a :class:`GlobalIndex` subclass in a module of this package, registered with
:func:`register`; the map manifest names it (``manifest["retrieval"]["method"]``). Build,
map I/O and localization only call :func:`fit`, :func:`from_arrays` and the index's
``describe`` / ``search`` / ``to_arrays``, with a :class:`RetrievalInput` per image (its
local descriptors, keypoints and their landmark labels, observed map points, image file:
each method reads what it ``needs``). Adding a method = one new module here (found
automatically) + its test.
"""

from .base import METHODS, GlobalIndex, RetrievalInput, as_input, fit, from_arrays, get, map_inputs, register
from .vlad import VladIndex, build_vocabulary, vlad

__all__ = ["GlobalIndex", "RetrievalInput", "as_input", "map_inputs", "METHODS", "register", "get", "fit",
           "from_arrays", "VladIndex", "build_vocabulary", "vlad"]

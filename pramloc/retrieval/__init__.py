"""Global image descriptors for retrieval: one small interface (:mod:`.base`), one module
per method (VLAD: :mod:`.vlad`).

A method is a :class:`GlobalIndex` subclass in a module of this package, registered with
:func:`register`; the map manifest names it (``manifest["retrieval"]["method"]``). Build,
map I/O and localization only call :func:`fit`, :func:`from_arrays` and the index's
``describe`` / ``search`` / ``to_arrays``. Adding a method = one new module here (found
automatically) + its test.
"""

from .base import METHODS, GlobalIndex, fit, from_arrays, get, register
from .vlad import VladIndex, build_vocabulary, vlad

__all__ = ["GlobalIndex", "METHODS", "register", "get", "fit", "from_arrays", "VladIndex",
           "build_vocabulary", "vlad"]

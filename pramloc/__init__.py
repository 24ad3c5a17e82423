"""pramloc: hierarchical visual localization with landmark recognition.

Importing it changes nothing outside the package (see :mod:`pramloc.runtime` for the
settings its own programs make)."""

import logging

from .errors import PramlocError

__version__ = "0.1.0"
MAP_FORMAT_VERSION = 2

logger = logging.getLogger("pramloc")
logger.addHandler(logging.NullHandler())  # the application decides where records go

__all__ = ["PramlocError", "logger", "__version__", "MAP_FORMAT_VERSION"]

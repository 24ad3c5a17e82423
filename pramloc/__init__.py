"""pramloc: hierarchical visual localization with landmark recognition."""

import logging
import os

# pycolmap logs through glog at import time; keep it quiet unless asked (GLOG_minloglevel=0).
os.environ.setdefault("GLOG_minloglevel", "2")

from .errors import PramlocError

__version__ = "0.1.0"
MAP_FORMAT_VERSION = 2

logger = logging.getLogger("pramloc")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("[%(asctime)s pramloc %(levelname)s] %(message)s", "%H:%M:%S"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

__all__ = ["PramlocError", "logger", "__version__", "MAP_FORMAT_VERSION"]

"""pramloc: hierarchical visual localization with landmark recognition."""

import logging
import os

# pycolmap logs through glog at import time; keep it quiet unless asked (GLOG_minloglevel=0).
os.environ.setdefault("GLOG_minloglevel", "2")
# OpenMP threads (torch's CPU kernels) sleep instead of spinning while they wait: with the
# default (spinning), a process whose cores are shared with other busy processes spends its
# time at thread barriers (measured on the 2-core machine next to a busy process: the
# recognizer's median went from 17 ms to 636 ms). Read when torch is first imported, so
# it holds for `pramloc` commands and for programs that import pramloc before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

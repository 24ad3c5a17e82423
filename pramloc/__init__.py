"""pramloc: hierarchical visual localization with landmark recognition."""

import ctypes
import logging
import os
import sys

# pycolmap logs through glog at import time; keep it quiet unless asked (GLOG_minloglevel=0).
os.environ.setdefault("GLOG_minloglevel", "2")
# OpenMP threads (torch's CPU kernels) sleep instead of spinning while they wait: with the
# default (spinning), a process whose cores are shared with other busy processes spends its
# time at thread barriers (measured on the 2-core machine next to a busy process: the
# recognizer's median went from 17 ms to 636 ms). Read when torch is first imported, so
# it holds for `pramloc` commands and for programs that import pramloc before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _tune_malloc() -> None:
    """Tune glibc's malloc: blocks up to 32 MB come from the heap (not fresh mmaps), and up
    to 64 MB of freed memory stays at the heap's top (not handed back to the system at
    every free). With glibc's defaults every SIFT extraction re-faulted its image pyramid
    (17,500 page faults per 640x480 image, against none): 44 instead of 26 ms per
    extraction, 92 instead of 74 ms per query on the 7-Scenes block split, for 5-20 MB
    more peak memory. Left alone where the environment sets these thresholds
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, or the
    same in ``GLIBC_TUNABLES``) and where the C library is not glibc."""
    names = ("MMAP_THRESHOLD", "TRIM_THRESHOLD", "TOP_PAD")
    tunables = os.environ.get("GLIBC_TUNABLES", "").lower()
    if (not sys.platform.startswith("linux") or any(f"MALLOC_{n}_" in os.environ for n in names)
            or any(f"glibc.malloc.{n.lower()}" in tunables for n in names)):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


_tune_malloc()

from .errors import PramlocError  # noqa: E402

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

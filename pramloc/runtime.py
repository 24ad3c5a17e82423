"""Process-wide settings for pramloc's own programs (the CLI, ``pramloc serve``, their
worker processes, the benchmarks).

Importing :mod:`pramloc` changes nothing outside it: no environment variables, no malloc
tuning, and only a :class:`logging.NullHandler` on the ``pramloc`` logger (an application
configures logging as it likes; pramloc's records propagate to it). The entry points call
:func:`configure`; a program that embeds pramloc may call it too, before it imports torch,
to run as fast as the ``pramloc`` command::

    import pramloc.runtime
    pramloc.runtime.configure()          # or configure(log=False) to keep its own logging
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

_DONE: set[str] = set()


def configure(log: bool = True) -> None:
    """Set this process up as the ``pramloc`` command runs (idempotent).

    - ``GLOG_minloglevel=2``: pycolmap's glog stays quiet (unless set already);
    - ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads (torch's CPU kernels) sleep instead of
      spinning while they wait (unless set already). With spinning, a process whose cores are
      shared with other busy processes spends its time at thread barriers (measured on the
      2-core machine next to a busy process: the recognizer's median went from 17 ms to 636
      ms). Read when torch is first imported: call this before;
    - glibc's malloc tuned (:func:`tune_malloc`);
    - ``log``: the ``pramloc`` logger prints INFO records to stderr as
      ``[HH:MM:SS pramloc LEVEL] message`` and no longer propagates to the root logger.
    """
    if "env" not in _DONE:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        tune_malloc()
        _DONE.add("env")
    if log and "log" not in _DONE:
        logger = logging.getLogger("pramloc")
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s pramloc %(levelname)s] %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        _DONE.add("log")


def tune_malloc() -> None:
    """Tune glibc's malloc for this process: blocks up to 32 MB come from the heap (not fresh
    mmaps), and up to 128 MB of freed memory stays at the heap's top (not handed back to the
    system at every free). With glibc's defaults every SIFT extraction re-faulted its image
    pyramid (17,500 page faults per 640x480 image, against none): 44 instead of 26 ms per
    extraction, 92 instead of 74 ms per query on the 7-Scenes block split, for 5-20 MB more
    peak memory. 128 MB, not 64: a process whose OpenCV runs on one thread (a worker of
    ``--workers``, ``serve``) frees the whole ~70 MB pyramid of the main heap at once, and at
    64 MB it was still trimmed and re-faulted at every image (17,000 faults per image). Left alone where the environment sets these thresholds
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, or the same
    in ``GLIBC_TUNABLES``) and where the C library is not glibc."""
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
    mallopt(m_trim_threshold, 128 << 20)

"""Wall time per stage (build and localization) and the process's peak memory."""

from __future__ import annotations

import resource
import time


class timed:
    """Context manager adding the wall time of its block (seconds) to ``times[name]``."""

    scale = 1.0

    def __init__(self, times: dict[str, float], name: str):
        self.times, self.name = times, name

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.times[self.name] = self.times.get(self.name, 0.0) + (time.perf_counter() - self.t) * self.scale


class timed_ms(timed):
    """:class:`timed` in milliseconds (a localized image's stages)."""

    scale = 1000.0


def peak_memory_mb() -> float:
    """Peak resident memory of this process (``ru_maxrss``), MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

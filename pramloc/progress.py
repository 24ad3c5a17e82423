"""Progress: a tqdm bar on a terminal, plain periodic log lines otherwise (a log file gets
no carriage returns), nothing with ``pramloc -q``."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

DISABLE = False


class LogProgress:
    """The part of tqdm's interface pramloc uses (iterate, ``update``, ``set_postfix``,
    ``close``, ``total``), reported as one log line at most every ``every`` seconds and at
    the end."""

    def __init__(self, iterable=None, desc: str = "", total: float | None = None, every: float = 10.0):
        self.iterable, self.desc, self.every = iterable, desc, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.t0 = 0, "", time.perf_counter()
        self._last = self.t0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._log()

    def set_postfix(self, values: dict | None = None, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(values or {}), **kwargs}.items())

    def _log(self) -> None:
        from . import logger

        done = f"{self.n:.0f}/{self.total:.0f}" if self.total else f"{self.n:.0f}"
        logger.info("%s: %s (%.0f s)%s", self.desc, done, time.perf_counter() - self.t0,
                    f" {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        if self.n:
            self._log()
            self.n = 0


def track(iterable=None, desc: str = "", total: float | None = None, **kwargs):
    """A progress bar over ``iterable`` (or one updated by hand, of ``total`` units)."""
    if not DISABLE and not sys.stderr.isatty():
        return LogProgress(iterable, desc, total)
    return tqdm(iterable, desc=desc, total=total, disable=DISABLE, leave=False, dynamic_ncols=True, **kwargs)

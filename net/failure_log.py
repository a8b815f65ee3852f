"""Tracebacks of unexpected failures, logged at most once an interval. A client that can make a
request fail can make it fail a thousand times a second: the first failure is logged whole, the
others in the next interval are only counted, and the next traceback logged says how many there
were. Neither call blocks or raises."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class FailureLog:
    def __init__(self, logger: logging.Logger, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        self._logged_at_s = float("-inf")
        self._held_back = 0

    def exception(self, what: str) -> None:
        """Log the exception being handled, with its traceback, unless one was logged less than
        an interval ago."""
        now_s = self._clock()
        since_s = now_s - self._logged_at_s
        if since_s < self._interval_s:
            self._held_back += 1
            return
        if self._held_back:
            what += f" (and {self._held_back} more failures in the last {since_s:.1f} s)"
        self._logged_at_s, self._held_back = now_s, 0
        self._log.exception(what)

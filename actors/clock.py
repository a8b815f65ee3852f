"""The one clock seam.

Deadlines (visibility, delay, long polls, retention) use trio's clock, which is monotonic and which
pytest-trio's autojump_clock drives in tests. Wall-clock milliseconds, for what is stored or shown
(SentTimestamp, stored visibility deadlines), are derived from the same clock plus an anchor. When a
real wall-clock source is given and it steps (an edge device that boots in 1970 and then syncs NTP),
only the anchor moves: deadlines already running are untouched, so a step never expires, hides or
reveals a message by itself.

A test seam stands in for faketime (not installed everywhere): with $DOVECOTE_TEST_WALL_OFFSET_FILE
naming a file, `dovecote serve`'s wall clock is the system's plus the milliseconds that file holds,
read at every look, so a test can step a running broker's clock or start one in 1970. Unset, the
system's clock is used as it is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import trio

log = logging.getLogger("dovecote.clock")

WALL_STEP_TOLERANCE_MS = 1000


WALL_OFFSET_FILE_VARIABLE = "DOVECOTE_TEST_WALL_OFFSET_FILE"


def system_wall_ms() -> int:
    return time.time_ns() // 1_000_000


def wall_source_from_environment() -> Callable[[], int]:
    """The system's wall clock, or (the test seam above) that clock moved by the offset file."""
    path = os.environ.get(WALL_OFFSET_FILE_VARIABLE)
    if not path:
        return system_wall_ms
    return lambda: system_wall_ms() + int(open(path, encoding="ascii").read())


class Clock:
    def __init__(self, wall_source: Callable[[], int] | None = system_wall_ms, start_wall_ms: int | None = None):
        """wall_source=None keeps wall time a pure function of trio's clock (for tests)."""
        self._wall_source = wall_source
        self._anchor_monotonic = trio.current_time()
        if start_wall_ms is None:
            start_wall_ms = wall_source() if wall_source is not None else 1_700_000_000_000
        self._anchor_wall_ms = start_wall_ms
        self._stepped_ms = 0

    def now(self) -> float:
        """Seconds on the monotonic deadline clock."""
        return trio.current_time()

    def wall_ms(self) -> int:
        now = trio.current_time()
        estimate = self._anchor_wall_ms + int((now - self._anchor_monotonic) * 1000)
        if self._wall_source is None:
            return estimate
        real = self._wall_source()
        if abs(real - estimate) > WALL_STEP_TOLERANCE_MS:
            log.warning("wall clock stepped by %+d ms; running deadlines are unaffected", real - estimate)
            self._anchor_monotonic, self._anchor_wall_ms = now, real
            self._stepped_ms += real - estimate
            return real
        return estimate

    def steps_ms(self) -> int:
        """How far the wall clock has been stepped since the start, in all (as wall_ms found it)."""
        return self._stepped_ms

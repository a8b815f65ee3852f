"""The one clock seam.

Deadlines (visibility, delay, long polls, retention) use trio's clock, which is monotonic and which
pytest-trio's autojump_clock drives in tests. Wall-clock milliseconds, for what is stored or shown
(SentTimestamp, stored visibility deadlines), are derived from the same clock plus an anchor. When a
real wall-clock source is given and it steps (an edge device that boots in 1970 and then syncs NTP),
only the anchor moves: deadlines already running are untouched, so a step never expires, hides or
reveals a message by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

log = logging.getLogger("dovecote.clock")

WALL_STEP_TOLERANCE_MS = 1000


def system_wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Clock:
    def __init__(self, wall_source: Callable[[], int] | None = system_wall_ms, start_wall_ms: int | None = None):
        """wall_source=None keeps wall time a pure function of trio's clock (for tests)."""
        self._wall_source = wall_source
        self._anchor_monotonic = trio.current_time()
        if start_wall_ms is None:
            start_wall_ms = wall_source() if wall_source is not None else 1_700_000_000_000
        self._anchor_wall_ms = start_wall_ms

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
            return real
        return estimate

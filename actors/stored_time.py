"""Wall-clock times read back from the store after a restart. Pure.

While the broker runs, deadlines are on the monotonic clock and a wall-clock step moves nothing.
Across a restart only stored wall times remain, so how long ago something happened has to be
worked out from them: from when it was stored to the broker's last write (both read off the same
clock, unless it was set in between), plus the time the broker was stopped (the last write to now).
A device without a real-time clock boots in 1970 and is set later by NTP: a time before
TRUSTED_SINCE_MS was read off a clock that had not been set yet, and a span that begins or ends on
such a time is not counted, so a clock that was set while the broker was stopped, or between a
message's send and the broker's last write, never ages a message by itself (promise 11). What
cannot be known is counted as no time at all: a message may live longer than its retention
period after such a restart, never shorter.
"""

from __future__ import annotations

from collections.abc import Callable

from dovecote.storage.records import TRUSTED_SINCE_MS


def elapsed_since(last_written_ms: int, wall_ms: int) -> Callable[[int], int]:
    """How many milliseconds ago a stored wall time was, as far as the store can tell:
    `last_written_ms` is the wall time of the broker's last write before this start, `wall_ms` the
    wall time now. Made once per restart and called per stored time (it is in recovery's loop)."""
    trusted_last = last_written_ms >= TRUSTED_SINCE_MS
    stopped = max(0, wall_ms - last_written_ms) if trusted_last and wall_ms >= TRUSTED_SINCE_MS else 0

    def elapsed(stored_ms: int) -> int:
        if (stored_ms >= TRUSTED_SINCE_MS) is not trusted_last:
            return stopped  # the clock was set between the two: that span is unknown
        running = last_written_ms - stored_ms
        return running + stopped if running > 0 else stopped

    return elapsed

"""Crash points: a test seam, not a feature.

`DOVECOTE_CRASH_AT=point[:nth]` in a broker's environment, read once when this module loads, makes
the process SIGKILL itself the nth time (default: the first) it reaches the named point, so the
fault tests (tests/faults/test_crash_points.py) can kill it at an exact commit boundary. Unset, a
point costs one comparison. The count is the seam's only state, and only the armed point changes
it: the commit points in the writer's task, the others in actors' tasks, all on the one Trio thread.

Points: "before-write" (a batch about to be committed), "before-reply" (committed and fsynced, no
caller woken yet), "fan-out" (a publish committed, handed to some of its queues' actors only),
"moved" (a dead-letter move or move task committed by the target queue, the source not yet told),
"push-sent" (an endpoint answered a push, its outcome not yet stored), "replayed" (a replay batch
committed, the next not started). "After the write, before the fsync" is inside LMDB's commit: the
tests reach it by injecting SIGKILL into its fdatasync with strace.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT_VARIABLE = "DOVECOTE_CRASH_AT"

_armed_point, _, _nth = os.environ.get(ENVIRONMENT_VARIABLE, "").partition(":")
_left = [int(_nth or 1)]


def reached(point: str) -> None:
    """Die here, at once and without cleaning up, if this is the armed point's nth arrival."""
    if point != _armed_point:
        return
    _left[0] -= 1
    if _left[0] == 0:
        os.kill(os.getpid(), signal.SIGKILL)

"""The audit trail of the broker's doors: requests refused because they proved no key
(authentication failures) and requests refused for what they asked (access denied), counted for
/metrics and logged, rate-limited.

Every door reports to the one Audit the wiring makes, with two calls:

    audit.authentication_failed(door, reason, key_id, peer)
    audit.access_denied(door, action, key_id, peer)

- door: where the request came in: DOOR_AWS ("aws", the AWS API on the HTTP port),
  DOOR_ENDPOINTS ("endpoints", the broker's own HTTP endpoints), DOOR_NATIVE ("native", the
  native protocol).
- reason: why no key was proven, as AWS's error code for it, on every door alike:
  MissingAuthenticationToken (no credentials), IncompleteSignature (credentials that do not parse),
  InvalidClientTokenId (an unknown key), SignatureDoesNotMatch (a wrong secret or signature),
  RequestExpired (a signature too old or too new).
- action: what was refused: the AWS action, or the native operation's name.
- key_id: the key the request named ("" for none). Not trusted: the line shows it escaped and cut
  to 64 characters.
- peer: the client's address, "HOST:PORT" ("" if unknown).

Neither call blocks or raises, and each costs a dict update (and a log line at most once a second
per kind of event).

Memory stays bounded whatever arrives: counters and the rate limiter's state are kept per (door,
reason) and per (door, action), at most `max_series` of each, beyond which events count as reason
(action) "(other)"; nothing is kept per peer or per key id.

Log lines go to the logger "dovecote.audit" at WARNING. The first event of a kind (the same door
and reason, or door and action) is written at once, with its peer and key id; the events of that
kind in the next `interval_s` are only counted, and the next line written for the kind says how
many there were ("and 41 more like it in the last 1.0 s"). So a flood writes at most one line a
second per kind, the count of what a line stood for follows at the next line of that kind, and
/metrics has every event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

DOOR_AWS = "aws"
DOOR_ENDPOINTS = "endpoints"
DOOR_NATIVE = "native"
# The error codes that refuse a request for what it asked (the authorisation's answers, AWS's and SNS's
# words), which a door reports with access_denied.
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "AuthorizationError"})
OTHER = "(other)"  # the reason (action) of events beyond max_series kinds
MAX_SERIES = 64  # kinds of each family counted apart
LOG_INTERVAL_S = 1.0
MAX_KEY_ID_CHARS = 64

log = logging.getLogger("dovecote.audit")


class AuditStatistics(NamedTuple):
    authentication_failures: tuple[tuple[str, str, int], ...]  # (door, reason, count), in order of first sight
    access_denied: tuple[tuple[str, str, int], ...]  # (door, action, count)


class _Kind:
    """One kind of event: how many there were, and what the rate limiter has held back."""

    __slots__ = ("count", "logged_at_s", "held_back")

    def __init__(self) -> None:
        self.count = 0
        self.logged_at_s = float("-inf")
        self.held_back = 0


class Audit:
    def __init__(
        self,
        *,
        interval_s: float = LOG_INTERVAL_S,
        max_series: int = MAX_SERIES,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self._interval_s = interval_s
        self._max_series = max_series
        self._clock = clock
        self._log = logger
        self._failures: dict[tuple[str, str], _Kind] = {}
        self._denied: dict[tuple[str, str], _Kind] = {}

    def authentication_failed(self, door: str, reason: str, key_id: str, peer: str) -> None:
        """A request at `door` proved no configured key (`reason`: AWS's error code for why)."""
        self._record(self._failures, "authentication failed", "reason", door, reason, key_id, peer)

    def access_denied(self, door: str, action: str, key_id: str, peer: str) -> None:
        """A request at `door`, by `key_id`, was refused `action`."""
        self._record(self._denied, "access denied", "action", door, action, key_id, peer)

    def statistics(self) -> AuditStatistics:
        """The counts since the broker started (a snapshot)."""
        return AuditStatistics(
            tuple((door, label, kind.count) for (door, label), kind in self._failures.items()),
            tuple((door, label, kind.count) for (door, label), kind in self._denied.items()),
        )

    def _record(
        self, kinds: dict[tuple[str, str], _Kind], what: str, label_name: str, door: str, label: str, key_id: str, peer: str
    ) -> None:
        kind = kinds.get((door, label))
        if kind is None:
            if len(kinds) >= self._max_series:
                label = OTHER
                kind = kinds.get((door, label))
            if kind is None:
                kind = kinds[(door, label)] = _Kind()
        kind.count += 1
        now_s = self._clock()
        since_s = now_s - kind.logged_at_s
        if since_s < self._interval_s:
            kind.held_back += 1
            return
        shown_key = repr(key_id[:MAX_KEY_ID_CHARS]) if key_id else "none"
        line = f"{what} at the {door} door from {peer or 'an unknown peer'}: {label}, key id {shown_key}"
        if kind.held_back:
            line += f" (and {kind.held_back} more like it in the last {since_s:.1f} s)"
        kind.logged_at_s, kind.held_back = now_s, 0
        self._log.warning(line, extra={"door": door, label_name: label, "key_id": key_id[:MAX_KEY_ID_CHARS], "peer": peer})

"""Every network limit in one place, with units in the names, and the sizing of the connection
limits from the process's file-descriptor limit (pure: no I/O)."""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from dovecote.actors.limits import SQS_MAX_MESSAGE_BYTES

# A batch may carry 1 MiB of messages; attributes, ids and framing add a little.
DEFAULT_MAX_REQUEST_FRAME_BYTES = 2 * 1024 * 1024
# The HTTP body of the largest request a client may send: a batch whose messages, with their
# attributes, come to SQS_MAX_MESSAGE_BYTES (the limit AWS states, on the messages, not on the
# request), each byte at its worst encoding. JSON writes a 2-byte UTF-8 character as 6 (`\u00e9`),
# a 4-byte one as 12 (a surrogate pair) and `"` as 2; a form writes every byte that is not plain
# as 3 (`%C3`). Member names, ids and the envelope add a little.
MESSAGE_ENCODING_WORST_RATIO = 3
REQUEST_ENVELOPE_BYTES = 64 * 1024
DEFAULT_HTTP_MAX_BODY_BYTES = MESSAGE_ENCODING_WORST_RATIO * SQS_MAX_MESSAGE_BYTES + REQUEST_ENVELOPE_BYTES
# A receive may return ten messages of 1 MiB each.
DEFAULT_MAX_RESPONSE_FRAME_BYTES = 16 * 1024 * 1024
# Connections both listeners hold at most when the file-descriptor limit would allow more: each
# costs memory, and an edge device has little.
AUTO_MAX_CONNECTIONS = 4096


class NetLimits(msgspec.Struct, frozen=True):
    max_connections: int | None = None  # both listeners together; None: sized from RLIMIT_NOFILE at start
    max_connections_per_peer: int | None = None  # from one address; None: a quarter of max_connections
    reserved_descriptors: int = 64  # kept from connections for the store, logs, TLS files and accepting
    max_request_frame_bytes: int = DEFAULT_MAX_REQUEST_FRAME_BYTES
    max_inflight_per_connection: int = 256
    handshake_timeout_s: float = 10.0
    frame_timeout_s: float = 30.0  # a native frame that has begun must be whole within this
    idle_timeout_s: float = 600.0  # a connection with nothing in flight and nothing sent
    write_timeout_s: float = 30.0  # one answer's bytes must be taken by the peer within this
    shutdown_grace_s: float = 10.0
    accept_retry_pause_s: float = 0.1  # after a failed accept (out of descriptors, memory), doubling
    accept_retry_max_pause_s: float = 2.0
    accept_log_interval_s: float = 10.0  # failed accepts and refused connections: one log line per interval
    http_max_header_bytes: int = 16 * 1024
    http_max_body_bytes: int = DEFAULT_HTTP_MAX_BODY_BYTES
    http_read_timeout_s: float = 30.0  # a whole request, head and body, from its first byte
    http_keepalive_timeout_s: float = 75.0  # between requests on one connection
    failure_log_interval_s: float = 1.0  # an unexpected failure's traceback is logged at most this often

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be more than 0, not {value}", name)


class ConnectionBudget(NamedTuple):
    max_connections: int
    max_connections_per_peer: int
    descriptors: int  # RLIMIT_NOFILE's soft limit
    kept_back: int  # descriptors not given to connections
    capped: bool  # a configured limit was above what the descriptors allow, and lowered


def connection_budget(limits: NetLimits, descriptors: int, push_max_in_flight: int) -> ConnectionBudget:
    """The connection limits for a process that may open `descriptors` files: below it by the
    reserve and by the pushes in flight (at most a quarter of the descriptors), so accepting a
    connection never runs the process out of descriptors. Raises ValueError when nothing is left."""
    kept_back = limits.reserved_descriptors + min(push_max_in_flight, descriptors // 4)
    allowed = descriptors - kept_back
    if allowed < 2:
        raise ValueError(
            f"the file-descriptor limit (RLIMIT_NOFILE {descriptors}) leaves no room for connections: "
            f"{kept_back} are kept for the store and pushes; raise it (ulimit -n, LimitNOFILE=)"
        )
    total = limits.max_connections or min(allowed, AUTO_MAX_CONNECTIONS)
    capped = total > allowed
    total = min(total, allowed)
    per_peer = min(limits.max_connections_per_peer or max(1, total // 4), total)
    return ConnectionBudget(total, per_peer, descriptors, kept_back, capped)


class ConnectionCounts:
    """The connections both listeners hold, in all and per peer address. Called only from the event
    loop, synchronously (between checkpoints, as trio's own limiters are): the accept loops admit,
    and each connection's task releases its own when it ends."""

    def __init__(self, max_connections: int, max_per_peer: int) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.open = 0
        self._by_peer: dict[str, int] = {}

    def admit(self, peer: str) -> str | None:
        """Count a new connection from the address `peer`; None, or why it is refused."""
        if self.open >= self.max_connections:
            return f"the broker holds {self.open} connections, its limit"
        held = self._by_peer.get(peer, 0)
        if held >= self.max_per_peer:
            return f"{peer} holds {held} connections, the limit per address"
        self._by_peer[peer] = held + 1
        self.open += 1
        return None

    def release(self, peer: str) -> None:
        held = self._by_peer[peer] - 1
        if held:
            self._by_peer[peer] = held
        else:
            del self._by_peer[peer]  # the map holds connected addresses only
        self.open -= 1

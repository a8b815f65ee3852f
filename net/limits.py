"""Every network limit in one place, with units in the names."""

from __future__ import annotations

import msgspec

# A batch may carry 1 MiB of messages; attributes, ids and framing add a little.
DEFAULT_MAX_REQUEST_FRAME_BYTES = 2 * 1024 * 1024
# A receive may return ten messages of 1 MiB each.
DEFAULT_MAX_RESPONSE_FRAME_BYTES = 16 * 1024 * 1024


class NetLimits(msgspec.Struct, frozen=True):
    max_connections: int = 1024
    max_request_frame_bytes: int = DEFAULT_MAX_REQUEST_FRAME_BYTES
    max_inflight_per_connection: int = 256
    handshake_timeout_s: float = 10.0
    frame_timeout_s: float = 30.0  # a frame that has begun must be complete within this
    idle_timeout_s: float = 600.0  # a connection with nothing in flight and nothing sent
    shutdown_grace_s: float = 10.0
    accept_retry_pause_s: float = 0.1
    http_max_header_bytes: int = 16 * 1024
    http_max_body_bytes: int = 2 * 1024 * 1024
    http_read_timeout_s: float = 30.0
    http_keepalive_timeout_s: float = 75.0

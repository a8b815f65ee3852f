"""Every network limit in one place, with units in the names."""

from __future__ import annotations

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
    http_max_body_bytes: int = DEFAULT_HTTP_MAX_BODY_BYTES
    http_read_timeout_s: float = 30.0
    http_keepalive_timeout_s: float = 75.0
    failure_log_interval_s: float = 1.0  # an unexpected failure's traceback is logged at most this often

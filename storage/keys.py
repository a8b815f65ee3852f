"""Fixed-width big-endian keys, so LMDB's key order is numeric order and log appends can use
append mode."""

from __future__ import annotations

import struct

_U64 = struct.Struct(">Q")
_U64_PAIR = struct.Struct(">QQ")
_U64_TRIPLE = struct.Struct(">QQQ")
MAX_U64 = (1 << 64) - 1
LSN_KEY_BYTES = _U64.size


def lsn_key(lsn: int) -> bytes:
    return _U64.pack(lsn)


def lsn_of(key: bytes) -> int:
    return _U64.unpack(key)[0]


def queue_key(queue_id: int) -> bytes:
    return _U64.pack(queue_id)


def message_key(queue_id: int, seq: int) -> bytes:
    return _U64_PAIR.pack(queue_id, seq)


def message_key_parts(key: bytes) -> tuple[int, int]:
    return _U64_PAIR.unpack(key)


def queue_message_range(queue_id: int, through_seq: int = MAX_U64) -> tuple[bytes, bytes]:
    """The inclusive key range of one queue's messages with seq <= through_seq."""
    return message_key(queue_id, 0), message_key(queue_id, through_seq)


def push_key(topic_id: int, subscription_id: int, seq: int) -> bytes:
    return _U64_TRIPLE.pack(topic_id, subscription_id, seq)


def push_key_parts(key: bytes) -> tuple[int, int, int]:
    return _U64_TRIPLE.unpack(key)


def push_range(topic_id: int, subscription_id: int | None = None) -> tuple[bytes, bytes]:
    """The inclusive key range of a topic's pending pushes, or of one subscription's."""
    if subscription_id is None:
        return push_key(topic_id, 0, 0), push_key(topic_id, MAX_U64, MAX_U64)
    return push_key(topic_id, subscription_id, 0), push_key(topic_id, subscription_id, MAX_U64)


def function_key(region: str, name: str) -> bytes:
    """A Lambda function's key: its region ("" for the default) and name, which holds no NUL."""
    return f"{region}\x00{name}".encode()


def function_event_key(region: str, name: str, queued_ms: int, request_id: str) -> bytes:
    """A function's pending asynchronous invocation: the function's key, then when it was queued."""
    return f"{region}\x00{name}\x00".encode() + queued_ms.to_bytes(8, "big") + request_id.encode()


def function_event_range(region: str, name: str) -> tuple[bytes, bytes]:
    """The inclusive key range of one function's pending asynchronous invocations."""
    return f"{region}\x00{name}\x00".encode(), f"{region}\x00{name}\x01".encode()

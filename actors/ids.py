"""Message ids and receipt handles.

A receipt handle names the queue, the message and the receive that issued it (its receive count),
so it stops working once the message is received again or deleted, across restarts too.
"""

from __future__ import annotations

import base64
import os
import re
from typing import NamedTuple

from .errors import BrokerError

_MESSAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MASK_128 = (1 << 128) - 1
_ODD_STEP = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd, so counter * step is a bijection mod 2**128


class ReceiptHandle(NamedTuple):
    queue_id: int
    seq: int
    receive_count: int
    message_id: str


class MessageIds:
    """UUID-shaped message ids: a random 128-bit base per instance plus a scrambled counter, so they
    are unique without a system call per message. Owned by one actor."""

    def __init__(self) -> None:
        self._base = int.from_bytes(os.urandom(16), "big")
        self._count = 0

    def new(self) -> str:
        self._count += 1
        h = f"{(self._base + self._count * _ODD_STEP) & _MASK_128:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_id() -> str:
    """A UUID-shaped id of 128 random bits, for what must not be guessed from other ids: a
    subscription's (its ARN is all an UnsubscribeURL needs)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encode_receipt_handle(handle: ReceiptHandle) -> str:
    return f"{handle.queue_id:x}:{handle.seq:x}:{handle.receive_count:x}:{handle.message_id}"


def decode_receipt_handle(text: str) -> ReceiptHandle:
    """Raises BrokerError(ReceiptHandleIsInvalid) on anything this broker did not issue."""
    parts = text.split(":")
    if len(parts) == 4 and _MESSAGE_ID.fullmatch(parts[3]):
        try:
            return ReceiptHandle(int(parts[0], 16), int(parts[1], 16), int(parts[2], 16), parts[3])
        except ValueError:
            pass
    raise BrokerError(
        "ReceiptHandleIsInvalid", f'The input receipt handle "{text[:100]}" is not a valid receipt handle.'
    )


def encode_task_handle(source_arn: str, started_ms: int) -> str:
    """A message move task's handle: its source queue's ARN and start time, opaque to clients."""
    return base64.urlsafe_b64encode(f"{started_ms}|{source_arn}".encode()).decode()


def decode_task_handle(handle: str) -> tuple[str, int]:
    """(source ARN, started_ms); raises ResourceNotFoundException on a handle not issued here."""
    try:
        started, arn = base64.urlsafe_b64decode(handle.encode()).decode().split("|", 1)
        return arn, int(started)
    except (ValueError, UnicodeError):
        raise BrokerError("ResourceNotFoundException", "The task handle does not name a message move task.") from None

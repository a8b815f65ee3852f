"""Message ids and receipt handles.

A receipt handle names the queue, the message and the receive that issued it (its receive count),
so it stops working once the message is received again or deleted, across restarts too.
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from typing import NamedTuple

from .errors import BrokerError

_HANDLE = struct.Struct(">QQI16s")


class ReceiptHandle(NamedTuple):
    queue_id: int
    seq: int
    receive_count: int
    message_id: str


def new_message_id() -> str:
    return str(uuid.uuid4())


def encode_receipt_handle(handle: ReceiptHandle) -> str:
    raw = _HANDLE.pack(handle.queue_id, handle.seq, handle.receive_count, uuid.UUID(handle.message_id).bytes)
    return base64.urlsafe_b64encode(raw).decode()


def decode_receipt_handle(text: str) -> ReceiptHandle:
    """Raises BrokerError(ReceiptHandleIsInvalid) on anything this broker did not issue."""
    try:
        raw = base64.urlsafe_b64decode(text.encode())
        queue_id, seq, receive_count, message_uuid = _HANDLE.unpack(raw)
    except (binascii.Error, struct.error, ValueError, UnicodeEncodeError):
        raise BrokerError(
            "ReceiptHandleIsInvalid", f'The input receipt handle "{text[:100]}" is not a valid receipt handle.'
        ) from None
    return ReceiptHandle(queue_id, seq, receive_count, str(uuid.UUID(bytes=message_uuid)))

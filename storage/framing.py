"""Each stored value is a 4-byte CRC-32 of the payload followed by the payload.

LMDB does not checksum values, so a flipped byte on disk would otherwise read back as "fine".
"""

from __future__ import annotations

import struct
import zlib

_HEADER = struct.Struct(">I")
HEADER_BYTES = _HEADER.size


class DamagedValue(Exception):
    """A stored value whose checksum does not match, or that is too short to hold one."""


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(zlib.crc32(payload)) + payload


def unframe(value: bytes | memoryview) -> memoryview:
    """A view of the payload of a framed value (valid as long as `value` is); raises
    DamagedValue if the checksum fails."""
    if len(value) < HEADER_BYTES:
        raise DamagedValue(f"value of {len(value)} bytes is shorter than its header")
    (expected,) = _HEADER.unpack_from(value)
    payload = memoryview(value)[HEADER_BYTES:]
    if zlib.crc32(payload) != expected:
        raise DamagedValue("checksum mismatch")
    return payload

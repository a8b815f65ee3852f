"""The native protocol's codec: bytes in, structs out, and back. No I/O.

Theory of operation
-------------------
A connection opens with a handshake: the client sends MAGIC and its protocol version (big-endian
u16); the server answers MAGIC, the version it will speak and a status (0 ok, 1 unsupported). After
that both sides send frames: a big-endian u32 payload length, then a msgpack payload. Requests are
`[id, op]`, responses `[id, result]`; ids let a client pipeline many requests on one connection and
match the answers, which may come back in any order.

The length is checked against the limit as soon as the 4 header bytes are in, before any of the
body is buffered. The only exception that leaves this module is ProtocolError; a request whose
envelope is sound but whose operation does not decode is not a protocol error: it gets an error
answer for its id and the connection goes on.
"""

from __future__ import annotations

import struct

import msgspec

from dovecote.actors.ops import AnyOp, AnyResult, Op, Result

MAGIC = b"DVCT"
PROTOCOL_VERSION = 1
HELLO_BYTES = len(MAGIC) + 2
WELCOME_BYTES = len(MAGIC) + 3
STATUS_OK = 0
STATUS_UNSUPPORTED_VERSION = 1

_LENGTH = struct.Struct(">I")
_VERSION = struct.Struct(">H")
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


class ProtocolError(Exception):
    """The peer broke the protocol; the connection cannot continue."""


class RequestEnvelope(msgspec.Struct, array_like=True):
    id: int
    op: msgspec.Raw


class ResponseFrame(msgspec.Struct, array_like=True):
    id: int
    result: AnyResult


class RequestFrame(msgspec.Struct, array_like=True):
    id: int
    op: AnyOp


_envelope_decoder = msgspec.msgpack.Decoder(RequestEnvelope)
_op_decoder = msgspec.msgpack.Decoder(AnyOp)
_response_decoder = msgspec.msgpack.Decoder(ResponseFrame)
_encoder = msgspec.msgpack.Encoder()


def hello(version: int = PROTOCOL_VERSION) -> bytes:
    return MAGIC + _VERSION.pack(version)


def welcome(version: int, status: int) -> bytes:
    return MAGIC + _VERSION.pack(version) + bytes([status])


def parse_hello(data: bytes) -> int:
    """The client's protocol version. Raises ProtocolError if this is not a dovecote client."""
    if len(data) != HELLO_BYTES or data[: len(MAGIC)] != MAGIC:
        raise ProtocolError("not a dovecote client: bad handshake")
    return _VERSION.unpack_from(data, len(MAGIC))[0]


def parse_welcome(data: bytes) -> tuple[int, int]:
    if len(data) != WELCOME_BYTES or data[: len(MAGIC)] != MAGIC:
        raise ProtocolError("not a dovecote server: bad handshake")
    return _VERSION.unpack_from(data, len(MAGIC))[0], data[-1]


class FrameDecoder:
    """Splits a byte stream into frame payloads. Feed bytes in any split; read payloads out."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._offset = 0

    def feed(self, data: bytes) -> None:
        if self._offset and self._offset > len(self._buffer) // 2:
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def next_payload(self) -> bytes | None:
        """The next complete payload, or None until more bytes arrive. Raises ProtocolError."""
        available = len(self._buffer) - self._offset
        if available < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer, self._offset)
        if length > self._max_frame_bytes:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self._max_frame_bytes}")
        if available < _LENGTH.size + length:
            return None
        start = self._offset + _LENGTH.size
        payload = bytes(self._buffer[start : start + length])
        self._offset = start + length
        return payload

    def has_partial_frame(self) -> bool:
        return len(self._buffer) > self._offset


def decode_envelope(payload: bytes) -> RequestEnvelope:
    try:
        return _envelope_decoder.decode(payload)
    except _DECODE_ERRORS as error:
        raise ProtocolError(f"malformed request frame: {error}") from None


def decode_op(raw: msgspec.Raw) -> Op:
    """Raises ValueError with a readable reason when the operation does not decode."""
    try:
        return _op_decoder.decode(raw)
    except _DECODE_ERRORS as error:
        raise ValueError(f"malformed operation: {error}") from None


def encode_request(request_id: int, op: Op, out: bytearray) -> None:
    _append_frame(RequestFrame(request_id, op), out)  # type: ignore[arg-type]


def encode_response(request_id: int, result: Result, out: bytearray) -> None:
    _append_frame(ResponseFrame(request_id, result), out)  # type: ignore[arg-type]


def decode_response(payload: bytes) -> ResponseFrame:
    try:
        return _response_decoder.decode(payload)
    except _DECODE_ERRORS as error:
        raise ProtocolError(f"malformed response frame: {error}") from None


def _append_frame(message: msgspec.Struct, out: bytearray) -> None:
    start = len(out)
    out += b"\0\0\0\0"
    _encoder.encode_into(message, out, -1)
    _LENGTH.pack_into(out, start, len(out) - start - _LENGTH.size)

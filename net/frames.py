"""The native protocol's codec: bytes in, structs out, and back. No I/O.

Theory of operation
-------------------
A connection opens with a handshake: the client sends MAGIC and its protocol version (big-endian
u16); the server answers MAGIC, the version it will speak and a status (0 ok, 1 unsupported
version, 2 this port speaks TLS and the client did not). After that both sides send frames: a
big-endian u32 payload length, then a msgpack payload. Requests are `[id, op]`, responses
`[id, result]`; ids let a client pipeline many requests on one connection and match the answers,
which may come back in any order.

Version 2 proves a key before the first request. Right after its welcome the server sends a
Challenge frame carrying 32 random bytes, made for this connection alone; the client answers with
one Authenticate frame, the id of its key and HMAC-SHA256(secret, PROOF_LABEL + nonce + key id) -
or an empty id when it has no key - and the server answers Authenticated (the key id the
connection now acts as, "" for anyone) or the error frame `[0, Failure]` with the AWS error code
(MissingAuthenticationToken, InvalidClientTokenId, SignatureDoesNotMatch) and closes. Every request
on the connection is then that key's. The secret never crosses the wire, and a proof is good for
one nonce, so a recorded one is worthless on any other connection (replay). The proof does not
authenticate the broker to the client: TLS does that, and over TLS no one between them sees or
relays a proof. Version 1 has no Authenticate step; a broker serves it only while it has no keys.

The length is checked against the limit as soon as the 4 header bytes are in, before any of the
body is buffered. The only exception that leaves this module is ProtocolError; a request whose
envelope is sound but whose operation does not decode is not a protocol error: it gets an error
answer for its id and the connection goes on.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import msgspec

from dovecote.actors.ops import AnyOp, AnyResult, Failure, Op, Result

MAGIC = b"DVCT"
PROTOCOL_VERSION = 2
DEFAULT_PORT = 7480  # where a broker serves the native protocol unless told otherwise
SUPPORTED_VERSIONS = (1, 2)  # 1: no key handshake, served only by a broker without keys
HELLO_BYTES = len(MAGIC) + 2
WELCOME_BYTES = len(MAGIC) + 3
STATUS_OK = 0
STATUS_UNSUPPORTED_VERSION = 1
STATUS_TLS_REQUIRED = 2
NONCE_BYTES = 32
PROOF_LABEL = b"DVCT v2 key proof\x00"  # what a proof is for: no other HMAC under the secret can pass for one
MAX_HANDSHAKE_FRAME_BYTES = 4096

_LENGTH = struct.Struct(">I")
_VERSION = struct.Struct(">H")
# msgspec recurses once per level of nesting and raises RecursionError at Python's limit, wherever
# the stack stands: a payload nested that deep is as malformed as any other.
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


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


class HandshakeMessage(msgspec.Struct, array_like=True, frozen=True):
    """A message of version 2's opening, before the first request. Each names its tag explicitly."""


class Challenge(HandshakeMessage, tag="Challenge"):
    """Server to client, right after the welcome: the nonce to prove a key over."""

    nonce: bytes


class Authenticate(HandshakeMessage, tag="Authenticate"):
    """Client to server, once: a key's id and its proof, or nothing (key_id "") to act as the
    principal of the client's TLS certificate, or as anyone on a broker without keys."""

    key_id: str = ""
    proof: bytes = b""


class Authenticated(HandshakeMessage, tag="Authenticated"):
    """Server to client: the handshake is done; the connection acts as this key ("": anyone)."""

    key_id: str


_envelope_decoder = msgspec.msgpack.Decoder(RequestEnvelope)
_challenge_decoder = msgspec.msgpack.Decoder(Challenge)
_authenticate_decoder = msgspec.msgpack.Decoder(Authenticate)
_authenticated_decoder = msgspec.msgpack.Decoder(Authenticated)
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


def key_proof(secret: str, nonce: bytes, key_id: str) -> bytes:
    """The proof that the holder of `secret` answers this nonce as key `key_id` (32 bytes). The
    nonce has a fixed length and the id comes last, so no two (nonce, id) pairs share a message."""
    return hmac.digest(secret.encode(), PROOF_LABEL + nonce + key_id.encode(), hashlib.sha256)


def encode_handshake(message: HandshakeMessage, out: bytearray) -> None:
    _append_frame(message, out)


def encode_refusal(failure: Failure, out: bytearray) -> None:
    """The error frame that ends a connection: [0, failure]."""
    _append_frame(ResponseFrame(0, failure), out)  # type: ignore[arg-type]


def decode_challenge(payload: bytes) -> Challenge:
    try:
        challenge = _challenge_decoder.decode(payload)
    except _DECODE_ERRORS as error:
        raise ProtocolError(f"expected the broker's challenge: {error}") from None
    if len(challenge.nonce) != NONCE_BYTES:
        raise ProtocolError(f"a challenge's nonce is {NONCE_BYTES} bytes, not {len(challenge.nonce)}")
    return challenge


def decode_authenticate(payload: bytes) -> Authenticate:
    try:
        return _authenticate_decoder.decode(payload)
    except _DECODE_ERRORS as error:
        raise ProtocolError(f"expected Authenticate before any request: {error}") from None


def decode_handshake_answer(payload: bytes) -> Authenticated | Failure:
    """The server's answer to Authenticate: Authenticated, or the refusal's Failure."""
    try:
        return _authenticated_decoder.decode(payload)
    except _DECODE_ERRORS:
        pass
    frame = decode_response(payload)
    if frame.id != 0 or not isinstance(frame.result, Failure):
        raise ProtocolError("expected Authenticated or a refusal")
    return frame.result


class FrameDecoder:
    """Splits a byte stream into frame payloads. Feed bytes in any split; read payloads out."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes  # may be changed between frames (a handshake's are smaller)
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
        if length > self.max_frame_bytes:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}")
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

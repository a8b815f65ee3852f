"""The sans-I/O codec: any split of the input gives the same frames, and nothing but
ProtocolError ever leaves the decoder, whatever the bytes."""

import struct

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from dovecote.actors.ops import Received, ReceivedMessage, SendMessage
from dovecote.net import frames


def request_bytes(*ops):
    out = bytearray()
    for request_id, op in enumerate(ops, 1):
        frames.encode_request(request_id, op, out)
    return bytes(out)


def decode_all(data: bytes, splits, limit=1 << 20):
    decoder = frames.FrameDecoder(limit)
    payloads = []
    position = 0
    for cut in sorted(splits) + [len(data)]:
        decoder.feed(data[position:cut])
        position = max(position, cut)
        while (payload := decoder.next_payload()) is not None:
            payloads.append(payload)
    return payloads


@settings(max_examples=200)
@given(st.lists(st.text(min_size=1, max_size=50), min_size=1, max_size=5), st.data())
def test_frames_survive_any_split(bodies, data):
    encoded = request_bytes(*(SendMessage("q", body) for body in bodies))
    splits = data.draw(st.lists(st.integers(0, len(encoded)), max_size=20))
    payloads = decode_all(encoded, splits)
    ops = [frames.decode_op(frames.decode_envelope(p).op) for p in payloads]
    assert [op.body for op in ops] == bodies


def test_byte_by_byte():
    encoded = request_bytes(SendMessage("q", "a"), SendMessage("q", "b"))
    assert len(decode_all(encoded, list(range(len(encoded))))) == 2


def test_oversized_frames_are_refused_from_the_header_alone():
    decoder = frames.FrameDecoder(1000)
    decoder.feed(struct.pack(">I", 1001))
    with pytest.raises(frames.ProtocolError, match="exceeds"):
        decoder.next_payload()


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_errors(blob):
    decoder = frames.FrameDecoder(1 << 16)
    decoder.feed(blob)
    try:
        while (payload := decoder.next_payload()) is not None:
            envelope = frames.decode_envelope(payload)
            try:
                frames.decode_op(envelope.op)
            except ValueError:
                pass  # answered per request; the connection goes on
    except frames.ProtocolError:
        pass


@settings(max_examples=500)
@given(st.data())
def test_mutated_valid_frames_raise_only_protocol_errors(data):
    encoded = bytearray(request_bytes(SendMessage("queue", "héllo wörld", 5)))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    test_random_bytes_raise_only_protocol_errors.hypothesis.inner_test(bytes(encoded))


def test_invalid_utf8_in_an_operation_is_a_per_request_error():
    envelope = msgspec.msgpack.encode([7, ["SendMessage", "q", b"\xff\xfe".decode("latin-1")]])
    raw = bytearray(envelope)
    index = raw.index("ÿ".encode())
    raw[index : index + 2] = b"\xff\xfe"  # turn valid UTF-8 into invalid bytes inside a str
    parsed = frames.decode_envelope(bytes(raw))
    assert parsed.id == 7
    with pytest.raises(ValueError, match="malformed operation"):
        frames.decode_op(parsed.op)


def test_responses_round_trip():
    out = bytearray()
    result = Received([ReceivedMessage("id", "handle", "body", "md5")])
    frames.encode_response(9, result, out)
    decoder = frames.FrameDecoder(1 << 20)
    decoder.feed(bytes(out))
    frame = frames.decode_response(decoder.next_payload())
    assert frame.id == 9 and frame.result == result


def test_handshake():
    assert frames.parse_hello(frames.hello()) == frames.PROTOCOL_VERSION
    assert frames.parse_welcome(frames.welcome(1, 0)) == (1, 0)
    for bad in (b"GET / ", b"DVCT", b"XXXX\x00\x01"):
        with pytest.raises(frames.ProtocolError):
            frames.parse_hello(bad)


def opening_frames() -> list[bytes]:
    """Payloads of version 2's opening, each a valid one of its kind."""
    payloads = []
    for message in (frames.Challenge(bytes(32)), frames.Authenticate("key", bytes(32)), frames.Authenticated("key")):
        out = bytearray()
        frames.encode_handshake(message, out)
        payloads.append(bytes(out[4:]))
    return payloads


@settings(max_examples=500)
@given(st.data())
def test_the_opening_decoders_raise_only_protocol_errors(data):
    """Whatever a peer sends while the connection opens, only ProtocolError leaves the decoders
    (a random payload, or a valid one with bytes changed)."""
    if data.draw(st.booleans()):
        payload = data.draw(st.binary(max_size=200))
    else:
        payload = bytearray(data.draw(st.sampled_from(opening_frames())))
        for _ in range(data.draw(st.integers(1, 4))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        payload = bytes(payload)
    for decode in (frames.decode_challenge, frames.decode_authenticate, frames.decode_handshake_answer):
        try:
            decode(payload)
        except frames.ProtocolError:
            pass


def test_a_challenge_must_carry_a_nonce_of_32_bytes():
    out = bytearray()
    frames.encode_handshake(frames.Challenge(bytes(16)), out)
    with pytest.raises(frames.ProtocolError, match="32 bytes"):
        frames.decode_challenge(bytes(out[4:]))

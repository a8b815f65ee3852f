"""The HTTP/1.1 server's fast path: the plain request every AWS SDK sends, parsed and answered without
h11's state machine, which cost about a third of the broker's work per boto3 request. Pure.

Only the plainest request is taken: a GET or POST, `HTTP/1.1`, a Host header, a body framed by one
Content-Length within the limits (or none), and nothing that changes the connection's course
(Transfer-Encoding, Expect, Connection, Upgrade) — each line checked against the grammar h11 checks.
Anything else is declined and h11 reads it, from the first byte, and answers or refuses it as
before: the fast path never refuses, so every refusal still comes from one place.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_FIELD_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"  # h11's field-value
_REQUEST_LINE = re.compile(rb"(GET|POST) ([\x21-\x7e]+) HTTP/1\.1")
_HEADER_NAME = re.compile(_TOKEN)
# Inside a field value stripped of its outer spaces and tabs, h11's grammar allows any byte but these.
_NOT_IN_FIELD_VALUE = re.compile(rb"[\x00\n\r\x0b\x0c]")
_RESPONSE_NAME = re.compile(_TOKEN)
_RESPONSE_VALUE = re.compile(_FIELD_VALUE)
# Headers that change how the message is framed or the connection goes on: h11's to handle.
_DECLINED_HEADERS = frozenset({"transfer-encoding", "expect", "connection", "upgrade"})


class SimpleRequest(NamedTuple):
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lowercased, as h11 gives them
    body: bytes


NEED_MORE = "need more"  # the request so far is plain, but not all here yet
DECLINED = "declined"  # h11's to read


def parse_simple_request(
    buffer: bytes | bytearray, max_header_bytes: int, max_body_bytes: int
) -> tuple[SimpleRequest, int] | str:
    """The plain request at the start of buffer and how many bytes it took; NEED_MORE; or DECLINED."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return NEED_MORE if len(buffer) <= max_header_bytes else DECLINED
    if head_end > max_header_bytes:
        return DECLINED
    lines = bytes(buffer[:head_end]).split(b"\r\n")
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return DECLINED
    headers = []
    length = None
    host = False
    for line in lines[1:]:
        raw_name, colon, raw_value = line.partition(b":")
        raw_value = raw_value.strip(b" \t")
        if not colon or _HEADER_NAME.fullmatch(raw_name) is None or _NOT_IN_FIELD_VALUE.search(raw_value) is not None:
            return DECLINED
        name = raw_name.decode("ascii").lower()
        if name in _DECLINED_HEADERS:
            return DECLINED
        value = raw_value.decode("latin-1")
        if name == "content-length":
            if length is not None or not value.isdigit() or not value.isascii():
                return DECLINED
            length = int(value)
            if length > max_body_bytes:
                return DECLINED
        elif name == "host":
            if host:
                return DECLINED
            host = True
        headers.append((name, value))
    if not host:
        return DECLINED
    body_start = head_end + 4
    end = body_start + (length or 0)
    if len(buffer) < end:
        return NEED_MORE
    method, target = request_line[1].decode("ascii"), request_line[2].decode("ascii")
    return SimpleRequest(method, target, headers, bytes(buffer[body_start:end])), end


def response_bytes(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes | None:
    """A whole response as h11 writes it (no reason phrase, headers as given, the body's length
    added); None when a header is not one h11 would send (it would refuse it too)."""
    parts = [b"HTTP/1.1 %d \r\n" % status]
    for name, value in headers:
        try:
            name_bytes, value_bytes = name.encode("ascii"), value.encode("ascii")
        except UnicodeEncodeError:
            return None
        if _RESPONSE_NAME.fullmatch(name_bytes) is None or _RESPONSE_VALUE.fullmatch(value_bytes) is None:
            return None
        parts.append(b"%s: %s\r\n" % (name_bytes, value_bytes))
    parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
    parts.append(body)
    return b"".join(parts)

"""Every decoder, given arbitrary input, decodes it or raises its documented error, nothing else:
HTTP requests (h11 and the server's limits), SQS JSON and Query and SNS Query requests through the
real dispatch (the gateway, against a broker whose sessions only record what they are handed),
native frames and operations, filter policies (compiled and matched), stored records and their
framing. Inputs mix raw bytes with structured values built to go deep: nesting far past any
limit, dotted names of many parts, list indexes in other digits than ASCII's or of thousands of
digits, tags of every operation and record.

DOVECOTE_FUZZ_EXAMPLES sets the examples per test (default 300; the long tier may raise it)."""

from __future__ import annotations

import os
import struct
from urllib.parse import quote

import msgspec
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings, strategies as st

from dovecote.actors import filter_policy
from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import Failure, MessageAttributeValue
from dovecote.actors.principals import ANYONE
from dovecote.net import frames, sns_api, sqs_api
from dovecote.net.aws_gateway import AwsGateway, refusal
from dovecote.net.http_server import HttpRequest, HttpResponse, HttpServer, split_target, text_response
from dovecote.net.limits import ConnectionCounts, NetLimits

from .http_exchange import exchange_bytes
from dovecote.storage import records
from dovecote.storage.framing import DamagedValue, frame, unframe

EXAMPLES = int(os.environ.get("DOVECOTE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SQS_ACTIONS = sorted(sqs_api._REQUESTS) + ["LaunchRocket", ""]
SNS_ACTIONS = sorted(sns_api._REQUESTS)
NAME_PARTS = ["Attribute", "MessageAttribute", "MessageAttributes", "SendMessageBatchRequestEntry", "AttributeName",
              "PublishBatchRequestEntries", "member", "entry", "key", "value", "Name", "Value", "Tag", "Key",
              "StringValue", "DataType", "Id", "MessageBody", "QueueUrl", "TopicArn", "Message", "1", "2", "0",
              "²", "٣", "9" * 4300, "x", ""]

# --- values built to go deep ------------------------------------------------------------------------
deep_json = st.builds(
    lambda depth, opener, inner: opener * depth + inner + {"[": "]", '{"a":': "}"}[opener] * depth,
    st.integers(0, 3000), st.sampled_from(["[", '{"a":']), st.sampled_from(["1", '"x"', "[]", "{}", ""]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
json_texts = deep_json | json_values.map(lambda v: msgspec.json.encode(v).decode()) | st.text(max_size=200)
dotted_names = st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=6).map(".".join) | st.integers(0, 2000).map(
    lambda parts: "a." * parts + "b"
)
query_pairs = st.lists(st.tuples(dotted_names, st.text(max_size=12) | json_texts), max_size=8)


class SpyBroker:
    """Sessions that answer every operation with a failure: only the decoding is under test."""

    def session(self, region=None, principal=ANYONE):
        acting_in = region or "us-east-1"

        class Spy:
            region = acting_in  # a Session's: the region it acts in

            def submit(self, op, reply, trace_header="") -> None:
                reply(Failure("InvalidParameter", "the spy answers every operation so"))

        return Spy()


async def not_aws(request: HttpRequest) -> HttpResponse:
    return text_response(404, "not found\n")


def dispatch(request: HttpRequest) -> HttpResponse:
    gateway = AwsGateway(SpyBroker(), "000000000000", None, not_aws)
    return trio.run(gateway.handle, request)


def assert_aws_answer(response: HttpResponse) -> None:
    """A refusal of the sender's input, in an AWS shape: never a 500 (the spy fails nothing else)."""
    assert response.status < 500, response
    content_type = dict(response.headers).get("Content-Type")
    assert content_type in ("application/x-amz-json-1.0", "text/xml", "text/plain; charset=utf-8"), response


@FUZZ
@given(st.sampled_from(SQS_ACTIONS), json_texts | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_sqs_json_requests(action, body):
    headers = [("X-Amz-Target", f"AmazonSQS.{action}"), ("Content-Type", "application/x-amz-json-1.0")]
    response = dispatch(HttpRequest("POST", "/", headers, body.encode("utf-8", "surrogatepass")))
    assert_aws_answer(response)
    assert dict(response.headers)["Content-Type"] == "application/x-amz-json-1.0"


@FUZZ
@given(st.sampled_from(SQS_ACTIONS + SNS_ACTIONS), query_pairs, st.booleans())
def test_query_requests(action, pairs, as_get):
    query = "&".join(f"{quote(key)}={quote(value, safe='')}" for key, value in [("Action", action), *pairs])
    if as_get:
        request = HttpRequest("GET", f"/?{query}", [], b"")
    else:
        request = HttpRequest("POST", "/", [("Content-Type", "application/x-www-form-urlencoded")], query.encode())
    response = dispatch(request)
    assert_aws_answer(response)
    assert dict(response.headers)["Content-Type"] == "text/xml"


@FUZZ
@given(st.sampled_from(["POST", "GET", "PUT", "HEAD"]), st.binary(max_size=100), st.sampled_from(
    [[], [("X-Amz-Target", "AmazonSQS.SendMessage")], [("Content-Type", "application/x-www-form-urlencoded")]]
), st.sampled_from(["RequestEntityTooLarge", "InternalError"]))
def test_refusals_take_the_requests_shape(method, target, headers, code):
    response = refusal(HttpRequest(method, "/" + target.decode("latin-1"), headers, b""), code, "refused")
    # 400: a JSON send past the limit is refused in SQS's own words (the message is too long)
    assert response.status in (400, 413, 500)


# --- HTTP ---------------------------------------------------------------------------------------------
def serve_bytes(data: bytes) -> bytes:
    """What the HTTP server answers on a connection that sends `data` and closes, with a handler
    that echoes what it was given."""

    async def echo(request: HttpRequest) -> HttpResponse:
        return text_response(200, f"{request.method} {len(request.body)}\n")

    async def main() -> bytes:
        server = HttpServer(
            lambda peer: echo, NetLimits(http_max_header_bytes=2048, http_max_body_bytes=4096), trio.Event(), ConnectionCounts(1, 1)
        )
        return await exchange_bytes(server, echo, data)

    return trio.run(main)


http_heads = st.builds(
    lambda method, target, headers, body: (
        f"{method} {target} HTTP/1.1\r\nHost: x\r\n".encode("latin-1")
        + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        + b"\r\n"
        + body
    ),
    st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT", "BREW", "G\x00T", ""]),
    st.sampled_from(["/", "/health", "*", "", "/%ff", "/" + "a" * 3000]),
    st.lists(st.tuples(
        st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Connection", b"X-Amz-Target", b"Expect", b"X"]),
        st.sampled_from([b"0", b"5", b"-1", b"9" * 4400, b"chunked", b"close", b"100-continue", b"\xff", b""]),
    ), max_size=4),
    st.binary(max_size=64),
)


@FUZZ
@given(http_heads | st.binary(max_size=300))
def test_http_requests(data):
    answer = serve_bytes(data)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:100]


# --- native frames and operations -----------------------------------------------------------------
OP_TAGS = sorted(tag for tag in frames.AnyOp.__args__ for tag in [tag.__struct_config__.tag])  # type: ignore[attr-defined]
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=16) | st.binary(max_size=16),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
ops = st.builds(lambda tag, fields: [tag, *fields], st.sampled_from(OP_TAGS), st.lists(msgpack_values, max_size=6))
deep_msgpack = st.builds(lambda depth, leaf: b"\x91" * depth + leaf, st.integers(0, 100_000), st.sampled_from([b"\xc0", b"\x90", b"\xc1"]))


@FUZZ
@given(st.lists(st.binary(max_size=64) | st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">I", n)), max_size=6))
def test_frame_decoder(chunks):
    decoder = frames.FrameDecoder(1024)
    for chunk in chunks:
        decoder.feed(chunk)
        try:
            while (payload := decoder.next_payload()) is not None:
                assert len(payload) <= 1024
        except frames.ProtocolError:
            return


@FUZZ
@given(st.integers(-(2**63), 2**64 - 1) | msgpack_values, ops | msgpack_values | deep_msgpack)
def test_requests_and_operations(request_id, op):
    payload = msgspec.msgpack.encode([request_id, op]) if not isinstance(op, bytes) else b"\x92\x01" + op
    try:
        envelope = frames.decode_envelope(payload)
    except frames.ProtocolError:
        return
    try:
        frames.decode_op(envelope.op)
    except ValueError:
        pass


@FUZZ
@given(st.binary(max_size=200) | deep_msgpack)
def test_handshake_messages(payload):
    for decode in (frames.decode_authenticate, frames.decode_challenge, frames.decode_response):
        try:
            decode(payload)
        except frames.ProtocolError:
            pass


# --- filter policies ------------------------------------------------------------------------------
attributes = st.dictionaries(
    st.text(max_size=6),
    st.builds(MessageAttributeValue, st.sampled_from(["String", "Number", "String.Array", "Binary", "Number.x"]),
              json_texts | st.text(max_size=10), st.none()),
    max_size=3,
)


@FUZZ
@given(json_texts, st.sampled_from([filter_policy.ATTRIBUTES, filter_policy.BODY]), attributes, json_texts)
def test_filter_policies(text, scope, message_attributes, body):
    try:
        policy = filter_policy.compile_policy(text, scope)
    except BrokerError as error:
        assert error.kind.sender_fault
        return
    matched = policy.matches(message_attributes, body)
    assert (filter_policy.explain(policy, message_attributes, body) is None) == matched


# --- stored records -------------------------------------------------------------------------------
RECORD_TAGS = sorted(cls.__struct_config__.tag for cls in records.AnyRecord.__args__)  # type: ignore[attr-defined]
stored = st.builds(lambda tag, fields: msgspec.msgpack.encode([tag, *fields]), st.sampled_from(RECORD_TAGS),
                   st.lists(msgpack_values, max_size=12)) | st.binary(max_size=200) | deep_msgpack
RECORD_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


@FUZZ
@given(stored, st.booleans())
def test_stored_records(payload, damaged):
    value = frame(payload)
    if damaged:
        value = value[:-1] + bytes([value[-1] ^ 1]) if value[4:] else value[:2]
    try:
        view = unframe(value)
    except DamagedValue:
        assert damaged
        return
    for decode in (records.decode_record, records.decode_message_head, records.decode_push_head,
                   records.decode_dedup_entry, records.decode_sealed_content):
        try:
            decode(bytes(view))
        except RECORD_ERRORS:
            pass


# --- found by the long tier's atheris runs ----------------------------------------------------------
def test_a_url_with_a_malformed_ipv6_host_is_an_invalid_address():
    """urlsplit raises ValueError on `http://[x/`: a queue URL, or a request target, of that shape
    answered 500 with a traceback."""
    body = b'{"QueueUrl":"http://[ocalhost/000000000000/q","MessageBody":"x"}'
    json_request = HttpRequest("POST", "/", [("X-Amz-Target", "AmazonSQS.SendMessage")], body)
    form = b"Action=SendMessage&QueueUrl=http://[x/000000000000/q&MessageBody=x"
    query_request = HttpRequest("POST", "/", [("Content-Type", "application/x-www-form-urlencoded")], form)
    for request in (json_request, query_request):
        response = dispatch(request)
        assert response.status == 404 and b"InvalidAddress" in response.body, response
    assert split_target("http://[x/health?a=1") == ("http://[x/health", "a=1")
    assert b"the spy answers" in dispatch(HttpRequest("GET", "http://[x/?Action=ListQueues", [], b"")).body  # it was decoded

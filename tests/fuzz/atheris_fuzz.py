"""Coverage-guided fuzzing (atheris, libFuzzer) of every decoder, for the long fault tier: the same
contracts as tests/net/test_decoders_fuzz.py (decode, or raise the decoder's documented error, and
answer AWS requests in their protocol's shape), with inputs grown from what reaches new code.

    python -m tests.fuzz.atheris_fuzz TARGET [--seconds N]   (TARGET: one of TARGETS, or all)

`all` runs each target in a process of its own for an equal share of N seconds (default 3600).
A failing input is written to fuzz-crash-TARGET-* in the current directory and the run fails.
Needs the `fuzz` extra (`pip install -e '.[test,fuzz]'`)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["dovecote"]):
    import msgspec

    from dovecote.actors import filter_policy
    from dovecote.actors.errors import BrokerError
    from dovecote.actors.ops import MessageAttributeValue, SendMessage
    from dovecote.net import frames
    from dovecote.net.http_server import HttpRequest
    from dovecote.storage import records
    from dovecote.storage.framing import DamagedValue, unframe
    from tests.net.test_decoders_fuzz import RECORD_ERRORS, SNS_ACTIONS, SQS_ACTIONS, assert_aws_answer, dispatch, serve_bytes

FORM = [("Content-Type", "application/x-www-form-urlencoded")]
JSON = [("Content-Type", "application/x-amz-json-1.0")]


def fuzz_frames(data: bytes) -> None:
    decoder = frames.FrameDecoder(1 << 16)
    split = data[0] if data else 0
    for chunk in (data[1 : 1 + split], data[1 + split :]):
        decoder.feed(chunk)
        try:
            while (payload := decoder.next_payload()) is not None:
                envelope = frames.decode_envelope(payload)
                try:
                    frames.decode_op(envelope.op)
                except ValueError:
                    pass
        except frames.ProtocolError:
            return


def fuzz_ops(data: bytes) -> None:
    try:
        frames.decode_op(msgspec.Raw(data))
    except ValueError:
        pass
    for decode in (frames.decode_envelope, frames.decode_authenticate, frames.decode_response):
        try:
            decode(data)
        except frames.ProtocolError:
            pass


def fuzz_json(data: bytes) -> None:
    action = SQS_ACTIONS[data[0] % len(SQS_ACTIONS)] if data else ""
    response = dispatch(HttpRequest("POST", "/", [("X-Amz-Target", f"AmazonSQS.{action}"), *JSON], data[1:]))
    assert_aws_answer(response)


def fuzz_query(data: bytes) -> None:
    actions = SQS_ACTIONS + SNS_ACTIONS
    action = actions[data[0] % len(actions)] if data else ""
    assert_aws_answer(dispatch(HttpRequest("POST", "/", FORM, f"Action={action}&".encode() + data[1:])))


def fuzz_http(data: bytes) -> None:
    answer = serve_bytes(data)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:100]


def fuzz_filter_policies(data: bytes) -> None:
    """data: a scope byte (odd: the body's), then the policy and the message body, split at NUL."""
    scope = filter_policy.BODY if data[:1] and data[0] & 1 else filter_policy.ATTRIBUTES
    policy_bytes, _, body_bytes = data[1:].partition(b"\0")
    text, body = policy_bytes.decode("utf-8", "replace"), body_bytes.decode("utf-8", "replace")
    try:
        policy = filter_policy.compile_policy(text, scope)
    except BrokerError as error:
        assert error.kind.sender_fault
        return
    attributes = {"a": MessageAttributeValue("String.Array", body)}
    matched = policy.matches(attributes, body)
    assert (filter_policy.explain(policy, attributes, body) is None) == matched


def fuzz_records(data: bytes) -> None:
    try:
        unframe(data)
    except DamagedValue:
        pass
    for decode in (records.decode_record, records.decode_message_head, records.decode_push_head,
                   records.decode_dedup_entry, records.decode_sealed_content):
        try:
            decode(data)
        except RECORD_ERRORS:
            pass


def request_frame(request_id: int, op: SendMessage) -> bytes:
    out = bytearray()
    frames.encode_request(request_id, op, out)
    return bytes(out)


def action_byte(action: str, actions: list[str]) -> bytes:
    return bytes([actions.index(action)])


QUEUE_URL = "http://localhost/000000000000/q"
TOPIC = "arn:aws:sns:us-east-1:000000000000:t"
# Inputs each target starts from, so that mutation begins inside the grammar rather than at its door.
SEEDS: dict[str, list[bytes]] = {
    "json": [
        action_byte("SendMessage", SQS_ACTIONS)
        + b'{"QueueUrl":"%s","MessageBody":"x","DelaySeconds":1,"MessageAttributes":{"a":{"DataType":"String","StringValue":"v"}}}'
        % QUEUE_URL.encode(),
        action_byte("SendMessageBatch", SQS_ACTIONS)
        + b'{"QueueUrl":"%s","Entries":[{"Id":"1","MessageBody":"x"},{"Id":"2","MessageBody":"y"}]}' % QUEUE_URL.encode(),
        action_byte("CreateQueue", SQS_ACTIONS) + b'{"QueueName":"q","Attributes":{"FifoQueue":"true"},"tags":{"k":"v"}}',
    ],
    "query": [
        action_byte("SetQueueAttributes", SQS_ACTIONS + SNS_ACTIONS)
        + f"QueueUrl={QUEUE_URL}&Attribute.1.Name=DelaySeconds&Attribute.1.Value=5".encode(),
        action_byte("SendMessageBatch", SQS_ACTIONS + SNS_ACTIONS)
        + b"SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=x"
        + b"&SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=n&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v",
        action_byte("Publish", SQS_ACTIONS + SNS_ACTIONS)
        + f"TopicArn={TOPIC}&Message=m&MessageAttributes.entry.1.Name=a&MessageAttributes.entry.1.Value.DataType=String".encode(),
        action_byte("Subscribe", SQS_ACTIONS + SNS_ACTIONS)
        + f"TopicArn={TOPIC}&Protocol=sqs&Endpoint=arn:aws:sqs:us-east-1:000000000000:q&Attributes.entry.1.key=RawMessageDelivery&Attributes.entry.1.value=true".encode(),
    ],
    "http": [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"],
    "filter-policies": [
        b"\0" + b'{"a":["x",{"prefix":"p"},{"numeric":[">",1,"<=",5]}],"b":[{"exists":true}]}' + b"\0" + b'["x","y"]',
        b"\1" + b'{"o":{"k":[{"anything-but":{"prefix":"z"}}]},"$or":[{"n":[1]},{"m":[{"cidr":"10.0.0.0/8"}]}]}'
        + b"\0" + b'{"o":{"k":"v"},"n":1}',
    ],
    "ops": [msgspec.msgpack.encode(SendMessage("q", "body", 3, {"a": MessageAttributeValue("String", "v")}))],
    "frames": [b"\x10" + request_frame(1, SendMessage("q", "b")) + request_frame(2, SendMessage("q", "c", 1))],
    "records": [],
}


TARGETS = {
    "frames": fuzz_frames, "ops": fuzz_ops, "json": fuzz_json, "query": fuzz_query, "http": fuzz_http,
    "filter-policies": fuzz_filter_policies, "records": fuzz_records,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=int, default=3600, help="the time budget, shared by the targets of `all`")
    arguments, libfuzzer = parser.parse_known_args()
    if arguments.target == "all":
        share = max(1, arguments.seconds // len(TARGETS))
        failed = [name for name in TARGETS if subprocess.call(
            [sys.executable, "-m", "tests.fuzz.atheris_fuzz", name, "--seconds", str(share), *libfuzzer]
        )]
        print(f"fuzzing failed: {', '.join(failed)}" if failed else f"fuzzing passed: {len(TARGETS)} targets, {share} s each")
        return 1 if failed else 0
    corpus = Path(tempfile.mkdtemp(prefix=f"dovecote-fuzz-{arguments.target}-"))
    for number, seed in enumerate(SEEDS[arguments.target]):
        (corpus / f"seed-{number}").write_bytes(seed)
    atheris.Setup(
        [sys.argv[0], f"-max_total_time={arguments.seconds}", "-print_final_stats=1", "-timeout=10",
         "-rss_limit_mb=2048", f"-artifact_prefix=fuzz-crash-{arguments.target}-", *libfuzzer, str(corpus)],
        TARGETS[arguments.target],
    )
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

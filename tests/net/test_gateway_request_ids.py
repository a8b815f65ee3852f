"""The gateway's request ids: UUID-shaped and distinct, made without a uuid4 (a read of the system's
random source) per request."""

from __future__ import annotations

import re
import uuid

from dovecote.actors.ops import Sent
from dovecote.net.aws_gateway import AwsGateway
from dovecote.net.http_server import HttpRequest

REQUEST = HttpRequest(
    "POST",
    "/",
    [("host", "127.0.0.1"), ("x-amz-target", "AmazonSQS.SendMessage"), ("content-type", "application/x-amz-json-1.0")],
    b'{"QueueUrl": "http://127.0.0.1/000000000000/q", "MessageBody": "m"}',
)
UUID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class AnsweringSession:
    def __init__(self, region: str) -> None:
        self.region = region

    def submit(self, op, reply, trace_header: str = "") -> None:
        reply(Sent("0" * 32, "d41d8cd98f00b204e9800998ecf8427e"))


class OneSessionBroker:
    def session(self, region, principal):
        return AnsweringSession(region or "us-east-1")


async def no_fallback(request):
    raise AssertionError("not an AWS request")


async def test_request_ids_are_distinct_uuids_without_a_uuid4_each(monkeypatch):
    gateways = [AwsGateway(OneSessionBroker(), "000000000000", None, no_fallback) for _ in range(2)]
    made = []
    real_uuid4 = uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: made.append(1) or real_uuid4())
    ids = []
    for gateway in gateways:
        for _ in range(50):
            response = await gateway.handle(REQUEST)
            assert response.status == 200
            ids.append(dict(response.headers)["x-amzn-RequestId"])
    assert made == []
    assert len(set(ids)) == 100 and all(UUID_SHAPE.fullmatch(i) for i in ids)

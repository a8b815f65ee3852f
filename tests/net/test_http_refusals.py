"""The HTTP server's last line: a request whose handling raises is answered with AWS's InternalError
in the request's own shape, and the tracebacks of a flood of such failures are logged once an
interval, not once each."""

from __future__ import annotations

import json
import logging

import trio
import trio.testing

from dovecote.net.aws_gateway import refusal
from dovecote.net.failure_log import FailureLog
from dovecote.net.http_server import HttpRequest, HttpResponse, HttpServer
from dovecote.net.limits import ConnectionCounts, NetLimits

from .http_exchange import exchange_bytes

JSON_REQUEST = (
    b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AmazonSQS.ListQueues\r\n"
    b"Content-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{}"
)
QUERY_REQUEST = b"GET /?Action=ListQueues HTTP/1.1\r\nHost: x\r\n\r\n"


async def failing(request: HttpRequest) -> HttpResponse:
    raise KeyError("a bug")


async def exchange(data: bytes, limits: NetLimits) -> bytes:
    server = HttpServer(lambda peer: failing, limits, trio.Event(), ConnectionCounts(1, 1), refuse=refusal)
    return await exchange_bytes(server, failing, data)


async def test_a_handler_that_raises_answers_internal_error_in_the_requests_shape(caplog):
    answer = await exchange(JSON_REQUEST + QUERY_REQUEST, NetLimits())
    json_answer, query_answer = answer.split(b"HTTP/1.1 ")[1:]
    assert json_answer.startswith(b"500 ") and b'"__type":"com.amazonaws.sqs#InternalError"' in json_answer
    assert b"x-amzn-query-error: InternalError;Receiver" in json_answer
    assert query_answer.startswith(b"500 ") and b"<Code>InternalError</Code>" in query_answer


async def test_a_flood_of_failures_logs_one_traceback_an_interval(caplog):
    caplog.set_level(logging.ERROR, logger="dovecote.http")
    answer = await exchange(JSON_REQUEST * 200, NetLimits(failure_log_interval_s=3600))
    assert answer.count(b"HTTP/1.1 500 ") == 200
    logged = [record for record in caplog.records if record.name == "dovecote.http"]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_the_failure_log_says_how_many_it_held_back(caplog):
    now = [0.0]
    failures = FailureLog(logging.getLogger("dovecote.test"), 1.0, clock=lambda: now[0])
    for step in range(30):
        now[0] = step * 0.1
        try:
            raise ValueError(step)
        except ValueError:
            failures.exception("it failed")
    lines = [record.getMessage() for record in caplog.records if record.name == "dovecote.test"]
    assert lines == ["it failed", "it failed (and 9 more failures in the last 1.0 s)", "it failed (and 9 more failures in the last 1.0 s)"]


def test_a_lambda_request_refused_before_it_is_read_gets_lambdas_error_shape():
    response = refusal(HttpRequest("POST", "/2015-03-31/functions", [], b""), "RequestEntityTooLarge", "The request body is larger than 10 bytes.")
    headers = dict(response.headers)
    assert response.status == 413 and headers["x-amzn-ErrorType"] == "RequestTooLargeException"
    body = json.loads(response.body)
    assert body["Type"] == "User" and body["Message"].startswith("The request body is larger than 10 bytes.")
    assert "S3Bucket 'local'" in body["Message"]  # how to give larger code

"""The AWS-compatible API on the HTTP port: SQS over the AWS JSON 1.0 protocol (what current boto3,
aws-cli and the other current SDKs speak). One gateway per HTTP connection, owning that
connection's broker Session. Thin: it decodes, calls the broker, encodes; errors take the JSON
protocol's shape (`__type`, `message`) plus the `x-amzn-query-error` header that SQS's
awsQueryCompatible model reads, so the SDKs raise their modelled exceptions.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import msgspec

from dovecote.actors.errors import KINDS, BrokerError
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import Failure, Result
from dovecote.actors.registry import Broker

from . import sqs_api
from .http_server import HttpRequest, HttpResponse

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
SQS_TARGET_PREFIX = "AmazonSQS."

_json_encoder = msgspec.json.Encoder()


class AwsGateway:
    def __init__(
        self,
        broker: Broker,
        account_id: str,
        public_url: str | None,
        fallback: Callable[[HttpRequest], Awaitable[HttpResponse]],
    ) -> None:
        self._session = broker.session()
        self._account_id = account_id
        self._public_url = public_url
        self._fallback = fallback

    async def handle(self, request: HttpRequest) -> HttpResponse:
        target = _header(request, "x-amz-target")
        if request.method == "POST" and target is not None and target.startswith(SQS_TARGET_PREFIX):
            return await self._json(request, target[len(SQS_TARGET_PREFIX) :])
        return await self._fallback(request)

    async def _json(self, request: HttpRequest, action: str) -> HttpResponse:
        request_id = str(uuid.uuid4())
        host = _header(request, "host") or "localhost"
        context = sqs_api.Context(self._account_id, self._public_url or f"http://{host}")
        try:
            try:
                params = msgspec.json.decode(request.body or b"{}")
            except (msgspec.DecodeError, UnicodeDecodeError) as error:
                raise BrokerError("InvalidParameterValue", f"The request body is not valid JSON: {error}") from None
            if not isinstance(params, dict):
                raise BrokerError("InvalidParameterValue", "The request body must be a JSON object.")
            op = sqs_api.to_op(action, params, context)
        except BrokerError as error:
            return _json_error(error.code, error.message, request_id)
        result = await self._call(op)
        if isinstance(result, Failure):
            return _json_error(result.code, result.message, request_id)
        body = _json_encoder.encode(sqs_api.to_output(result, context))
        return HttpResponse(200, [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-RequestId", request_id)], body)

    async def _call(self, op) -> Result:
        slot: ReplySlot[Result] = ReplySlot()
        await self._session.submit(op, slot)
        return await slot.wait()


def _header(request: HttpRequest, name: str) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


def _json_error(code: str, message: str, request_id: str) -> HttpResponse:
    kind = KINDS.get(code) or KINDS["InternalError"]
    body = _json_encoder.encode({"__type": f"com.amazonaws.sqs#{kind.code}", "message": message})
    headers = [
        ("Content-Type", JSON_CONTENT_TYPE),
        ("x-amzn-RequestId", request_id),
        ("x-amzn-query-error", f"{kind.query_code};{'Sender' if kind.sender_fault else 'Receiver'}"),
    ]
    return HttpResponse(kind.http_status, headers, body)

"""The AWS-compatible API on the HTTP port: SQS over the AWS JSON 1.0 protocol (what current boto3,
aws-cli and the other current SDKs speak) and over the Query protocol (older SDKs), and SNS over
the Query protocol (the only one SNS has; told from SQS by the service a request is signed for,
else by its action). One gateway per
HTTP connection, owning that connection's broker Session. Thin: it decodes, calls the broker,
encodes. JSON errors carry `__type`, `message` and the `x-amzn-query-error` header that SQS's
awsQueryCompatible model reads, so the SDKs raise their modelled exceptions; Query errors are an
XML ErrorResponse with the Query error code.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import msgspec

from dovecote.actors.errors import BrokerError, from_failure
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import Failure, Result
from dovecote.actors.principals import ANYONE, Principal
from dovecote.actors.broker import Broker
from dovecote.actors.session import Session

from . import sns_api, sqs_api, sqs_query
from .credential_scope import parse_authorization
from .http_server import HttpRequest, HttpResponse
from .tls import Peer

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"


class Verifier(Protocol):
    def verify(self, request: HttpRequest) -> Principal:
        """The principal of the key that signed the request; raises BrokerError when no known
        key did."""


SQS_TARGET_PREFIX = "AmazonSQS."

_json_encoder = msgspec.json.Encoder()


class AwsGateway:
    def __init__(
        self,
        broker: Broker,
        account_id: str,
        public_url: str | None,
        fallback: Callable[[HttpRequest], Awaitable[HttpResponse]],
        verifier: Verifier | None = None,
        peer: Peer | None = None,
        scheme: str = "http",
    ) -> None:
        """verifier=None accepts any signature (or none), as local emulators do: requests then act
        as ANYONE. peer: the connection's; an unsigned request on a connection whose TLS client
        certificate names a key acts as that key. scheme: of the queue URLs made from the Host
        header when there is no public URL (https on a TLS listener)."""
        self._broker = broker
        self._sessions: dict[tuple[str, Principal], Session] = {}  # one per region and principal this connection has used
        self._verifier = verifier
        self._account_id = account_id
        self._public_url = public_url
        self._fallback = fallback
        self._certificate_principal = peer.certificate_principal if peer is not None else None
        self._scheme = scheme

    async def handle(self, request: HttpRequest) -> HttpResponse:
        target = _header(request, "x-amz-target")
        if request.method == "POST" and target is not None and target.startswith(SQS_TARGET_PREFIX):
            return await self._json(request, target[len(SQS_TARGET_PREFIX) :])
        query_pairs = _query_pairs(request)
        if query_pairs is not None:
            return await self._query(request, query_pairs)
        return await self._fallback(request)

    def _context(self, request: HttpRequest) -> sqs_api.Context:
        host = _header(request, "host") or "localhost"
        return sqs_api.Context(self._account_id, self._public_url or f"{self._scheme}://{host}")

    def _session(self, request: HttpRequest, principal: Principal) -> Session:
        """The session of the principal, for the region in the request's credential scope (the
        broker's default region for an unsigned request)."""
        region = ""
        header = _header(request, "authorization")
        if header is not None:
            try:
                region = parse_authorization(header).region
            except BrokerError:
                pass
        session = self._sessions.get((region, principal))
        if session is None:
            session = self._sessions[(region, principal)] = self._broker.session(region or None, principal)
        return session

    async def _serve(
        self, request: HttpRequest, principal: Principal, action: str, params: dict[str, Any], context: sqs_api.Context
    ) -> dict[str, Any] | BrokerError:
        try:
            op = sqs_api.to_op(action, params, context)
        except BrokerError as error:
            return error
        slot: ReplySlot[Result] = ReplySlot()
        self._session(request, principal).submit(op, slot)
        result = await slot.wait()
        if isinstance(result, Failure):
            return from_failure(result)
        return sqs_api.to_output(result, context, action)

    def _verify(self, request: HttpRequest) -> Principal | BrokerError:
        """Who signed the request (ANYONE when signatures are not checked; for an unsigned request,
        the key its connection's client certificate names, if any), or why it is refused."""
        if self._verifier is None:
            return ANYONE
        if self._certificate_principal is not None and _header(request, "authorization") is None:
            return self._certificate_principal
        try:
            return self._verifier.verify(request)
        except BrokerError as error:
            return error

    async def _json(self, request: HttpRequest, action: str) -> HttpResponse:
        request_id = str(uuid.uuid4())
        principal = self._verify(request)
        if isinstance(principal, BrokerError):
            return _json_error(principal, request_id)
        try:
            params = msgspec.json.decode(request.body or b"{}")
        except (msgspec.DecodeError, UnicodeDecodeError) as error:
            return _json_error(BrokerError("InvalidParameterValue", f"The request body is not valid JSON: {error}"), request_id)
        if not isinstance(params, dict):
            return _json_error(BrokerError("InvalidParameterValue", "The request body must be a JSON object."), request_id)
        outcome = await self._serve(request, principal, action, params, self._context(request))
        if isinstance(outcome, BrokerError):
            return _json_error(outcome, request_id)
        body = _json_encoder.encode(outcome)
        return HttpResponse(200, [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-RequestId", request_id)], body)

    async def _query(self, request: HttpRequest, pairs: list[tuple[str, str]]) -> HttpResponse:
        request_id = str(uuid.uuid4())
        action = next((value for key, value in pairs if key == "Action"), "")
        if sns_api.is_sns_request(action, dict(pairs), _signed_for(request)):
            return await self._sns(request, pairs, request_id)
        action, principal = "", self._verify(request)
        outcome: dict[str, Any] | BrokerError = principal if isinstance(principal, BrokerError) else {}
        if isinstance(principal, Principal):
            try:
                action, params = sqs_query.nest(pairs)
            except BrokerError as error:
                outcome = error
            else:
                path = urlsplit(request.target).path
                if "QueueUrl" not in params and path.strip("/"):
                    params["QueueUrl"] = path  # addressed by the queue URL's path, as older SDKs do
                outcome = await self._serve(request, principal, action or "", params, self._context(request))
        if isinstance(outcome, BrokerError):
            kind = outcome.kind
            body = sqs_query.render_error(kind.query_code, outcome.message, kind.sender_fault, request_id)
            return HttpResponse(kind.http_status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body)
        body = sqs_query.render(action or "", outcome, request_id)
        return HttpResponse(200, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body)

    async def _sns(self, request: HttpRequest, pairs: list[tuple[str, str]], request_id: str) -> HttpResponse:
        # The token authenticates a confirmation (the SubscribeURL an endpoint visits), as on AWS.
        confirming = ("Action", "ConfirmSubscription") in pairs
        action, principal = "", ANYONE if confirming else self._verify(request)
        outcome: BrokerError | None = principal if isinstance(principal, BrokerError) else None
        if isinstance(principal, Principal):
            try:
                action, params = sns_api.nest(pairs)
                op = sns_api.to_op(action, params)
            except BrokerError as error:
                outcome = error
            else:
                slot: ReplySlot[Result] = ReplySlot()
                self._session(request, principal).submit(op, slot)
                result = await slot.wait()
                if isinstance(result, Failure):
                    outcome = from_failure(result)
                else:
                    body = sns_api.render(action, sns_api.to_output(action, result), request_id)
                    return HttpResponse(200, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body)
        status, body = sns_api.render_error(outcome, request_id)
        return HttpResponse(status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body)


def _signed_for(request: HttpRequest) -> str | None:
    """The service a request's SigV4 credential scope names, if it is signed."""
    header = _header(request, "authorization")
    if header is None:
        return None
    try:
        return parse_authorization(header).service
    except BrokerError:
        return None


def _query_pairs(request: HttpRequest) -> list[tuple[str, str]] | None:
    """The parameters of a Query request (form body or query string), or None if it is not one."""
    content_type = (_header(request, "content-type") or "").lower()
    if request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
        try:
            text = request.body.decode()
        except UnicodeDecodeError:
            return [("Action", "")]
        pairs = parse_qsl(text, keep_blank_values=True)
    elif request.method == "GET":
        pairs = parse_qsl(urlsplit(request.target).query, keep_blank_values=True)
    else:
        return None
    return pairs if any(key == "Action" for key, _ in pairs) else None


def _header(request: HttpRequest, name: str) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


def _json_error(error: BrokerError, request_id: str) -> HttpResponse:
    kind = error.kind
    body = _json_encoder.encode({"__type": f"com.amazonaws.sqs#{kind.code}", "message": error.message})
    headers = [
        ("Content-Type", JSON_CONTENT_TYPE),
        ("x-amzn-RequestId", request_id),
        ("x-amzn-query-error", f"{kind.query_code};{'Sender' if kind.sender_fault else 'Receiver'}"),
    ]
    return HttpResponse(kind.http_status, headers, body)

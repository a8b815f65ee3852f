"""The AWS-compatible API on the HTTP port: SQS over the AWS JSON 1.0 protocol (what current boto3,
aws-cli and the other current SDKs speak) and over the Query protocol (older SDKs), and SNS over
the Query protocol (the only one SNS has; told from SQS by the service a request is signed for,
else by its action). One gateway per
HTTP connection, owning that connection's broker Session. Thin: it decodes, calls the broker,
encodes. JSON errors carry `__type`, `message` and the `x-amzn-query-error` header that SQS's
awsQueryCompatible model reads, so the SDKs raise their modelled exceptions; Query errors are an
XML ErrorResponse with the Query error code.

With keys configured, every request must prove one by its SigV4 signature before its operation is
made, except a SubscribeURL or UnsubscribeURL visit (aws_request.py: the action is decided there,
once, for this check and for the dispatch). Refusals are told to the audit (audit.py).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

import msgspec

from dovecote.actors.errors import BrokerError, batch_too_long, from_failure, message_too_long, unknown_action
from dovecote.actors.limits import SQS_MAX_MESSAGE_BYTES
from dovecote.actors.json_depth import MAX_JSON_DEPTH, deeper_than
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import Failure, Op, Result
from dovecote.actors.principals import ANYONE, Principal
from dovecote.actors.broker import Broker
from dovecote.actors.session import Session

from . import lambda_api, lambda_esm_api, sns_api, sqs_api, sqs_query
from .audit import DENIED_CODES, DOOR_AWS, Audit
from .aws_request import JSON, SNS, AwsRequest, classify, is_queue_path, shape_of_head
from .credential_scope import parse_authorization
from .http_server import HttpRequest, HttpResponse, split_target, text_refusal
from .tls import Peer

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"


class Verifier(Protocol):
    def verify(self, request: HttpRequest) -> Principal:
        """The principal of the key that signed the request; raises BrokerError when no known
        key did."""


_json_encoder = msgspec.json.Encoder()


_LAMBDA_REQUEST = AwsRequest("rest-json", "lambda", "", [], False, None)  # what _caller needs of a Lambda request


class Caller(NamedTuple):
    """Who a request acts as, and in which region's namespace ("" for the broker's default)."""

    principal: Principal
    region: str
    key_id: str  # the key the request named, proven or not ("" for none): for the audit
    by_url: bool = False  # a SubscribeURL or UnsubscribeURL visit, whose token is its only proof


class AwsGateway:
    def __init__(
        self,
        broker: Broker,
        account_id: str,
        public_url: str | None,
        fallback: Callable[[HttpRequest], Awaitable[HttpResponse]],
        verifier: Verifier | None = None,
        audit: Audit | None = None,
        peer: Peer | None = None,
        scheme: str = "http",
    ) -> None:
        """verifier=None accepts any signature (or none), as local emulators do: requests then act
        as ANYONE. audit: told of requests refused for want of a key, or for what they asked.
        peer: the connection's; an unsigned request on a connection whose TLS client certificate
        names a key acts as that key. scheme: of the queue URLs made from the Host header when there
        is no public URL (https on a TLS listener)."""
        self._broker = broker
        self._sessions: dict[tuple[str, Principal], Session] = {}  # one per region and principal this connection has used
        self._verifier = verifier
        self._audit = audit if audit is not None else Audit()
        self._account_id = account_id
        self._public_url = public_url
        self._fallback = fallback
        self._certificate_principal = peer.certificate_principal if peer is not None else None
        self._scheme = scheme
        # Request ids: the connection's random UUID with its last 12 digits counting requests, as
        # unique as one uuid4 each, without a read of the system's random source per request.
        self._request_id_prefix = str(uuid.uuid4())[:24]
        self._request_numbers = itertools.count()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if lambda_api.is_lambda_path(request.target):
            return await self._lambda(request)
        if lambda_esm_api.is_mapping_path(split_target(request.target)[0]):
            return await self._event_source_mappings(request)
        aws = classify(request)
        if aws is None:
            if is_queue_path(request.target):
                # AWS's answer to a queue URL that names no action, as its other services' doors
                # answer a request for no operation (recorded: localstack's sqs query_api.py).
                return HttpResponse(404, [("Content-Type", "text/xml")], b"<UnknownOperationException/>")
            return await self._fallback(request)
        request_id = self._next_request_id()
        outcome = await self._serve(request, aws)
        if isinstance(outcome, BrokerError):
            return _error(aws, outcome, request_id)
        if aws.protocol == JSON:
            body = _json_encoder.encode(outcome)
            return HttpResponse(200, [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-RequestId", request_id)], body)
        if aws.service == SNS:
            body = sns_api.render(aws.action, outcome, request_id)
        else:
            body = sqs_query.render(aws.action, outcome, request_id)
        return HttpResponse(200, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body)

    async def _lambda(self, request: HttpRequest) -> HttpResponse:
        """A Lambda REST API request (lambda_api.py), its signature checked as every other's."""
        request_id = self._next_request_id()
        caller = self._caller(request, _LAMBDA_REQUEST)
        if isinstance(caller, BrokerError):
            return lambda_api.error_response(caller, request_id)
        api = lambda_api.LambdaApi(self._broker.functions, self._account_id)
        return await api.handle(request, caller.principal, caller.region, request_id)

    def _next_request_id(self) -> str:
        return f"{self._request_id_prefix}{next(self._request_numbers) & 0xFFFFFFFFFFFF:012x}"

    async def _serve(self, request: HttpRequest, aws: AwsRequest) -> dict[str, Any] | BrokerError:
        """The output of the request's action, or why it failed. The action is classify's alone:
        the same one decided whether a signature was needed."""
        if aws.error is not None:
            return aws.error
        caller = self._caller(request, aws)
        if isinstance(caller, BrokerError):
            return caller
        context = self._context(request)
        session = self._session(caller)
        try:
            op = self._op(request, aws, context, session.region)
        except BrokerError as error:
            return error
        slot: ReplySlot[Result] = ReplySlot()
        session.submit(op, slot, _header(request, "x-amzn-trace-id") or "")
        result = await slot.wait()
        if isinstance(result, Failure):
            if result.code in DENIED_CODES:
                self._audit.access_denied(DOOR_AWS, aws.action, caller.key_id, request.peer)
            return from_failure(result)
        if aws.service == SNS:
            return sns_api.to_output(aws.action, result)
        return sqs_api.to_output(result, context, aws.action)

    async def _event_source_mappings(self, request: HttpRequest) -> HttpResponse:
        """The Lambda API's event source mapping operations (lambda_esm_api.py), signed as every
        request, authorised by their IAM actions."""
        request_id = self._next_request_id()
        caller = self._caller(request, _LAMBDA_REQUEST)
        if isinstance(caller, BrokerError):
            return lambda_api.error_response(caller, request_id)
        return await lambda_esm_api.serve(
            self._broker.mappings, request, caller.principal, caller.region or self._broker.config.region, self._account_id, request_id
        )

    def _caller(self, request: HttpRequest, aws: AwsRequest) -> Caller | BrokerError:
        """Who the request acts as: the key its signature proves, in the region its credential scope
        names; a SubscribeURL or UnsubscribeURL visit acts as ANYONE in its ARN's region (its token is
        its proof); an unsigned request on a connection whose client certificate names a key acts as
        that key; or why it is refused (counted and logged by the audit)."""
        headers = [value for name, value in request.headers if name.lower() == "authorization"]
        if aws.by_url:  # it acts in its topic's region: the URL names no other
            arn = dict(aws.pairs).get("TopicArn") or dict(aws.pairs).get("SubscriptionArn", "")
            return Caller(ANYONE, sns_api.region_of(arn), "", by_url=True)
        scope = None
        if len(headers) == 1:
            try:
                scope = parse_authorization(headers[0])
            except BrokerError:
                pass
        if self._verifier is None:
            return Caller(ANYONE, scope.region if scope is not None else "", "")
        if not headers and self._certificate_principal is not None:
            return Caller(self._certificate_principal, "", self._certificate_principal.key_id)
        key_id = scope.access_key if scope is not None else ""
        try:
            if len(headers) > 1:
                raise BrokerError("IncompleteSignature", "The request carries more than one Authorization header.")
            principal = self._verifier.verify(request)
        except BrokerError as error:
            self._audit.authentication_failed(DOOR_AWS, error.code, key_id, request.peer)
            return error
        assert scope is not None  # a verified request has one Authorization header, which parses
        return Caller(principal, scope.region, key_id)

    def _op(self, request: HttpRequest, aws: AwsRequest, context: sqs_api.Context, region: str) -> Op:
        """The broker operation of the request's action, acting in `region`. Raises BrokerError."""
        if aws.protocol == JSON:
            if deeper_than(request.body):
                raise BrokerError("InvalidParameterValue", f"The request body nests more than {MAX_JSON_DEPTH} levels deep.")
            try:
                params = msgspec.json.decode(request.body or b"{}")
            except (msgspec.DecodeError, UnicodeDecodeError) as error:
                raise BrokerError("InvalidParameterValue", f"The request body is not valid JSON: {error}") from None
            if not isinstance(params, dict):
                raise BrokerError("InvalidParameterValue", "The request body must be a JSON object.")
            return sqs_api.to_op(aws.action, params, context)
        if aws.by_url and self._verifier is not None:
            return sns_api.by_url_op(aws.action, dict(aws.pairs))
        if aws.service == SNS:
            return sns_api.to_op(aws.action, sns_api.nest(aws.pairs), region)
        params = sqs_query.nest(aws.action, aws.pairs)
        path, _ = split_target(request.target)
        if is_queue_path(request.target) and not sqs_api.addresses_queue(aws.action):
            # AWS refuses an action of no queue sent to a queue's URL (ListQueues, CreateQueue, ...)
            raise unknown_action(aws.action)
        if "QueueUrl" not in params and path.strip("/"):
            params["QueueUrl"] = path  # addressed by the queue URL's path, as older SDKs do
        return sqs_api.to_op(aws.action, params, context)

    def _context(self, request: HttpRequest) -> sqs_api.Context:
        host = _header(request, "host") or "localhost"
        return sqs_api.Context(
            self._account_id, self._public_url or f"{self._scheme}://{host}", _header(request, "x-amzn-trace-id")
        )

    def _session(self, caller: Caller) -> Session:
        """The session of the caller's principal, for its region. A visit by URL gets one of its
        own, not kept: its region is whatever its ARN says, and the connection's sessions must not
        grow with what unsigned requests name."""
        if caller.by_url:
            return self._broker.session(caller.region or None, caller.principal)
        key = (caller.region, caller.principal)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._broker.session(caller.region or None, caller.principal)
        return session


def refusal(request: HttpRequest, code: str, message: str) -> HttpResponse:
    """The HTTP server's Refuser for the AWS port: a request refused before it was read whole (a
    body past the limit), or whose handling raised, gets the error in the shape its head shows (the
    broker's own endpoints: plain text)."""
    if lambda_api.is_lambda_path(request.target):
        if code == "RequestEntityTooLarge":
            code, message = "RequestTooLargeException", f"{message} Give larger code by Code.S3Bucket 'local' (a path)."
        return lambda_api.error_response(BrokerError(code, message), str(uuid.uuid4()))
    aws = shape_of_head(request)
    if aws is None:
        return text_refusal(request, code, message)
    return _error(aws, _in_sqs_words(aws, BrokerError(code, message), request), str(uuid.uuid4()))


def _in_sqs_words(aws: AwsRequest, error: BrokerError, request: HttpRequest) -> BrokerError:
    """A body past the listener's limit, as SQS refuses what it carries when its head names the
    send (the JSON protocol's X-Amz-Target): the limit is set so that such a body holds more than a
    message's most. Otherwise the refusal as it is."""
    if error.code != "RequestEntityTooLarge" or aws.protocol != JSON:
        return error
    if aws.action == "SendMessage":
        return message_too_long(SQS_MAX_MESSAGE_BYTES)
    if aws.action == "SendMessageBatch":
        sent = _header(request, "content-length")
        return batch_too_long(SQS_MAX_MESSAGE_BYTES, int(sent)) if sent and sent.isdigit() else error
    return error


def _header(request: HttpRequest, name: str) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


def _error(aws: AwsRequest, error: BrokerError, request_id: str) -> HttpResponse:
    """An error in the shape of the request's protocol and service."""
    kind = error.kind
    if aws.protocol == JSON:
        body = _json_encoder.encode({"__type": f"com.amazonaws.sqs#{kind.json_type}", "message": error.message})
        headers = [
            ("Content-Type", JSON_CONTENT_TYPE),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-query-error", f"{kind.query_code};{'Sender' if kind.sender_fault else 'Receiver'}"),
        ]
        return HttpResponse(kind.http_status, headers, body)
    if aws.service == SNS:
        status, body = sns_api.render_error(error, request_id)
    else:
        status, body = kind.http_status, sqs_query.render_error(kind.query_code, error.query_message, kind.sender_fault, request_id)
    return HttpResponse(status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body)

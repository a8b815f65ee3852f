"""The Lambda API's event source mapping operations (REST-JSON, as botocore models them): the
paths under /2015-03-31/event-source-mappings, their parameters (a JSON body for Create and
Update, the query string for List), their status codes, and authorisation as
its IAM action (lambda:CreateEventSourceMapping, ...) on the mapping's ARN. Thin: the mappings actor (actors/esm.py)
decides and answers; errors are rendered as the rest of the Lambda API renders them
(lambda_api.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote

import msgspec

from dovecote.actors.authorization import Decision, decide
from dovecote.actors.errors import BrokerError, access_denied
from dovecote.actors.esm import EventSourceMappings, MappingRequest
from dovecote.actors.esm_core import invalid_value
from dovecote.actors.json_depth import MAX_JSON_DEPTH, deeper_than
from dovecote.actors.principals import Principal

from .http_server import HttpRequest, HttpResponse, split_target
from .lambda_api import error_response

PREFIX = "/2015-03-31/event-source-mappings"
_JSON_TYPE = "application/json"
_encoder = msgspec.json.Encoder()


def is_mapping_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


# (method, with a UUID in the path) -> (the actor's action, the IAM action, the status of success)
_ROUTES = {
    ("POST", False): ("Create", "lambda:CreateEventSourceMapping", 202),
    ("GET", False): ("List", "lambda:ListEventSourceMappings", 200),
    ("GET", True): ("Get", "lambda:GetEventSourceMapping", 200),
    ("PUT", True): ("Update", "lambda:UpdateEventSourceMapping", 202),
    ("DELETE", True): ("Delete", "lambda:DeleteEventSourceMapping", 202),
}


async def serve(
    mappings: EventSourceMappings, request: HttpRequest, principal: Principal, region: str, account_id: str, request_id: str
) -> HttpResponse:
    """The response to a mapping request made by `principal` in `region`. Never raises
    BrokerError: it is rendered in Lambda's shape."""
    path, query = split_target(request.target)
    outcome = await answer(mappings, request.method, path, query, request.body, region, principal, account_id)
    if isinstance(outcome, BrokerError):
        return error_response(outcome, request_id)
    status, output = outcome
    return HttpResponse(status, [("Content-Type", _JSON_TYPE), ("x-amzn-RequestId", request_id)], _encoder.encode(output))


async def answer(
    mappings: EventSourceMappings, method: str, path: str, query: str, body: bytes, region: str, principal: Principal, account_id: str,
) -> tuple[int, dict[str, Any]] | BrokerError:
    """(status, output) of the request, or the error it gets."""
    mapping_uuid = unquote(path[len(PREFIX) :].strip("/"))
    if "/" in mapping_uuid:
        return BrokerError("ResourceNotFoundException", f"No such resource: {path}")
    route = _ROUTES.get((method, bool(mapping_uuid)))
    if route is None:
        return invalid_value(f"{method} is not an operation on {path}.")
    action, permission, status = route
    resource = f"arn:aws:lambda:{region}:{account_id}:event-source-mapping:{mapping_uuid or '*'}"
    decision = decide(principal, permission, resource, account_id)
    if decision is not Decision.ALLOWED:
        return access_denied(principal.arn(account_id), permission, resource, decision is Decision.DENIED)
    try:
        params = _body(body) if method in ("POST", "PUT") else dict(parse_qsl(query))
    except BrokerError as error:
        return error
    outcome = await mappings.ask(MappingRequest(action, region, mapping_uuid, params))
    if isinstance(outcome, BrokerError):
        return outcome
    return status, outcome


def _body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    if deeper_than(body):
        raise invalid_value(f"The request body nests more than {MAX_JSON_DEPTH} levels deep.")
    try:
        params = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise invalid_value(f"The request body is not valid JSON: {error}") from None
    if not isinstance(params, dict):
        raise invalid_value("The request body must be a JSON object.")
    return params

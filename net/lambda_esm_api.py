"""The Lambda API's event source mapping operations (REST-JSON, as botocore models them): the
paths under /2015-03-31/event-source-mappings, their parameters (a JSON body for Create and
Update, the query string for List) and their status codes. Thin: the mappings actor
(actors/esm.py) decides and answers."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote

import msgspec

from dovecote.actors.errors import BrokerError
from dovecote.actors.esm import EventSourceMappings, MappingRequest
from dovecote.actors.esm_core import invalid_value
from dovecote.actors.json_depth import MAX_JSON_DEPTH, deeper_than

from .http_server import HttpResponse

PREFIX = "/2015-03-31/event-source-mappings"


def is_mapping_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


# (method, with a UUID in the path) -> (the actor's action, the status of success)
_ROUTES = {
    ("POST", False): ("Create", 202),
    ("GET", False): ("List", 200),
    ("GET", True): ("Get", 200),
    ("PUT", True): ("Update", 202),
    ("DELETE", True): ("Delete", 202),
}


async def serve(
    mappings: EventSourceMappings, method: str, path: str, query: str, body: bytes, region: str
) -> tuple[int, dict[str, Any]] | BrokerError:
    """(status, output) of the request, or the error it gets."""
    mapping_uuid = unquote(path[len(PREFIX) :].strip("/"))
    if "/" in mapping_uuid:
        return BrokerError("ResourceNotFoundException", f"No such resource: {path}")
    route = _ROUTES.get((method, bool(mapping_uuid)))
    if route is None:
        return BrokerError("InvalidParameterValueException", f"{method} is not an operation on {path}.")
    action, status = route
    try:
        params = _body(body) if method in ("POST", "PUT") else dict(parse_qsl(query))
    except BrokerError as error:
        return error
    answer = await mappings.ask(MappingRequest(action, region, mapping_uuid, params))
    if isinstance(answer, BrokerError):
        return answer
    return status, answer


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


def action_of(method: str, path: str) -> str:
    """The operation's verb (Create, Get, ...), "" for none."""
    route = _ROUTES.get((method, bool(path[len(PREFIX) :].strip("/"))))
    return route[0] if route is not None else ""


def error_response(error: BrokerError, request_id: str) -> HttpResponse:
    """An error as Lambda's REST-JSON API answers it: its type in x-amzn-ErrorType and the body."""
    kind = error.kind
    status = error.lambda_status
    body = _encoder.encode({"Type": "User" if kind.sender_fault else "Service", "message": error.message})
    headers = [("Content-Type", "application/json"), ("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", _TYPES.get(error.code, error.code))]
    return HttpResponse(status, headers, body)


# Lambda's type where the table's row is another service's.
_TYPES = {"RequestThrottled": "TooManyRequestsException", "ServiceUnavailable": "ServiceException", "InternalError": "ServiceException"}
_encoder = msgspec.json.Encoder()

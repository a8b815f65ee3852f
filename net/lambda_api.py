"""The AWS Lambda REST-JSON API on the HTTP port, as botocore models it: the function's name (or
ARN) in the path, JSON bodies, errors as Lambda sends them (the `x-amzn-ErrorType` header naming
the code, a JSON body {Type, Message}). Thin: it routes, parses, asks authorization.py's one
function with the operation's IAM action (`lambda:CreateFunction` ...) and the function's ARN,
calls the broker's function registry and renders its answer.

Served: CreateFunction, GetFunction, GetFunctionConfiguration, ListFunctions, UpdateFunctionCode,
UpdateFunctionConfiguration, DeleteFunction, Invoke (RequestResponse, Event, DryRun),
Put/Get/DeleteFunctionConcurrency. Code comes as Code.ZipFile, or by dovecote's local-path
extension: Code.S3Bucket "local" and Code.S3Key the absolute path of a zip file (stored, as an
uploaded zip is) or of a directory (run where it is) on the broker's machine.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
import trio

from dovecote.actors.authorization import Decision, decide, lambda_action
from dovecote.actors.errors import BrokerError, access_denied
from dovecote.actors.function_core import LOCAL_CODE_BUCKET, MAX_SYNC_PAYLOAD_BYTES, NO_RESERVED_CONCURRENCY, Code, FunctionName, invalid_value, reserved_concurrency
from dovecote.actors.functions import FunctionRegistry
from dovecote.actors.principals import Principal
from dovecote.storage.records import FunctionChanged

from .http_server import HttpRequest, HttpResponse, split_target

MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024  # Lambda's limit on an asynchronous invocation's payload
MAX_CLIENT_CONTEXT_BYTES = 3583  # base64, as Lambda limits X-Amz-Client-Context
DEFAULT_PAGE = 50
_JSON_TYPE = "application/json"
_encoder = msgspec.json.Encoder()

# (method, path pattern) -> operation; {name} is the function's name or ARN, URL-encoded
_ROUTES = [
    ("POST", r"/2015-03-31/functions/?", "CreateFunction"),
    ("GET", r"/2015-03-31/functions/?", "ListFunctions"),
    ("GET", r"/2015-03-31/functions/(?P<name>[^/]+)", "GetFunction"),
    ("DELETE", r"/2015-03-31/functions/(?P<name>[^/]+)", "DeleteFunction"),
    ("GET", r"/2015-03-31/functions/(?P<name>[^/]+)/configuration", "GetFunctionConfiguration"),
    ("PUT", r"/2015-03-31/functions/(?P<name>[^/]+)/configuration", "UpdateFunctionConfiguration"),
    ("PUT", r"/2015-03-31/functions/(?P<name>[^/]+)/code", "UpdateFunctionCode"),
    ("POST", r"/2015-03-31/functions/(?P<name>[^/]+)/invocations", "Invoke"),
    ("PUT", r"/2017-10-31/functions/(?P<name>[^/]+)/concurrency", "PutFunctionConcurrency"),
    ("DELETE", r"/2017-10-31/functions/(?P<name>[^/]+)/concurrency", "DeleteFunctionConcurrency"),
    ("GET", r"/2019-09-30/functions/(?P<name>[^/]+)/concurrency", "GetFunctionConcurrency"),
]
_JSON_BODIES = frozenset({"CreateFunction", "UpdateFunctionConfiguration", "UpdateFunctionCode", "PutFunctionConcurrency"})
_COMPILED = [(method, re.compile(pattern), operation) for method, pattern, operation in _ROUTES]
_PREFIX = re.compile(r"/20(15-03-31|17-10-31|19-09-30)/functions(/|$)")


def is_lambda_path(target: str) -> bool:
    """Whether a request is for the Lambda API (by its path alone)."""
    return _PREFIX.match(split_target(target)[0]) is not None


class LambdaApi:
    def __init__(self, functions: FunctionRegistry, account_id: str) -> None:
        self._functions = functions
        self._account_id = account_id

    async def handle(self, request: HttpRequest, principal: Principal, region: str, request_id: str) -> HttpResponse:
        """The response to a Lambda API request made by `principal` in `region` ("" for the
        broker's default). Never raises BrokerError: it is rendered in Lambda's shape."""
        try:
            return await self._serve(request, principal, region, request_id)
        except BrokerError as error:
            return error_response(error, request_id)

    async def _serve(self, request: HttpRequest, principal: Principal, region: str, request_id: str) -> HttpResponse:
        path, query = split_target(request.target)
        operation, name_text = _route(request.method, path)
        parameters = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
        functions = self._functions
        function: FunctionName | None = None
        body = _json_object(request.body) if operation in _JSON_BODIES else {}
        if operation == "CreateFunction":
            name = body.get("FunctionName")
            resource = functions.arn(FunctionName(region, name if isinstance(name, str) else ""))
        elif operation == "ListFunctions":
            resource = "*"
        else:
            function = functions.resolve(name_text, region)
            resource = functions.arn(function)
            if parameters.get("Qualifier", "$LATEST") != "$LATEST":
                raise BrokerError("ResourceNotFoundException", f"Function not found: {resource}:{parameters['Qualifier']}")
        self._authorize(principal, lambda_action(operation), resource)
        if operation == "Invoke":
            assert function is not None
            return await self._invoke(request, function, request_id)
        answer = await self._manage(operation, body, region, function, parameters)
        headers = [("Content-Type", _JSON_TYPE), ("x-amzn-RequestId", request_id)]
        if answer is None:
            return HttpResponse(204, headers, b"")
        status = 201 if operation == "CreateFunction" else 200
        return HttpResponse(status, headers, _encoder.encode(answer))

    def _authorize(self, principal: Principal, action: str, resource: str) -> None:
        decision = decide(principal, action, resource, self._account_id)
        if decision is not Decision.ALLOWED:
            raise access_denied(principal.arn(self._account_id), action, resource, decision is Decision.DENIED)

    async def _manage(
        self, operation: str, body: dict[str, Any], region: str, function: FunctionName | None, parameters: dict[str, str]
    ) -> dict[str, Any] | None:
        """The answer's JSON (None: 204, no body). body: the request's JSON (empty for a GET or DELETE)."""
        functions = self._functions
        if operation == "ListFunctions":
            return self._list(parameters)
        assert function is not None or operation == "CreateFunction"
        if operation == "CreateFunction":
            code = body.get("Code")
            if not isinstance(code, dict):
                raise invalid_value("The Code parameter is required: give Code.ZipFile, or Code.S3Bucket 'local' and Code.S3Key a path.")
            return self.configuration(await functions.create(region, body, await _code(code)))
        assert function is not None
        if operation == "GetFunction":
            current = functions.get(function)
            answer: dict[str, Any] = {
                "Configuration": self.configuration(current),
                "Code": {"RepositoryType": "S3", "Location": functions.code_location(current)},
            }
            if current.reserved_concurrency != NO_RESERVED_CONCURRENCY:
                answer["Concurrency"] = {"ReservedConcurrentExecutions": current.reserved_concurrency}
            return answer
        if operation == "GetFunctionConfiguration":
            return self.configuration(functions.get(function))
        if operation == "UpdateFunctionConfiguration":
            return self.configuration(await functions.update_configuration(function, body))
        if operation == "UpdateFunctionCode":
            return self.configuration(await functions.update_code(function, body, await _code(body)))
        if operation == "DeleteFunction":
            await functions.delete(function)
            return None
        if operation == "PutFunctionConcurrency":
            reserved = reserved_concurrency(body.get("ReservedConcurrentExecutions"))
            await functions.set_concurrency(function, reserved)
            return {"ReservedConcurrentExecutions": reserved}
        if operation == "DeleteFunctionConcurrency":
            await functions.set_concurrency(function, NO_RESERVED_CONCURRENCY)
            return None
        assert operation == "GetFunctionConcurrency"
        reserved = functions.get(function).reserved_concurrency
        return {"ReservedConcurrentExecutions": reserved} if reserved != NO_RESERVED_CONCURRENCY else {}

    def _list(self, parameters: dict[str, str]) -> dict[str, Any]:
        """A page of the functions, by ARN; the marker is the ARN the next page starts at."""
        text = parameters.get("MaxItems", str(DEFAULT_PAGE))
        if not text.isdigit() or not 1 <= int(text) <= 10_000:
            raise invalid_value("MaxItems must be a whole number from 1 to 10000.")
        arns = sorted((self._functions.arn(f), f) for f in self._functions.functions())
        marker = parameters.get("Marker", "")
        page = [pair for pair in arns if pair[0] >= marker][: int(text) + 1]
        answer: dict[str, Any] = {"Functions": [self.configuration(f) for _, f in page[: int(text)]]}
        if len(page) > int(text):
            answer["NextMarker"] = page[-1][0]
        return answer

    async def _invoke(self, request: HttpRequest, function: FunctionName, request_id: str) -> HttpResponse:
        kind = _header(request, "x-amz-invocation-type") or "RequestResponse"
        if kind not in ("RequestResponse", "Event", "DryRun"):
            raise invalid_value(f"InvocationType must be RequestResponse, Event or DryRun; it is {kind[:40]!r}.")
        limit = MAX_EVENT_PAYLOAD_BYTES if kind == "Event" else MAX_SYNC_PAYLOAD_BYTES
        if len(request.body) > limit:
            raise BrokerError(
                "RequestTooLargeException", f"{len(request.body)} byte payload is too large for the {kind} invocation type (limit {limit} bytes)"
            )
        payload = request.body or b"{}"
        try:
            msgspec.json.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise BrokerError("InvalidRequestContentException", "Could not parse request body into json: the payload is not JSON.") from None
        if kind == "DryRun":
            self._functions.get(function)
            return HttpResponse(204, [("x-amzn-RequestId", request_id)], b"")
        invocation = await self._functions.invoke(
            self._functions.arn(function), payload, asynchronous=kind == "Event", client_context=_client_context(request)
        )
        # the invocation's id is the request's, as on AWS: the handler's context.aws_request_id
        headers = [("Content-Type", _JSON_TYPE), ("x-amzn-RequestId", invocation.request_id), ("X-Amz-Executed-Version", "$LATEST")]
        if invocation.function_error is not None:
            headers.append(("X-Amz-Function-Error", invocation.function_error))
        return HttpResponse(invocation.status_code, headers, invocation.payload)

    def configuration(self, function: FunctionChanged) -> dict[str, Any]:
        """A FunctionConfiguration, as Lambda answers it."""
        answer: dict[str, Any] = {
            "FunctionName": function.name,
            "FunctionArn": self._functions.arn(function),
            "Runtime": function.runtime,
            "Role": function.role,
            "Handler": function.handler,
            "CodeSize": function.code_size,
            "Description": function.description,
            "Timeout": function.timeout_s,
            "MemorySize": function.memory_mb,
            "LastModified": _timestamp(function.at_ms),
            "CodeSha256": function.code_sha256,
            "Version": "$LATEST",
            "RevisionId": function.revision_id,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["x86_64"],
        }
        if function.environment:
            answer["Environment"] = {"Variables": function.environment}
        return answer


def error_response(error: BrokerError, request_id: str) -> HttpResponse:
    """An error as Lambda sends it: its code in x-amzn-ErrorType, {Type, Message} in the body."""
    kind = error.kind
    body = _encoder.encode({"Type": "User" if kind.sender_fault else "Service", "Message": error.message})
    headers = [("Content-Type", _JSON_TYPE), ("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", error.code)]
    return HttpResponse(error.lambda_status, headers, body)


def _route(method: str, path: str) -> tuple[str, str]:
    """(operation, the function's name or ARN as the path gives it). Raises BrokerError."""
    known_path = False
    for route_method, pattern, operation in _COMPILED:
        match = pattern.fullmatch(path)
        if match is not None:
            known_path = True
            if route_method == method:
                return operation, unquote(match.groupdict().get("name") or "")
    if known_path:
        raise BrokerError("InvalidRequestContentException", f"{method} is not an operation of {path[:200]}.")
    raise BrokerError("ResourceNotFoundException", f"No Lambda operation is at {path[:200]}.")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = msgspec.json.decode(body or b"{}")
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise BrokerError("InvalidRequestContentException", "Could not parse request body into json.") from None
    if not isinstance(parsed, dict):
        raise BrokerError("InvalidRequestContentException", "The request body must be a JSON object.")
    return parsed


async def _code(given: dict[str, Any]) -> Code:
    """The code a CreateFunction's Code or an UpdateFunctionCode's body gives. Raises BrokerError."""
    if given.get("ZipFile") is not None:
        try:
            return Code(zip=base64.b64decode(str(given["ZipFile"]), validate=True))
        except (binascii.Error, ValueError):
            raise invalid_value("ZipFile must be the zip's bytes, base64-encoded.") from None
    bucket, key = given.get("S3Bucket"), given.get("S3Key")
    if bucket != LOCAL_CODE_BUCKET or not isinstance(key, str):
        raise invalid_value(
            "dovecote has no S3: give Code.ZipFile, or Code.S3Bucket 'local' and Code.S3Key the absolute path of a zip file "
            "or a directory on the broker's machine."
        )
    path = trio.Path(key)
    if not key.startswith("/"):
        raise invalid_value(f"Code.S3Key of bucket {LOCAL_CODE_BUCKET!r} must be an absolute path on the broker's machine.")
    if await path.is_dir():
        return Code(path=key)
    try:
        return Code(zip=await path.read_bytes())
    except OSError as error:
        raise invalid_value(f"Code.S3Key {key[:200]} cannot be read on the broker's machine: {error.strerror}.") from None


def _client_context(request: HttpRequest) -> str:
    """X-Amz-Client-Context, base64 of a JSON object, as the JSON the handler's context gets ("": none)."""
    given = _header(request, "x-amz-client-context")
    if not given:
        return ""
    try:
        if len(given) > MAX_CLIENT_CONTEXT_BYTES:
            raise ValueError("too long")
        context = json.loads(base64.b64decode(given, validate=True))
        if not isinstance(context, dict):
            raise ValueError("not an object")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BrokerError(
            "InvalidRequestContentException", f"Client context must be a valid Base64-encoded JSON object of at most {MAX_CLIENT_CONTEXT_BYTES} bytes."
        ) from None
    # Re-encoded on one line in ASCII: it travels to the runtime as a header value.
    return json.dumps(context, separators=(",", ":"))


def _header(request: HttpRequest, name: str) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


def _timestamp(at_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}+0000"



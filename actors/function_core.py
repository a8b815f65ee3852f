"""Lambda functions' rules, pure: what a function's name, ARN and configuration may be, what a
create, update or delete stores, and what a function's instance is started with. No I/O: the
registry (functions.py) stores what `plan_*` returns, then `apply`s it.

A function is named by (region, name): "" is the broker's default region, as for queues. Its code
is a zip (stored in the log and the `function_code` table) or, by dovecote's local-path
extension, a directory of the broker's machine it runs in (Code.S3Bucket "local", Code.S3Key the
directory's absolute path; an S3Key naming a zip file stores that zip).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec

from dovecote.storage.records import FunctionChanged, FunctionCodeStored, FunctionDeleted, Record

from .errors import BrokerError

PYTHON_RUNTIMES = frozenset({"python3.8", "python3.9", "python3.10", "python3.11", "python3.12", "python3.13", "python3.14"})
PROVIDED_RUNTIMES = frozenset({"provided", "provided.al2", "provided.al2023"})
RUNTIMES = PYTHON_RUNTIMES | PROVIDED_RUNTIMES
LOCAL_CODE_BUCKET = "local"  # Code.S3Bucket of the local-path extension
NO_RESERVED_CONCURRENCY = -1
MIN_TIMEOUT_S, MAX_TIMEOUT_S, DEFAULT_TIMEOUT_S = 1, 900, 3
MIN_MEMORY_MB, MAX_MEMORY_MB, DEFAULT_MEMORY_MB = 128, 10_240, 128
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's limit on a synchronous invocation's payload, and on its response
MAX_ENVIRONMENT_BYTES = 4096  # AWS's limit on a function's variables, names and values together
# The variables Lambda sets itself, which a function's Environment may not (AWS's list).
RESERVED_VARIABLES = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# A name, a partial ARN (ACCOUNT:function:NAME) or a whole one, each perhaps qualified (:$LATEST)
_REFERENCE = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d):(?P<account>\d{12}):function:"
    r"|(?P<partial_account>\d{12}):function:)?"
    r"(?P<name>[a-zA-Z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]{1,128}))?"
)
_VARIABLE_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_]+")


class FunctionName(NamedTuple):
    region: str  # "" for the broker's default
    name: str


def invalid_value(message: str) -> BrokerError:
    return BrokerError("InvalidParameterValueException", message)


def not_found(arn: str) -> BrokerError:
    """AWS's words for a function that does not exist."""
    return BrokerError("ResourceNotFoundException", f"Function not found: {arn}")


def function_arn(account_id: str, region: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account_id}:function:{name}"


def is_function_arn(text: str) -> bool:
    """Whether text is a whole function ARN (perhaps qualified), as an SNS lambda endpoint must be."""
    match = _REFERENCE.fullmatch(text)
    return match is not None and match["region"] is not None


def parse_reference(reference: str, account_id: str, default_region: str, region: str = "") -> tuple[FunctionName, str]:
    """A function's name or ARN (perhaps qualified) as (region, name) and its qualifier ("" for
    none); a name alone is of `region` ("": the default one). A region that is the default one is "". Raises InvalidParameterValueException for text
    that names no function, or a version other than $LATEST (dovecote keeps no versions), and
    ResourceNotFoundException for another account's."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise invalid_value(f"1 validation error detected: Value '{reference[:200]}' at 'functionName' failed to satisfy constraint: "
                            "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?"
                            "(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?")
    region = match["region"] or region
    account = match["account"] or match["partial_account"] or account_id
    name = FunctionName("" if region == default_region else region, match["name"])
    if account != account_id:
        raise not_found(function_arn(account, region or default_region, name.name))
    qualifier = match["qualifier"] or ""
    if qualifier and qualifier != "$LATEST":
        raise not_found(function_arn(account, region or default_region, name.name) + ":" + qualifier)
    return name, qualifier


class Code(NamedTuple):
    """A function's code as a request gives it: a zip, or a directory of the broker's machine."""

    zip: bytes = b""
    path: str = ""


def code_identity(code: Code) -> tuple[str, int]:
    """(CodeSha256, CodeSize) as Lambda shows them; a directory's is its path's."""
    content = code.zip if code.zip else code.path.encode()
    return base64.b64encode(hashlib.sha256(content).digest()).decode(), len(code.zip)


def check_zip(data: bytes) -> None:
    """Raises InvalidParameterValueException, in AWS's words, for bytes that are not a zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise invalid_value("Could not unzip uploaded file. Please check your file, then try to upload again.") from None


class FunctionsCore:
    """Every function's configuration, by (region, name): the registry's state."""

    def __init__(self, account_id: str, default_region: str, restored: list[FunctionChanged]) -> None:
        self.account_id = account_id
        self.default_region = default_region
        self.functions: dict[FunctionName, FunctionChanged] = {FunctionName(f.region, f.name): f for f in restored}

    def arn(self, function: FunctionName) -> str:
        return function_arn(self.account_id, function.region or self.default_region, function.name)

    def get(self, function: FunctionName) -> FunctionChanged:
        """Raises ResourceNotFoundException."""
        found = self.functions.get(function)
        if found is None:
            raise not_found(self.arn(function))
        return found

    def plan_create(self, region: str, params: Mapping[str, Any], code: Code, now_ms: int, revision_id: str) -> list[Record]:
        """The records of a CreateFunction (params: its JSON request). Raises BrokerError."""
        name = params.get("FunctionName")
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise invalid_value(f"1 validation error detected: Value '{str(name)[:200]}' at 'functionName' failed to satisfy "
                                "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+ (1 to 64 characters)")
        function = FunctionName("" if region == self.default_region else region, name)
        if function in self.functions:
            raise BrokerError("ResourceConflictException", f"Function already exist: {name}")
        if params.get("PackageType", "Zip") != "Zip":
            raise invalid_value("dovecote runs Zip packages only: PackageType must be Zip.")
        blank = FunctionChanged(
            now_ms, function.region, name, "", "", "", "", DEFAULT_TIMEOUT_S, DEFAULT_MEMORY_MB, {}, NO_RESERVED_CONCURRENCY, "", 0, "", "",
        )
        changed = _configured(blank, params, now_ms, revision_id, creating=True)
        return _with_code(changed, code, now_ms)

    def plan_update_configuration(
        self, function: FunctionName, params: Mapping[str, Any], now_ms: int, revision_id: str
    ) -> list[Record]:
        current = self.get(function)
        _check_revision(current, params)
        return [_configured(current, params, now_ms, revision_id, creating=False)]

    def plan_update_code(self, function: FunctionName, params: Mapping[str, Any], code: Code, now_ms: int, revision_id: str) -> list[Record]:
        current = self.get(function)
        _check_revision(current, params)
        return _with_code(msgspec.structs.replace(current, at_ms=now_ms, revision_id=revision_id), code, now_ms)

    def plan_concurrency(self, function: FunctionName, reserved: int, now_ms: int, revision_id: str) -> list[Record]:
        """PutFunctionConcurrency (reserved >= 0) or DeleteFunctionConcurrency (NO_RESERVED_CONCURRENCY)."""
        current = self.get(function)
        return [msgspec.structs.replace(current, at_ms=now_ms, reserved_concurrency=reserved, revision_id=revision_id)]

    def plan_delete(self, function: FunctionName, now_ms: int) -> list[Record]:
        self.get(function)
        return [FunctionDeleted(now_ms, function.region, function.name)]

    def apply(self, record: Record) -> None:
        match record:
            case FunctionChanged(region=region, name=name):
                self.functions[FunctionName(region, name)] = record
            case FunctionDeleted(region=region, name=name):
                self.functions.pop(FunctionName(region, name), None)


def _check_revision(current: FunctionChanged, params: Mapping[str, Any]) -> None:
    wanted = params.get("RevisionId")
    if wanted is not None and wanted != current.revision_id:
        raise BrokerError("PreconditionFailedException", "The Revision Id provided does not match the latest Revision Id. "
                          "Call the GetFunction/GetAlias API to retrieve the latest Revision Id")


def _with_code(changed: FunctionChanged, code: Code, now_ms: int) -> list[Record]:
    if code.zip:
        check_zip(code.zip)
    elif not code.path.startswith("/"):
        raise invalid_value(f"Code.S3Key of bucket {LOCAL_CODE_BUCKET!r} must be an absolute path on the broker's machine.")
    sha256, size = code_identity(code)
    changed = msgspec.structs.replace(changed, code_sha256=sha256, code_size=size, code_path=code.path)
    stored: list[Record] = [FunctionCodeStored(now_ms, changed.region, changed.name, sha256, code.zip)] if code.zip else []
    return [*stored, changed]


def reserved_concurrency(value: Any) -> int:
    """PutFunctionConcurrency's ReservedConcurrentExecutions. Raises BrokerError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid_value("ReservedConcurrentExecutions must be a whole number, 0 or more.")
    return value


def _configured(current: FunctionChanged, params: Mapping[str, Any], now_ms: int, revision_id: str, creating: bool) -> FunctionChanged:
    """The configuration after a request's settings (those it leaves out are kept)."""
    runtime = params.get("Runtime", current.runtime)
    if runtime not in RUNTIMES:
        raise invalid_value(
            f"Value {str(runtime)[:100]} at 'runtime' failed to satisfy constraint: dovecote runs the runtimes "
            + ", ".join(sorted(RUNTIMES)) + "."
        )
    handler = params.get("Handler", current.handler)
    if not isinstance(handler, str) or len(handler) > 128 or (handler and re.fullmatch(r"[^\s]+", handler) is None):
        raise invalid_value("Handler must be at most 128 characters, without white space.")
    if runtime in PYTHON_RUNTIMES and "." not in handler:
        raise invalid_value(f"Handler {handler!r} must name a module and a function in it (module.function) for runtime {runtime}.")
    role = params.get("Role", current.role)
    if creating and not role:
        raise invalid_value("The Role parameter is required.")
    timeout_s = _whole(params, "Timeout", current.timeout_s, MIN_TIMEOUT_S, MAX_TIMEOUT_S)
    memory_mb = _whole(params, "MemorySize", current.memory_mb, MIN_MEMORY_MB, MAX_MEMORY_MB)
    environment = current.environment
    if "Environment" in params:
        environment = _environment(params["Environment"])
    description = params.get("Description", current.description)
    if not isinstance(description, str) or len(description) > 256:
        raise invalid_value("Description must be text of at most 256 characters.")
    return msgspec.structs.replace(
        current, at_ms=now_ms, runtime=runtime, handler=handler, role=str(role), description=description, timeout_s=timeout_s,
        memory_mb=memory_mb, environment=environment, revision_id=revision_id,
    )


def _whole(params: Mapping[str, Any], key: str, current: int, least: int, most: int) -> int:
    value = params.get(key, current)
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise invalid_value(f"{key} must be a whole number from {least} to {most}; it is {str(value)[:40]}.")
    return value


def _environment(given: Any) -> dict[str, str]:
    variables = given.get("Variables", {}) if isinstance(given, dict) else None
    if not isinstance(variables, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
        raise invalid_value("Environment.Variables must map names to text.")
    reserved = sorted(RESERVED_VARIABLES.intersection(variables))
    if reserved:
        raise invalid_value(
            "Lambda was unable to configure your environment variables because the environment variables you have provided "
            f"contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {','.join(reserved)}"
        )
    bad = [name for name in variables if _VARIABLE_NAME.fullmatch(name) is None]
    if bad:
        raise invalid_value(f"Environment variable names must match [a-zA-Z]([a-zA-Z0-9_])+: {bad[0][:100]!r} does not.")
    if sum(len(k.encode()) + len(v.encode()) for k, v in variables.items()) > MAX_ENVIRONMENT_BYTES:
        raise invalid_value(f"Lambda was unable to configure your environment variables because the environment variables you have "
                            f"provided exceeded the {MAX_ENVIRONMENT_BYTES} bytes limit.")
    return dict(variables)


def instance_environment(function: FunctionChanged, region: str, code_root: str, broker_url: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment an instance of `function` is started with (AWS_LAMBDA_RUNTIME_API is
    added by whoever opens its Runtime API): Lambda's variables over `base` (PATH, LANG ...), the
    function's own over both. AWS_ENDPOINT_URL points the SDKs a handler uses at this broker
    (a function's Environment may point them elsewhere)."""
    log_group = f"/aws/lambda/{function.name}"
    lambda_variables = {
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": log_group,
        "AWS_LAMBDA_LOG_STREAM_NAME": "dovecote",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
        "_HANDLER": function.handler,
        "LAMBDA_TASK_ROOT": code_root,
        "LAMBDA_RUNTIME_DIR": code_root,
        "TZ": ":UTC",
    }
    return {**base, "AWS_ENDPOINT_URL": broker_url, **lambda_variables, **function.environment}


def error_payload(error_type: str, message: str) -> bytes:
    """An invocation's error as Lambda's answer carries it."""
    return msgspec.json.encode({"errorMessage": message, "errorType": error_type})

"""dovecote's runtime client for python3.x functions: runs a handler against the AWS Lambda
Runtime API that AWS_LAMBDA_RUNTIME_API names, as AWS's own runtime does. Standard library only,
and importing nothing of dovecote: the broker writes this file beside the functions' code and runs
it with the operator's interpreter (`python3 dovecote_lambda_runtime.py module.function`).

It loads the handler once (an error is posted to /init/error, then it exits), then loops: take
the next event, call the handler with it and a context object, post what it returns (JSON) to
/response or the exception it raised to /error, as {errorMessage, errorType, stackTrace}.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import sys
import time
import traceback

API_VERSION = "2018-06-01"


class LambdaContext:
    """The context object AWS's Python runtime hands a handler (the same attributes)."""

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str, client_context: str | None) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = json.loads(client_context) if client_context else None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def error_document(error: BaseException) -> dict:
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(traceback.extract_tb(error.__traceback__)),
    }


class RuntimeApi:
    def __init__(self, address: str) -> None:
        self._connection = http.client.HTTPConnection(address)

    def _call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[dict, bytes]:
        self._connection.request(method, f"/{API_VERSION}/runtime/{path}", body=body, headers=headers or {})
        response = self._connection.getresponse()
        payload = response.read()
        if response.status >= 300:
            raise RuntimeError(f"the Runtime API answered {path} with HTTP {response.status}: {payload[:200]!r}")
        return {name.lower(): value for name, value in response.getheaders()}, payload

    def next(self) -> tuple[dict, bytes]:
        return self._call("GET", "invocation/next")

    def respond(self, request_id: str, payload: bytes) -> None:
        self._call("POST", f"invocation/{request_id}/response", payload, {"Content-Type": "application/json"})

    def fail(self, request_id: str | None, document: dict) -> None:
        path = f"invocation/{request_id}/error" if request_id else "init/error"
        headers = {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": document["errorType"]}
        self._call("POST", path, json.dumps(document).encode(), headers)


def load_handler(name: str):
    module_name, _, function_name = name.rpartition(".")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as error:
        raise _Failure("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}") from None
    except SyntaxError as error:
        raise _Failure("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {error}") from None
    handler = getattr(module, function_name, None)
    if handler is None:
        raise _Failure("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return handler


class _Failure(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def main(argv: list[str]) -> int:
    api = RuntimeApi(os.environ["AWS_LAMBDA_RUNTIME_API"])
    task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    sys.path.insert(0, task_root)
    try:
        handler = load_handler(argv[1] if len(argv) > 1 else os.environ["_HANDLER"])
    except _Failure as failure:
        api.fail(None, {"errorMessage": str(failure), "errorType": failure.error_type, "stackTrace": []})
        return 1
    except Exception as error:  # noqa: BLE001 - the module's own code failed while loading
        api.fail(None, {**error_document(error), "errorType": f"Runtime.{type(error).__name__}"})
        return 1
    while True:
        headers, body = api.next()
        request_id = headers["lambda-runtime-aws-request-id"]
        context = LambdaContext(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms", "0")),
            headers.get("lambda-runtime-invoked-function-arn", ""),
            headers.get("lambda-runtime-client-context"),
        )
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("lambda-runtime-trace-id", "")
        try:
            result = handler(json.loads(body) if body else None, context)
            payload = json.dumps(result).encode()
        except Exception as error:  # noqa: BLE001 - the handler's failure is the invocation's answer
            document = error_document(error)
            document["requestId"] = request_id
            traceback.print_exc()
            api.fail(request_id, document)
            continue
        try:
            api.respond(request_id, payload)
        except RuntimeError as refused:  # an answer past Lambda's limit: the invocation failed, the runtime goes on
            print(refused, file=sys.stderr)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    sys.exit(main(sys.argv))

"""Lambda functions from a real `dovecote serve`, driven by unmodified boto3: a zipped Python
handler created and invoked (RequestResponse: its answer and context; Event: its effect on a file
its Environment names), a handler's error, a timeout, a crash and the restart after it, its output
in the broker's log with the request id, code and configuration updated, a `provided` runtime
whose bootstrap is a bash script speaking the Runtime API over /dev/tcp, the functions kept
through a restart of the broker, and bad input answered with AWS's errors."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import stat
import sys
import textwrap
import threading
import time
import zipfile

import boto3
import httpx
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..faults.serve import ServeProcess
from .test_boto3_sns import client

ROLE = "arn:aws:iam::000000000000:role/lambda-role"
HANDLER = textwrap.dedent(
    """
    import json, os, sys, time

    def main(event, context):
        action = event.get("action")
        if action == "fail":
            raise ValueError("asked to fail")
        if action == "sleep":
            time.sleep(event["seconds"])
        if action == "crash":
            os._exit(3)
        if action == "big":
            return "x" * (7 * 1024 * 1024)
        if action == "write":
            with open(os.environ["OUT_FILE"], "a") as out:
                out.write(event["text"] + "\\n")
        print("handled", action)
        return {
            "event": event, "function_name": context.function_name, "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(), "arn": context.invoked_function_arn,
            "region": os.environ["AWS_REGION"], "greeting": os.environ.get("GREETING"), "version": VERSION,
            "client_context": context.client_context,
        }

    VERSION = 1
    """
)
# A custom runtime in bash alone: the Runtime API over /dev/tcp, one connection per request.
BASH_BOOTSTRAP = textwrap.dedent(
    """\
    #!/bin/bash
    set -e
    host=${AWS_LAMBDA_RUNTIME_API%:*}
    port=${AWS_LAMBDA_RUNTIME_API#*:}
    while true; do
      exec 3<>/dev/tcp/$host/$port
      printf 'GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nHost: runtime\\r\\nConnection: close\\r\\n\\r\\n' >&3
      id=""
      while IFS= read -r line <&3; do
        line=${line%$'\\r'}
        [ -z "$line" ] && break
        case "${line,,}" in lambda-runtime-aws-request-id:*) id=${line#*: } ;; esac
      done
      body=$(cat <&3)
      exec 3<&-
      answer="{\\"shell\\": \\"bash\\", \\"handler\\": \\"$_HANDLER\\", \\"event\\": $body}"
      exec 3<>/dev/tcp/$host/$port
      printf 'POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\\r\\nHost: runtime\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s' "$id" "${#answer}" "$answer" >&3
      cat <&3 > /dev/null
      exec 3<&-
    done
    """
)


def zipped(files: dict[str, str], modes: dict[str, int] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (modes or {}).get(name, 0o644) << 16
            archive.writestr(info, text)
    return out.getvalue()


def invoke(lam, name: str, event: dict, **options) -> tuple[dict, dict]:
    """(the answer's JSON, the response without its payload)."""
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), **options)
    return json.loads(response.pop("Payload").read() or b"null"), response


def error_of(raised: pytest.ExceptionInfo) -> tuple[str, str, int]:
    response = raised.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def wait_for(predicate, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("the condition did not come true in time")


def test_a_python_function_runs_fails_times_out_crashes_and_survives_a_restart_of_the_broker(tmp_path):
    python = shutil.which("python3") or sys.executable
    broker = ServeProcess(tmp_path / "data", "--log-level", "INFO", "--function-python", python).start()
    url = f"http://127.0.0.1:{broker.http_port}"
    out_file = tmp_path / "effects.txt"
    try:
        lam = client(url, "lambda")
        created = lam.create_function(
            FunctionName="worker", Runtime="python3.12", Role=ROLE, Handler="handler.main", Timeout=2, MemorySize=256,
            Code={"ZipFile": zipped({"handler.py": HANDLER})},
            Environment={"Variables": {"OUT_FILE": str(out_file), "GREETING": "hello"}},
        )
        arn = "arn:aws:lambda:us-east-1:000000000000:function:worker"
        assert created["FunctionArn"] == arn and created["State"] == "Active" and created["MemorySize"] == 256
        assert created["ResponseMetadata"]["HTTPStatusCode"] == 201

        answer, response = invoke(lam, "worker", {"action": "hi"})
        assert response["StatusCode"] == 200 and "FunctionError" not in response
        assert answer["event"] == {"action": "hi"} and answer["function_name"] == "worker" and answer["arn"] == arn
        assert answer["region"] == "us-east-1" and answer["greeting"] == "hello" and 0 < answer["remaining_ms"] <= 2000
        assert answer["request_id"] == response["ResponseMetadata"]["RequestId"]
        logged_request = answer["request_id"]
        context = {"custom": {"device": "pump-7", "site": "Zürich"}}  # pretty-printed, not ASCII: still one header
        caller = base64.b64encode(json.dumps(context, indent=2, ensure_ascii=False).encode()).decode()
        assert invoke(lam, "worker", {}, ClientContext=caller)[0]["client_context"] == context
        with pytest.raises(ClientError) as raised:
            lam.invoke(FunctionName="worker", Payload=b"{}", ClientContext="not base64!")
        assert error_of(raised)[0] == "InvalidRequestContentException"

        # Event: accepted at once; its effect follows.
        _, accepted = invoke(lam, arn, {"action": "write", "text": "by event"}, InvocationType="Event")
        assert accepted["StatusCode"] == 202
        wait_for(lambda: out_file.exists() and "by event" in out_file.read_text())

        failed, response = invoke(lam, "worker", {"action": "fail"})
        assert response["FunctionError"] == "Unhandled"
        assert failed["errorType"] == "ValueError" and failed["errorMessage"] == "asked to fail" and failed["stackTrace"]

        started = time.monotonic()
        timed_out, response = invoke(lam, "worker", {"action": "sleep", "seconds": 30})
        assert time.monotonic() - started < 10
        assert response["FunctionError"] == "Unhandled" and timed_out["errorType"] == "Sandbox.Timedout"
        assert timed_out["errorMessage"].endswith("Task timed out after 2.00 seconds")

        crashed, response = invoke(lam, "worker", {"action": "crash"})
        assert response["FunctionError"] == "Unhandled" and crashed["errorType"] == "Runtime.ExitError"
        assert "exit status 3" in crashed["errorMessage"]
        assert invoke(lam, "worker", {"action": "again"})[0]["event"] == {"action": "again"}  # a new instance

        too_big, response = invoke(lam, "worker", {"action": "big"})
        assert response["FunctionError"] == "Unhandled" and too_big["errorType"] == "Function.ResponseSizeTooLarge"
        assert invoke(lam, "worker", {"action": "after"})[0]["event"] == {"action": "after"}

        updated = lam.update_function_code(FunctionName="worker", ZipFile=zipped({"handler.py": HANDLER.replace("VERSION = 1", "VERSION = 2")}))
        assert updated["CodeSha256"] != created["CodeSha256"]
        lam.update_function_configuration(FunctionName="worker", Environment={"Variables": {"OUT_FILE": str(out_file), "GREETING": "hi"}})
        answer, _ = invoke(lam, "worker", {})
        assert answer["version"] == 2 and answer["greeting"] == "hi"
    finally:
        assert broker.terminate() == 0  # its functions' processes stopped with it
    log = broker.process.stderr.read()
    assert f"function worker stdout [{logged_request}] handled hi" in log
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "functions").st_mode) == 0o700  # the unpacked code: the broker's user's alone

    broker = ServeProcess(tmp_path / "data", "--function-python", python).start()
    try:
        lam = client(f"http://127.0.0.1:{broker.http_port}", "lambda")
        kept = lam.get_function(FunctionName="worker")
        assert kept["Configuration"]["Environment"]["Variables"]["GREETING"] == "hi" and kept["Configuration"]["Timeout"] == 2
        assert invoke(lam, "worker", {})[0]["version"] == 2
    finally:
        broker.terminate()


def test_a_provided_runtime_and_the_lambda_apis_errors(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        lam = client(f"http://127.0.0.1:{broker.http_port}", "lambda")
        lam.create_function(
            FunctionName="shell", Runtime="provided.al2023", Role=ROLE, Handler="function.handler",
            Code={"ZipFile": zipped({"bootstrap": BASH_BOOTSTRAP}, {"bootstrap": 0o755})},
        )
        answer, response = invoke(lam, "shell", {"n": 1})
        assert answer == {"shell": "bash", "handler": "function.handler", "event": {"n": 1}} and "FunctionError" not in response
        assert invoke(lam, "shell", {"n": 2})[0]["event"] == {"n": 2}  # the same warm bootstrap, its loop's next turn

        # The local-path extension: a directory of the broker's machine, run where it is.
        directory = tmp_path / "local-function"
        directory.mkdir()
        (directory / "bootstrap").write_text(BASH_BOOTSTRAP)
        (directory / "bootstrap").chmod(0o755)
        lam.create_function(
            FunctionName="local", Runtime="provided.al2", Role=ROLE, Handler="h", Code={"S3Bucket": "local", "S3Key": str(directory)}
        )
        assert invoke(lam, "local", {"n": 3})[0] == {"shell": "bash", "handler": "h", "event": {"n": 3}}

        listed = lam.list_functions(MaxItems=1)
        assert [f["FunctionName"] for f in listed["Functions"]] == ["local"]
        assert [f["FunctionName"] for f in lam.list_functions(Marker=listed["NextMarker"])["Functions"]] == ["shell"]

        with pytest.raises(lam.exceptions.ResourceNotFoundException) as raised:
            lam.invoke(FunctionName="nope", Payload=b"{}")
        assert error_of(raised) == ("ResourceNotFoundException", "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope", 404)
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:nope")
        with pytest.raises(lam.exceptions.ResourceConflictException) as raised:
            lam.create_function(FunctionName="shell", Runtime="provided.al2", Role=ROLE, Handler="h", Code={"ZipFile": b"x"})
        assert error_of(raised) == ("ResourceConflictException", "Function already exist: shell", 409)
        bad = [
            ({"Runtime": "nodejs20.x"}, "runtime"),
            ({"Code": {"ZipFile": b"not a zip"}}, "Could not unzip uploaded file"),
            ({"Environment": {"Variables": {"AWS_REGION": "x"}}}, "Reserved keys used in this request: AWS_REGION"),
            ({"Timeout": 901}, "Timeout must be a whole number from 1 to 900"),
            ({"Handler": "nomodule"}, "must name a module and a function"),
            ({"Code": {"S3Bucket": "some-bucket", "S3Key": "code.zip"}}, "dovecote has no S3"),
        ]
        for change, words in bad:
            params = {
                "FunctionName": "bad", "Runtime": "python3.12", "Role": ROLE, "Handler": "handler.main",
                "Code": {"ZipFile": zipped({"handler.py": HANDLER})}, **change,
            }
            with pytest.raises(lam.exceptions.InvalidParameterValueException) as raised:
                lam.create_function(**params)
            code, message, status = error_of(raised)
            assert status == 400 and words in message, (change, message)
        with pytest.raises(ClientError) as raised:
            lam.invoke(FunctionName="shell", Payload=b"{not json")
        assert error_of(raised)[0] == "InvalidRequestContentException"

        lam.put_function_concurrency(FunctionName="shell", ReservedConcurrentExecutions=0)
        assert lam.get_function(FunctionName="shell")["Concurrency"] == {"ReservedConcurrentExecutions": 0}
        with pytest.raises(lam.exceptions.TooManyRequestsException) as raised:
            lam.invoke(FunctionName="shell", Payload=b"{}")
        assert error_of(raised)[2] == 429
        lam.delete_function_concurrency(FunctionName="shell")
        assert invoke(lam, "shell", {"n": 4})[0]["event"] == {"n": 4}

        # A handler that cannot be loaded, a bootstrap that is not there: the invocation fails, the broker stays up.
        lam.create_function(
            FunctionName="broken", Runtime="python3.12", Role=ROLE, Handler="missing.main", Code={"ZipFile": zipped({"handler.py": HANDLER})}
        )
        failed, response = invoke(lam, "broken", {})
        assert response["FunctionError"] == "Unhandled" and failed["errorType"] == "Runtime.ImportModuleError"
        assert "Unable to import module 'missing'" in failed["errorMessage"]
        lam.create_function(
            FunctionName="empty", Runtime="provided.al2023", Role=ROLE, Handler="h", Code={"ZipFile": zipped({"README": "no bootstrap"})}
        )
        failed, response = invoke(lam, "empty", {})
        assert response["FunctionError"] == "Unhandled" and failed["errorType"] == "Runtime.ExitError"
        assert "could not start" in failed["errorMessage"]

        lam.delete_function(FunctionName="shell")
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function_configuration(FunctionName="shell")
        assert broker.process.poll() is None  # the broker is up after all that
        reports = {r["name"]: r for r in httpx.get(f"http://127.0.0.1:{broker.http_port}/actors").json() if r["kind"] == "function"}
        assert reports["empty"]["actor"]["start_failures"] == 1 and "Runtime.ExitError" in reports["empty"]["last_error"]
        assert reports["local"]["actor"]["invocations"] == 1 and reports["local"]["actor"]["instances"] == 1
    finally:
        broker.terminate()


# A custom runtime that answers out of turn: another invocation's id, then its own twice.
UNRULY_BOOTSTRAP = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import json, os, urllib.error, urllib.request

    api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"

    def post(request_id, body):
        try:
            return urllib.request.urlopen(urllib.request.Request(api + request_id + "/response", body, method="POST")).status
        except urllib.error.HTTPError as refused:
            return refused.code

    while True:
        with urllib.request.urlopen(api + "next") as event:
            request_id = event.headers["Lambda-Runtime-Aws-Request-Id"]
        wrong = post("not-" + request_id, b'"stray"')
        first = post(request_id, json.dumps({{"stray_answer": wrong}}).encode())
        again = post(request_id, b'"twice"')
        with open(os.environ["OUT_FILE"], "a") as out:
            out.write(f"{{first}} {{again}}\\n")
    """
)


def test_the_runtime_api_takes_one_answer_per_invocation_from_the_instance_that_has_it(tmp_path):
    """Lambda's Runtime API answers 400 to a response for an invocation the instance does not
    hold, or holds no more; the function's answer is the one it gave first."""
    broker = ServeProcess(tmp_path / "data").start()
    out_file = tmp_path / "statuses.txt"
    try:
        lam = client(f"http://127.0.0.1:{broker.http_port}", "lambda")
        lam.create_function(
            FunctionName="unruly", Runtime="provided.al2023", Role=ROLE, Handler="h",
            Code={"ZipFile": zipped({"bootstrap": UNRULY_BOOTSTRAP}, {"bootstrap": 0o755})},
            Environment={"Variables": {"OUT_FILE": str(out_file)}},
        )
        for _ in range(2):  # the warm instance goes on serving
            answer, response = invoke(lam, "unruly", {})
            assert answer == {"stray_answer": 400} and "FunctionError" not in response
        wait_for(lambda: out_file.exists() and out_file.read_text().splitlines() == ["202 400", "202 400"])
    finally:
        assert broker.terminate() == 0


def test_a_function_runs_under_awslambdaric_the_reference_runtime_client(tmp_path):
    """AWS's own runtime client (awslambdaric), as a custom runtime's bootstrap runs it, against
    dovecote's Runtime API."""
    bootstrap = f"#!/bin/sh\nexec {sys.executable} -m awslambdaric \"$_HANDLER\"\n"
    broker = ServeProcess(tmp_path / "data").start()
    try:
        lam = client(f"http://127.0.0.1:{broker.http_port}", "lambda")
        lam.create_function(
            FunctionName="reference", Runtime="provided.al2023", Role=ROLE, Handler="handler.main",
            Code={"ZipFile": zipped({"bootstrap": bootstrap, "handler.py": HANDLER}, {"bootstrap": 0o755})},
        )
        answer, response = invoke(lam, "reference", {"action": "hi"})
        assert answer["event"] == {"action": "hi"} and answer["function_name"] == "reference"
        assert answer["request_id"] == response["ResponseMetadata"]["RequestId"] and answer["remaining_ms"] > 0
        failed, response = invoke(lam, "reference", {"action": "fail"})
        assert response["FunctionError"] == "Unhandled" and failed["errorType"] == "ValueError" and failed["errorMessage"] == "asked to fail"
    finally:
        broker.terminate()


KEYS = """
[[key]]
id = "invoker"
secret_env = "INVOKER_SECRET"
[[key.statement]]
Effect = "Allow"
Action = ["lambda:InvokeFunction", "lambda:GetFunction"]
Resource = "arn:aws:lambda:us-east-1:000000000000:function:open-*"
"""


def test_keys_authorise_each_lambda_operation_on_its_functions_arn(tmp_path):
    (tmp_path / "dovecote.toml").write_text(KEYS)
    broker = ServeProcess(
        tmp_path / "data", "--config", str(tmp_path / "dovecote.toml"), "--access-key", "root:root-secret",
        env={**os.environ, "INVOKER_SECRET": "invoker-secret"},
    ).start()
    try:
        url = f"http://127.0.0.1:{broker.http_port}"
        root = boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="root", aws_secret_access_key="root-secret")
        for name in ("open-door", "closed-door"):
            root.create_function(
                FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="h",
                Code={"ZipFile": zipped({"bootstrap": BASH_BOOTSTRAP}, {"bootstrap": 0o755})},
            )
        invoker = boto3.client(
            "lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="invoker", aws_secret_access_key="invoker-secret",
            config=Config(retries={"max_attempts": 1}),
        )
        assert invoke(invoker, "open-door", {"n": 1})[0]["event"] == {"n": 1}
        with pytest.raises(ClientError) as raised:
            invoker.invoke(FunctionName="closed-door", Payload=b"{}")
        code, message, status = error_of(raised)
        assert (code, status) == ("AccessDeniedException", 403)
        assert "not authorized to perform: lambda:InvokeFunction on resource: arn:aws:lambda:us-east-1:000000000000:function:closed-door" in message
        with pytest.raises(ClientError) as raised:
            invoker.create_function(FunctionName="open-new", Runtime="provided.al2023", Role=ROLE, Handler="h", Code={"ZipFile": b"x"})
        assert error_of(raised)[:1] == ("AccessDeniedException",)
        with pytest.raises(ClientError) as raised:
            invoker.list_functions()
        assert error_of(raised)[0] == "AccessDeniedException"
        unsigned = boto3.client("lambda", endpoint_url=url, region_name="us-east-1", config=Config(signature_version=UNSIGNED))
        with pytest.raises(ClientError) as raised:
            unsigned.invoke(FunctionName="open-door", Payload=b"{}")
        assert error_of(raised)[2] == 403
        assert [f["FunctionName"] for f in root.list_functions()["Functions"]] == ["closed-door", "open-door"]
    finally:
        broker.terminate()


def test_an_event_accepted_before_a_kill_9_runs_after_the_restart(tmp_path):
    """An asynchronous invocation answered 202 is stored: with the function's one instance busy
    when the broker is killed, the event runs once the broker is back."""
    python = shutil.which("python3") or sys.executable
    out_file = tmp_path / "effects.txt"
    broker = ServeProcess(tmp_path / "data", "--function-python", python).start()
    lam = client(f"http://127.0.0.1:{broker.http_port}", "lambda")
    lam.create_function(
        FunctionName="worker", Runtime="python3.12", Role=ROLE, Handler="handler.main", Timeout=30,
        Code={"ZipFile": zipped({"handler.py": HANDLER})}, Environment={"Variables": {"OUT_FILE": str(out_file)}},
    )
    lam.put_function_concurrency(FunctionName="worker", ReservedConcurrentExecutions=1)

    def occupy() -> None:
        with contextlib.suppress(ClientError, BotoCoreError):  # the broker is killed under it
            invoke(lam, "worker", {"action": "sleep", "seconds": 4})

    busy = threading.Thread(target=occupy)
    busy.start()
    actors = f"http://127.0.0.1:{broker.http_port}/actors"
    wait_for(lambda: any(r["kind"] == "function" and r["actor"]["busy"] == 1 for r in httpx.get(actors).json()))
    assert invoke(lam, "worker", {"action": "write", "text": "survived"}, InvocationType="Event")[1]["StatusCode"] == 202
    broker.kill9()
    busy.join()
    assert not out_file.exists()
    broker = ServeProcess(tmp_path / "data", "--function-python", python).start()
    try:
        wait_for(lambda: out_file.exists() and out_file.read_text() == "survived\n")
    finally:
        assert broker.terminate() == 0

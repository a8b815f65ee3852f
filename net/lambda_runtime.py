"""The AWS Lambda Runtime API, served to one function instance on a loopback port of its own, and
the instance's process (actors/functions.py's InstanceRunner).

Each instance gets a listener on 127.0.0.1 (port 0: the system picks), then its process is
started with AWS_LAMBDA_RUNTIME_API naming it, in a session of its own so that a kill reaches the
children its bootstrap starts. The process's requests are parsed with h11 and posted to the
function's actor as events; a `/next` waits for the actor's answer (the next invocation). What the
process writes to stdout and stderr goes to the broker's log, line by line, with the request id it
is working on. Served: GET /2018-06-01/runtime/invocation/next, POST .../invocation/{id}/response,
.../invocation/{id}/error and /2018-06-01/runtime/init/error; anything else is a 404.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable

import h11
import trio

from dovecote.actors.function_core import MAX_SYNC_PAYLOAD_BYTES, error_payload
from dovecote.actors.functions import Answered, InitFailed, InstanceEvent, InstanceSpec, InvocationEvent, NextWanted
from dovecote.actors.mailbox import ReplySlot

log = logging.getLogger("dovecote.functions")

RUNTIME_PREFIX = "/2018-06-01/runtime/"
MAX_LOG_LINE_BYTES = 16 * 1024
_JSON = [("Content-Type", "application/json")]


class ProcessRunner:
    """Runs each instance as a local process speaking the Runtime API (see the module's docstring)."""

    async def run(self, spec: InstanceSpec, post: Callable[[InstanceEvent], None]) -> str:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        async with listener:
            port = listener.socket.getsockname()[1]
            environment = {**spec.environment, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}"}
            instance = _Instance(spec, post)
            process = await trio.lowlevel.open_process(  # raises OSError: no such file, not executable ...
                spec.command, cwd=spec.cwd, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True,
            )
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.serve_listeners, instance.serve_connection, [listener])
                    assert process.stdout is not None and process.stderr is not None
                    nursery.start_soon(instance.relay, process.stdout, "stdout")
                    nursery.start_soon(instance.relay, process.stderr, "stderr")
                    code = await process.wait()
                    nursery.cancel_scope.cancel()
            finally:
                _kill_group(process)
                with trio.CancelScope(shield=True):  # reaped and its pipes closed, also when cancelled (a timeout)
                    await process.wait()
                    for pipe in (process.stdout, process.stderr):
                        if pipe is not None:
                            await pipe.aclose()
        return f"exit status {code}" if code >= 0 else f"killed by signal {-code}"


def _kill_group(process: trio.Process) -> None:
    """The process and every child it started (its session's group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Instance:
    def __init__(self, spec: InstanceSpec, post: Callable[[InstanceEvent], None]) -> None:
        self._spec = spec
        self._post = post
        self._request_id = ""  # the invocation it works on, for its log lines
        # What keeps its events outstanding at the function's actor to two (the actor's channel is
        # sized so): one next waiting, then one answer (of the invocation in hand) or init error.
        self._next_waiting = False
        self._unanswered = ""
        self._init_reported = False

    async def relay(self, stream: trio.abc.ReceiveStream, name: str) -> None:
        pending = b""
        async for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_LOG_LINE_BYTES:
                lines.append(pending)
                pending = b""
            for line in lines:
                self._log(line, name)
        if pending:
            self._log(pending, name)

    def _log(self, line: bytes, name: str) -> None:
        log.info(
            "function %s %s [%s] %s", self._spec.function, name, self._request_id or "init", line.decode(errors="replace").rstrip("\r"),
            extra={"function": self._spec.function, "request_id": self._request_id},
        )

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                request, body = await _read_request(connection, stream)
                if request is None:
                    return
                if body is None:
                    self._too_large(request)
                    await stream.send_all(_closing_answer(413, b'{"errorType": "RequestTooLarge", "errorMessage": "payload too large"}'))
                    return
                status, headers, answer = await self._answer(request, body)
                headers = [*headers, ("Content-Length", str(len(answer)))]
                await stream.send_all(connection.send(h11.Response(status_code=status, headers=headers)) or b"")
                await stream.send_all(connection.send(h11.Data(data=answer)) or b"")
                await stream.send_all(connection.send(h11.EndOfMessage()) or b"")
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    def _too_large(self, request: h11.Request) -> None:
        """A response past Lambda's limit fails its invocation, in Lambda's words."""
        parts = request.target.decode(errors="replace").split("?", 1)[0][len(RUNTIME_PREFIX):].split("/")
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response" and self._take_answer(parts[1]):
            message = f"Response payload size exceeded maximum allowed payload size ({MAX_SYNC_PAYLOAD_BYTES} bytes)."
            error = error_payload("Function.ResponseSizeTooLarge", message)
            self._post(Answered(self._spec.instance_id, parts[1], error, "Function.ResponseSizeTooLarge"))

    async def _answer(self, request: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        path = request.target.decode(errors="replace").split("?", 1)[0]
        method = request.method.decode()
        if not path.startswith(RUNTIME_PREFIX):
            return 404, _JSON, b'{"errorType": "InvalidRequest", "errorMessage": "not a Runtime API path"}'
        parts = path[len(RUNTIME_PREFIX):].split("/")
        instance_id = self._spec.instance_id
        if method == "GET" and parts == ["invocation", "next"]:
            if self._next_waiting:
                return 400, _JSON, b'{"errorType": "InvalidRequest", "errorMessage": "a next invocation is already awaited"}'
            slot: ReplySlot[InvocationEvent | None] = ReplySlot()
            self._request_id = ""
            self._next_waiting = True
            self._post(NextWanted(instance_id, slot))
            try:
                event = await slot.wait()
            finally:
                self._next_waiting = False
            if event is None:
                return 410, _JSON, b'{"errorType": "InstanceStopping", "errorMessage": "this instance is to stop"}'
            self._request_id = self._unanswered = event.request_id
            headers = [
                *_JSON,
                ("Lambda-Runtime-Aws-Request-Id", event.request_id),
                ("Lambda-Runtime-Deadline-Ms", str(event.deadline_ms)),
                ("Lambda-Runtime-Invoked-Function-Arn", event.function_arn),
                ("Lambda-Runtime-Trace-Id", f"Root=1-00000000-{event.request_id.replace('-', '')[:24]};Sampled=0"),
            ]
            if event.client_context:
                headers.append(("Lambda-Runtime-Client-Context", event.client_context))
            return 200, headers, event.payload
        if method == "POST" and len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            error_type = None
            if parts[2] == "error":
                error_type = _header(request, b"lambda-runtime-function-error-type") or "Unhandled"
            if not self._take_answer(parts[1]):
                return 400, _JSON, b'{"errorType": "InvalidRequestID", "errorMessage": "not the invocation in hand, or answered already"}'
            self._post(Answered(instance_id, parts[1], body, error_type))
            return 202, _JSON, b'{"status": "OK"}'
        if method == "POST" and parts == ["init", "error"]:
            if self._init_reported:
                return 400, _JSON, b'{"errorType": "InvalidRequest", "errorMessage": "the init error was reported already"}'
            self._init_reported = True
            self._post(InitFailed(instance_id, body, _header(request, b"lambda-runtime-function-error-type") or "Runtime.Unknown"))
            return 202, _JSON, b'{"status": "OK"}'
        return 404, _JSON, b'{"errorType": "InvalidRequest", "errorMessage": "no such Runtime API request"}'

    def _take_answer(self, request_id: str) -> bool:
        """Whether request_id is the invocation in hand, not answered yet; it is answered now."""
        if not request_id or request_id != self._unanswered:
            return False
        self._unanswered = ""
        return True


def _closing_answer(status: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode(errors="replace")
    return None


async def _read_request(connection: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request | None, bytes | None]:
    """The next request and its body (request None: the peer closed; body None: the body is larger
    than MAX_SYNC_PAYLOAD_BYTES, the rest left unread)."""
    request = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            connection.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_SYNC_PAYLOAD_BYTES:
                return request, None
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""

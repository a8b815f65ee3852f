"""Lambda functions, run on this machine: the registry and the function actors.

The interface others build on (event source mappings, SNS `lambda` subscriptions)::

    registry = broker.functions
    invocation = await registry.invoke(function, payload, asynchronous=False, message_ids=(), client_context="")

`function` is a name or ARN, qualified (`:$LATEST`) or not; `payload` the event's JSON bytes.
It returns an `Invocation`: `payload` (the function's answer, or Lambda's error JSON
{errorMessage, errorType, stackTrace}), `function_error` (None, or "Unhandled" as AWS sets
X-Amz-Function-Error), `request_id`, `status_code` (200; 202 for an asynchronous one, which returns
once it is stored, without a payload: it runs after a restart if it had not run, its outcome is
logged, and it is tried twice more on error, as AWS does). `message_ids` name the messages the
event carries, for the FunctionInvoked log record that `dovecote log --message-id` shows;
`client_context` is the caller's ClientContext (JSON), which a synchronous invocation passes to the
handler's context, as Lambda does. It raises BrokerError: ResourceNotFoundException for a function
that does not exist (or is deleted meanwhile); TooManyRequestsException (retryable) when the
function's reserved concurrency is 0 or it holds as many invocations, or payload bytes, as it may;
ServiceUnavailable while its actor is being rebuilt after a failure, or when the store refuses an
asynchronous one; InternalError for one its actor held when the actor failed. It waits while the function runs, at most its Timeout (plus its
instance's start-up); cancelling it gives up the wait, not the run.

Theory of operation
-------------------
The registry (`FunctionRegistry`) is the one task that creates, changes and deletes functions:
the Lambda API's management requests reach it through its mailbox; it stores each change
(function_core.py plans it), applies it, and tells the function's actor. Invocations do not pass
through it: `invoke` finds the function's actor in the registry's table (a plain lookup) and hands
the invocation to that actor's mailbox.

Each function is one actor (`FunctionActor`), owning its instances: local processes, each with
its own Runtime API on a loopback port (served by the injected `InstanceRunner`, net/
lambda_runtime.py), as each AWS execution environment has its own. An instance asks for work
(`/next`), which the actor answers with the oldest pending invocation; a warm instance is reused;
a new one is started while invocations wait and the function has fewer than its concurrency limit
(the broker's `function_max_instances`, or its ReservedConcurrentExecutions if fewer). An invocation that
outlives its Timeout is answered with AWS's "Task timed out" error and its instance is killed. An
instance that ends while it runs an invocation fails that invocation (Runtime.ExitError); one that
fails before it asks for work (init error, a crash, a bootstrap that cannot start) fails the
oldest waiting invocation, and the next start waits longer after each such failure in a row
(FunctionSettings.restart_backoff_s). The actor itself is supervised (`_supervise`): one that
raises is rebuilt from the store after a pause, as a queue's actor is. A changed function's idle instances are stopped at once, busy ones
when they finish, so every invocation after the change runs the new code or configuration.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import pkgutil
import shutil
import tempfile
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import msgspec
import trio

from dovecote.storage.private import make_private_dir
from dovecote.storage.records import FunctionChanged, FunctionDeleted, FunctionEventQueued, FunctionInvoked, Record
from dovecote.storage.store import StorageError, Store
from dovecote.storage.writer import LogWriter, WriterOverloaded

from .clock import Clock
from .config import BrokerConfig
from .directory import Health
from .errors import BrokerError, actor_failed, actor_stopped, overloaded, shutting_down, storage_failed
from .function_core import (
    PYTHON_RUNTIMES,
    Code,
    FunctionName,
    FunctionsCore,
    error_payload,
    instance_environment,
    not_found,
    parse_reference,
)
from .mailbox import ReplySlot
from .supervisor import Restarts

log = logging.getLogger("dovecote.functions")

INIT_ALLOWANCE_S = 10.0  # how long an invocation may wait for an instance to start, beyond its Timeout (AWS's init limit)
ASYNC_RETRY_DELAYS_S = (60.0, 120.0)  # an asynchronous invocation that failed is tried again after these, as AWS does
MAX_FUNCTION_INSTANCES = 1000  # the most FunctionSettings.max_instances may be
INSTANCE_EVENTS_CAPACITY = 2 * MAX_FUNCTION_INSTANCES + 16  # each instance has at most two events outstanding


class Invocation(msgspec.Struct, frozen=True):
    """What an invocation answered (see the module's docstring)."""

    payload: bytes
    function_error: str | None
    request_id: str
    status_code: int = 200


# --- what instances tell their actor (posted by the InstanceRunner) ------------------------------
class InvocationEvent(NamedTuple):
    """What an instance's /next is answered with."""

    request_id: str
    payload: bytes
    deadline_ms: int  # wall-clock ms
    function_arn: str
    client_context: str = ""  # the caller's ClientContext, JSON ("": none)


class NextWanted(NamedTuple):
    instance_id: int
    reply: Callable[[InvocationEvent | None], None]  # None: the instance is to stop


class Answered(NamedTuple):
    instance_id: int
    request_id: str
    payload: bytes
    error_type: str | None  # None: the response; else what the runtime's /error named


class InitFailed(NamedTuple):
    instance_id: int
    payload: bytes
    error_type: str


class InstanceEnded(NamedTuple):
    instance_id: int
    why: str


InstanceEvent = NextWanted | Answered | InitFailed | InstanceEnded


class InstanceSpec(NamedTuple):
    instance_id: int
    function: str  # its name, for the log
    command: list[str]
    cwd: str
    environment: dict[str, str]


class InstanceRunner(Protocol):
    async def run(self, spec: InstanceSpec, post: Callable[[InstanceEvent], None]) -> str:
        """Open a Runtime API on a loopback port, start spec.command with AWS_LAMBDA_RUNTIME_API
        naming it, post each Runtime API request as an event, and return why the process ended
        ("exit status 1") when it ends. Cancelled: kills the process (and its children). Raises
        OSError when the process cannot be started."""


class FunctionStatistics(NamedTuple):
    """A function actor's counters, as /actors shows them (counted since the broker started)."""

    instances: int  # processes running or starting
    busy: int  # of them, running an invocation
    waiting: int  # invocations waiting for an instance (asynchronous retries included)
    invocations: int  # answered
    errors: int  # of them, with X-Amz-Function-Error
    timeouts: int  # of them, for their Timeout
    start_failures: int  # instances that failed before they asked for work


class FunctionSettings(msgspec.Struct, frozen=True):
    """How this machine runs functions (ServeConfig and the configuration file set them)."""

    python: str = "python3"  # the interpreter of python3.x runtimes: a name on PATH or a path
    max_instances: int = 4  # per function, at most; its ReservedConcurrentExecutions may say fewer
    max_waiting_bytes: int = 64 * 1024 * 1024  # per function: the payloads of the invocations it holds, waiting or running
    restart_backoff_s: tuple[float, ...] = (0.0, 0.5, 2.0, 10.0, 30.0)  # before a start, by failures in a row
    # Unpack zips in a worker thread, beside the event loop (not in tests on the autojump clock,
    # whose time would jump while a thread works).
    unpack_in_thread: bool = True


# --- the actors' mail ----------------------------------------------------------------------------
class _Invoke(NamedTuple):
    request_id: str
    payload: bytes
    reply: Callable[[Invocation | BrokerError], None]
    message_ids: Sequence[str]
    queued_ms: int = 0  # asynchronous: its FunctionEventQueued's at_ms (0: a synchronous one)
    client_context: str = ""


class _Reconfigure(NamedTuple):
    function: FunctionChanged


class _Stop(NamedTuple):
    deleted: bool


class _Pending:
    __slots__ = (
        "request_id", "payload", "reply", "queued_ms", "client_context", "message_ids", "wait_until", "started_ms", "attempt", "due",
    )

    def __init__(self, invoke: _Invoke, wait_until: float, started_ms: int) -> None:
        self.request_id = invoke.request_id
        self.payload = invoke.payload
        self.reply = invoke.reply
        self.queued_ms = invoke.queued_ms
        self.client_context = invoke.client_context
        self.message_ids = list(invoke.message_ids)
        self.wait_until = wait_until  # trio time: given up if no instance took it by then
        self.started_ms = started_ms
        self.attempt = 1
        self.due = -math.inf  # trio time: a retried asynchronous invocation waits until then

    @property
    def asynchronous(self) -> bool:
        return self.queued_ms != 0


class _Instance:
    __slots__ = ("instance_id", "scope", "generation", "waiting", "current", "deadline", "ready")

    def __init__(self, instance_id: int, generation: int) -> None:
        self.instance_id = instance_id
        self.scope = trio.CancelScope()
        self.generation = generation
        self.waiting: Callable[[InvocationEvent | None], None] | None = None  # its /next, unanswered
        self.current: _Pending | None = None
        self.deadline = math.inf
        self.ready = False  # it asked for work once: its start-up succeeded


def throttled() -> BrokerError:
    return BrokerError("TooManyRequestsException", "Rate Exceeded: the function's reserved concurrency is 0.")


def _nobody(_: Invocation | BrokerError) -> None:
    """The reply of an asynchronous invocation: its caller was answered 202 when it was stored."""


class FunctionActor:
    """One function's instances and invocations (see the module's docstring). Owned by its own task."""

    def __init__(
        self, function: FunctionChanged, registry: FunctionRegistry, restored: Sequence[FunctionEventQueued] = (), health: Health | None = None
    ) -> None:
        """restored: its asynchronous invocations stored and not yet done, run first. health: its
        supervisor's record (kept across its restarts)."""
        self._function = function
        self._registry = registry
        self._settings = registry.settings
        self._capacity = registry.config.mailbox_capacity
        self._send, self._receive = trio.open_memory_channel[Any](self._capacity + INSTANCE_EVENTS_CAPACITY)
        self._instances: dict[int, _Instance] = {}
        self._pending: deque[_Pending] = deque()
        self._retries: list[_Pending] = []
        self._generation = 0
        self._failures_in_row = 0
        self._start_after = -math.inf
        self._next_instance_id = 1
        self._stopped = False
        self.health = health if health is not None else Health()  # a failed start is its last error too
        self.failed = False  # it raised: it takes nothing more (its supervisor answers what it held)
        self._invocations = self._errors = self._timeouts = self._start_failures = 0
        self._held = len(restored)  # invocations admitted and not yet answered for the last time (admit)
        self._held_bytes = sum(len(event.payload) for event in restored)
        for event in restored:
            self._accept(_Invoke(event.request_id, event.payload, _nobody, event.message_ids, event.at_ms))

    @property
    def function(self) -> FunctionChanged:
        return self._function

    def statistics(self) -> FunctionStatistics:
        """Read without waiting, from any task."""
        busy = sum(1 for instance in self._instances.values() if instance.current is not None)
        waiting = len(self._pending) + len(self._retries)
        return FunctionStatistics(
            len(self._instances), busy, waiting, self._invocations, self._errors, self._timeouts, self._start_failures
        )

    # --- from other tasks, never waiting -----------------------------------------------------
    def admit(self, payload_bytes: int) -> None:
        """Count an invocation about to be posted among those it holds, as a bounded mailbox
        counts its mail: at most `mailbox_capacity` of them, of `max_waiting_bytes` together,
        until each is answered for the last time. Raises TooManyRequestsException past either,
        ServiceUnavailable while the actor is being restarted or after it failed too often."""
        if self.failed:
            what = f"The actor of function {self._function.name}"
            raise actor_stopped(what, self.health.restarts) if self.health.stopped else BrokerError("ServiceUnavailable", f"{what} failed and is restarting; retry.")
        if self._held >= self._capacity or self._held_bytes + payload_bytes > self._settings.max_waiting_bytes:
            raise BrokerError(
                "TooManyRequestsException",
                f"Rate Exceeded: function {self._function.name} holds {self._held} invocations ({self._held_bytes} bytes) not yet answered.",
            )
        self._held += 1
        self._held_bytes += payload_bytes

    def post(self, message: object) -> None:
        """Invocations (admitted first), instance events, reconfiguration and stop. The channel
        holds them all: admit bounds the invocations, and the Runtime API server lets each instance
        have at most two events outstanding. Once the actor has ended, an invocation is answered
        ShuttingDown and anything else is dropped."""
        try:
            self._send.send_nowait(message)
        except trio.ClosedResourceError:
            if isinstance(message, _Invoke):
                message.reply(shutting_down())

    # --- the actor's task ----------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._dispatch()  # the restored asynchronous invocations
            while not self._stopped:
                with trio.move_on_at(self._next_deadline()):
                    message = await self._receive.receive()
                    self._handle(message)
                self._expire(trio.current_time())
                self._dispatch()
            self._send.close()
            self._refuse_the_rest(shutting_down())
            nursery.cancel_scope.cancel()

    def _handle(self, message: object) -> None:
        match message:
            case _Invoke():
                if self._function.reserved_concurrency == 0 and not message.queued_ms:
                    self._held -= 1
                    self._held_bytes -= len(message.payload)
                    message.reply(throttled())
                else:
                    self._accept(message)
            case NextWanted(instance_id=instance_id, reply=reply):
                instance = self._instances.get(instance_id)
                if instance is None or instance.generation != self._generation:
                    reply(None)
                    self._kill(instance_id)
                    return
                if not instance.ready:
                    instance.ready = True
                    self._failures_in_row = 0
                instance.waiting = reply
            case Answered(instance_id=instance_id, request_id=request_id):
                instance = self._instances.get(instance_id)
                if instance is None or instance.current is None or instance.current.request_id != request_id:
                    return  # an answer after its timeout, or to a request this instance did not get
                pending, instance.current, instance.deadline = instance.current, None, math.inf
                error = "Unhandled" if message.error_type is not None else None
                self._finish(pending, message.payload, error, message.error_type or "")
                if instance.generation != self._generation:
                    self._kill(instance_id)
            case InitFailed(instance_id=instance_id, payload=payload, error_type=error_type):
                self._kill(instance_id)
                self._start_failed(payload, error_type)
            case InstanceEnded(instance_id=instance_id, why=why):
                instance = self._instances.pop(instance_id, None)
                if instance is None:
                    return  # killed by this actor: whatever it ran is already answered
                log.info("function %s: instance %d ended (%s)", self._function.name, instance_id, why, extra={"function": self._function.name})
                if instance.current is not None:
                    message_text = f"RequestId: {instance.current.request_id} Error: Runtime exited with error: {why}"
                    self._finish(instance.current, error_payload("Runtime.ExitError", message_text), "Unhandled", "Runtime.ExitError")
                elif not instance.ready:
                    self._start_failed(error_payload("Runtime.ExitError", f"Runtime exited with error: {why}"), "Runtime.ExitError")
            case _Reconfigure(function=function):
                self._function = function
                self._generation += 1
                self._failures_in_row = 0
                self._start_after = -math.inf
                for instance in list(self._instances.values()):
                    if instance.current is None:
                        self._kill(instance.instance_id)
            case _Stop(deleted=deleted):
                self._stopped = True
                refusal = not_found(self._registry.arn(self._function)) if deleted else shutting_down()
                for pending in [*self._pending, *self._retries, *(i.current for i in self._instances.values() if i.current)]:
                    pending.reply(refusal)
                self._pending.clear()
                self._retries.clear()
                for instance_id in list(self._instances):
                    self._kill(instance_id)

    def _accept(self, invoke: _Invoke) -> None:
        now = trio.current_time()
        self._pending.append(_Pending(invoke, now + self._function.timeout_s + INIT_ALLOWANCE_S, self._registry.clock.wall_ms()))

    def _limit(self) -> int:
        """Processes at once: the broker's cap (a device's), or fewer if the function reserves fewer."""
        reserved = self._function.reserved_concurrency
        return min(reserved, self._settings.max_instances) if reserved >= 0 else self._settings.max_instances

    def _dispatch(self) -> None:
        """Hand waiting invocations to idle instances; start instances for those left."""
        if self._stopped:
            return
        now = trio.current_time()
        for retry in [r for r in self._retries if r.due <= now]:
            self._retries.remove(retry)
            retry.wait_until = now + self._function.timeout_s + INIT_ALLOWANCE_S
            self._pending.append(retry)
        for instance in self._instances.values():
            if not self._pending:
                break
            if instance.waiting is not None and instance.generation == self._generation:
                pending = self._pending.popleft()
                reply, instance.waiting = instance.waiting, None
                instance.current = pending
                instance.deadline = now + self._function.timeout_s
                deadline_ms = self._registry.clock.wall_ms() + self._function.timeout_s * 1000
                reply(InvocationEvent(pending.request_id, pending.payload, deadline_ms, self._registry.arn(self._function), pending.client_context))
        starting = sum(1 for i in self._instances.values() if not i.ready and i.generation == self._generation)
        wanted = min(len(self._pending) - starting, self._limit() - len(self._instances))
        if wanted > 0 and now >= self._start_after:
            for _ in range(wanted):
                self._start_instance()

    def _start_instance(self) -> None:
        instance = _Instance(self._next_instance_id, self._generation)
        self._next_instance_id += 1
        self._instances[instance.instance_id] = instance
        self._nursery.start_soon(self._run_instance, instance, self._function, name=f"function:{self._function.name}:{instance.instance_id}")

    async def _run_instance(self, instance: _Instance, function: FunctionChanged) -> None:
        why = "stopped"
        with instance.scope:
            try:
                spec = await self._registry.instance_spec(function, instance.instance_id)
                why = await self._registry.runner.run(spec, self.post)
            except OSError as error:
                why = f"could not start: {error}"
            except BrokerError as error:
                why = error.message
            except Exception as error:  # noqa: BLE001 - one instance's failure is its function's, never the broker's
                log.exception("function %s: instance %d failed", function.name, instance.instance_id)
                why = f"failed: {error!r}"
        self.post(InstanceEnded(instance.instance_id, why))

    def _kill(self, instance_id: int) -> None:
        instance = self._instances.pop(instance_id, None)
        if instance is not None:
            if instance.waiting is not None:
                instance.waiting(None)
            instance.scope.cancel()

    def _start_failed(self, payload: bytes, error_type: str) -> None:
        """An instance failed before it asked for work: the oldest waiting invocation gets the
        failure; the next start waits longer."""
        self._failures_in_row += 1
        self._start_failures += 1
        self.health.last_error = f"{error_type}: {payload[:200].decode(errors='replace')}"
        backoff = self._settings.restart_backoff_s
        self._start_after = trio.current_time() + backoff[min(self._failures_in_row - 1, len(backoff) - 1)]
        log.warning(
            "function %s failed to start (%d in a row): %s", self._function.name, self._failures_in_row, payload[:500].decode(errors="replace"),
            extra={"function": self._function.name},
        )
        if self._pending:
            self._finish(self._pending.popleft(), payload, "Unhandled", error_type)

    def _expire(self, now: float) -> None:
        for instance in list(self._instances.values()):
            if instance.current is not None and instance.deadline <= now:
                pending = instance.current
                instance.current = None
                self._kill(instance.instance_id)
                message = f"RequestId: {pending.request_id} Error: Task timed out after {self._function.timeout_s:.2f} seconds"
                self._finish(pending, error_payload("Sandbox.Timedout", message), "Unhandled", "Sandbox.Timedout")
        while self._pending and self._pending[0].wait_until <= now:
            pending = self._pending.popleft()
            message = f"RequestId: {pending.request_id} Error: no instance of the function started within {self._function.timeout_s + INIT_ALLOWANCE_S:.2f} seconds"
            self._finish(pending, error_payload("Sandbox.Timedout", message), "Unhandled", "Sandbox.Timedout")

    def answer_all(self, error: BrokerError) -> None:
        """After it failed (from its supervisor's task): every invocation it held or was sent is
        answered with `error`; asynchronous ones stay stored, for the actor that replaces it."""
        self.failed = True
        held = [*self._pending, *self._retries, *(i.current for i in self._instances.values() if i.current is not None)]
        for pending in held:
            pending.reply(error)
        self._refuse_the_rest(error)

    def _refuse_the_rest(self, error: BrokerError) -> None:
        """The invocations still in the channel, answered with `error` (the actor has ended)."""
        while True:
            try:
                message = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if isinstance(message, _Invoke):
                message.reply(error)

    def _next_deadline(self) -> float:
        deadlines = [i.deadline for i in self._instances.values()]
        if self._pending:
            deadlines.append(self._pending[0].wait_until)
            if len(self._instances) < self._limit() and self._start_after > trio.current_time():
                deadlines.append(self._start_after)  # a start waiting out its back-off
        deadlines += [r.due for r in self._retries]
        return min(deadlines, default=math.inf)

    def _finish(self, pending: _Pending, payload: bytes, function_error: str | None, error_type: str) -> None:
        """An invocation's outcome: answered (or, asynchronous and failed, retried), and logged;
        an asynchronous one's last attempt ends its stored event."""
        function = self._function
        self._invocations += 1
        self._errors += function_error is not None
        self._timeouts += error_type == "Sandbox.Timedout"
        retried = pending.asynchronous and function_error is not None and pending.attempt <= len(ASYNC_RETRY_DELAYS_S)
        self._registry.record(FunctionInvoked(
            pending.started_ms, function.region, function.name, pending.request_id, "Event" if pending.asynchronous else "RequestResponse",
            function_error or "ok", error_type, self._registry.clock.wall_ms() - pending.started_ms, pending.message_ids,
            0 if retried else pending.queued_ms,
        ))
        pending.reply(Invocation(payload, function_error, pending.request_id))  # nobody waits for an asynchronous one
        if not retried:
            self._held -= 1
            self._held_bytes -= len(pending.payload)
        if retried:
            pending.due = trio.current_time() + ASYNC_RETRY_DELAYS_S[pending.attempt - 1]
            pending.attempt += 1
            self._retries.append(pending)


# --- the registry ----------------------------------------------------------------------------------
class _Manage(NamedTuple):
    """A management request for the registry's task: `plan` says what to store (run there)."""

    plan: Callable[[FunctionsCore], list[Record]]
    reply: ReplySlot[FunctionChanged | None | BrokerError]


class FunctionRegistry:
    def __init__(
        self,
        config: BrokerConfig,
        store: Store,
        writer: LogWriter,
        clock: Clock,
        runner: InstanceRunner | None,
        code_dir: str | os.PathLike[str] | None,
        settings: FunctionSettings = FunctionSettings(),
        base_environment: Mapping[str, str] | None = None,
    ) -> None:
        """runner: starts instances (None: functions can be managed but not run, and invoking one
        is refused). code_dir: where zips are unpacked to run (a directory of the data directory).
        base_environment: what every instance's environment starts from (default: PATH, LANG and
        the like of the broker's)."""
        self.config = config
        self.clock = clock
        self.settings = settings
        self.runner = runner
        self._store = store
        self._writer = writer
        self._code_dir = Path(code_dir) if code_dir is not None else None
        self._base_environment = dict(base_environment) if base_environment is not None else _base_environment()
        self._core = FunctionsCore(config.account_id, config.region, store.load_functions())
        self._restored_events: dict[FunctionName, list[FunctionEventQueued]] = {}
        for event in store.load_function_events():
            self._restored_events.setdefault(FunctionName(event.region, event.name), []).append(event)
        self._actors: dict[FunctionName, FunctionActor] = {}
        self._send, self._mailbox = trio.open_memory_channel[_Manage](config.lifecycle_capacity)
        self._nursery: trio.Nursery | None = None

    # --- the interface ---------------------------------------------------------------------------
    async def invoke(
        self, function: str, payload: bytes, *, asynchronous: bool = False, message_ids: Sequence[str] = (), client_context: str = ""
    ) -> Invocation:
        """See the module's docstring."""
        name, _ = parse_reference(function, self.config.account_id, self.config.region)
        actor = self._actors.get(name)
        if actor is None:
            raise not_found(self._core.arn(name))
        if self.runner is None:
            raise BrokerError("ServiceException", "This broker runs no functions (it was started without a function runner).")
        if self._core.get(name).reserved_concurrency == 0:  # as stored: the actor may not have heard of a change yet
            raise throttled()
        actor.admit(len(payload))
        request_id = str(uuid.uuid4())
        if asynchronous:  # stored before it is accepted, as a send is
            queued = FunctionEventQueued(self.clock.wall_ms(), name.region, name.name, request_id, payload, list(message_ids))
            try:
                await self._writer.append([queued], needs_space=True)
            except (StorageError, WriterOverloaded) as error:
                raise storage_failed(error) from None
            current = self._actors.get(name)  # the actor may have been replaced while this was stored
            if current is not None and not current.failed:  # (one being rebuilt reads it from the store)
                current.post(_Invoke(request_id, payload, _nobody, message_ids, queued.at_ms))
            return Invocation(b"", None, request_id, 202)
        slot: ReplySlot[Invocation | BrokerError] = ReplySlot()
        actor.post(_Invoke(request_id, payload, slot, message_ids, client_context=client_context))
        outcome = await slot.wait()
        if isinstance(outcome, BrokerError):
            raise outcome
        return outcome

    def resolve(self, reference: str, region: str = "") -> FunctionName:
        """A function's (region, name) from its name or ARN (a name alone is of `region`, by default
        the broker's). Raises BrokerError."""
        return parse_reference(reference, self.config.account_id, self.config.region, region)[0]

    def get(self, function: FunctionName) -> FunctionChanged:
        """The function's configuration, as last stored. Raises ResourceNotFoundException. Never waits."""
        return self._core.get(function)

    def functions(self) -> list[FunctionChanged]:
        """Every function, by region and name. Never waits."""
        return [self._core.functions[name] for name in sorted(self._core.functions)]

    def actors(self) -> list[FunctionActor]:
        """Every function's actor, by region and name. Never waits."""
        return [self._actors[name] for name in sorted(self._actors)]

    def arn(self, function: FunctionChanged | FunctionName) -> str:
        return self._core.arn(FunctionName(function.region, function.name) if isinstance(function, FunctionChanged) else function)

    def code_location(self, function: FunctionChanged) -> str:
        """Where GetFunction says the code is: its directory, or the zip in the data directory."""
        return function.code_path or f"dovecote://functions/{self.arn(function)}"

    async def create(self, region: str, params: Mapping[str, Any], code: Code) -> FunctionChanged:
        return await self._manage(lambda core: core.plan_create(region, params, code, self.clock.wall_ms(), str(uuid.uuid4())))

    async def update_configuration(self, function: FunctionName, params: Mapping[str, Any]) -> FunctionChanged:
        return await self._manage(lambda core: core.plan_update_configuration(function, params, self.clock.wall_ms(), str(uuid.uuid4())))

    async def update_code(self, function: FunctionName, params: Mapping[str, Any], code: Code) -> FunctionChanged:
        return await self._manage(lambda core: core.plan_update_code(function, params, code, self.clock.wall_ms(), str(uuid.uuid4())))

    async def set_concurrency(self, function: FunctionName, reserved: int) -> FunctionChanged:
        return await self._manage(lambda core: core.plan_concurrency(function, reserved, self.clock.wall_ms(), str(uuid.uuid4())))

    async def delete(self, function: FunctionName) -> None:
        await self._manage(lambda core: core.plan_delete(function, self.clock.wall_ms()))

    async def _manage(self, plan: Callable[[FunctionsCore], list[Record]]) -> Any:
        slot: ReplySlot[FunctionChanged | None | BrokerError] = ReplySlot()
        try:
            self._send.send_nowait(_Manage(plan, slot))
        except trio.WouldBlock:
            raise overloaded("The functions' registry") from None
        except trio.ClosedResourceError:
            raise shutting_down() from None
        outcome = await slot.wait()
        if isinstance(outcome, BrokerError):
            raise outcome
        return outcome

    # --- the registry's task ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until stop(); the function actors live in here."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for function in self._core.functions.values():
                self._start_actor(function)
            task_status.started()
            async for request in self._mailbox:
                await self._serve(request)
            for actor in self._actors.values():
                actor.post(_Stop(deleted=False))

    def stop(self) -> None:
        """Take no more management requests; the actors then answer what waits and end."""
        self._send.close()

    async def _serve(self, request: _Manage) -> None:
        try:
            records = request.plan(self._core)
            await self._writer.append(records)
        except BrokerError as error:
            request.reply(error)
            return
        except (StorageError, WriterOverloaded) as error:
            request.reply(storage_failed(error))
            return
        changed: FunctionChanged | None = None
        for record in records:
            self._core.apply(record)
            match record:
                case FunctionChanged():
                    changed = record
                    self._changed(record)
                case FunctionDeleted(region=region, name=name):
                    actor = self._actors.pop(FunctionName(region, name), None)
                    if actor is not None:
                        actor.post(_Stop(deleted=True))
        request.reply(changed)

    def _changed(self, function: FunctionChanged) -> None:
        actor = self._actors.get(FunctionName(function.region, function.name))
        if actor is None:
            self._start_actor(function)
        else:
            actor.post(_Reconfigure(function))

    def _start_actor(self, function: FunctionChanged) -> None:
        assert self._nursery is not None
        name = FunctionName(function.region, function.name)
        self._actors[name] = FunctionActor(function, self, self._restored_events.pop(name, []))
        self._nursery.start_soon(self._supervise, name, name=f"function:{function.name}")

    async def _supervise(self, name: FunctionName) -> None:
        """Run the function's actor; one that fails answers what it held and is replaced, after a
        pause, by one rebuilt from the store (its configuration, its stored asynchronous
        invocations), as the queues' supervisor does; after too many failures in a row it stays
        stopped and invocations are refused saying so. Its instances end with it."""
        actor = self._actors[name]
        restarts = Restarts(self.config, actor.health, self._store, f"the actor of function {name.name}", {"function": name.name})
        while True:
            try:
                await actor.run()
                return
            except Exception as exc:  # noqa: BLE001 - supervision boundary: a function's failure is never the broker's
                actor.answer_all(actor_failed(f"The actor of function {name.name}"))
                pause = restarts.failed(exc)
                if pause is None:
                    return
                await trio.sleep(pause)
            function = self._core.functions.get(name)
            if function is None or self._actors.get(name) is not actor:
                return  # deleted meanwhile
            events = [event for event in self._store.load_function_events() if FunctionName(event.region, event.name) == name]
            actor = self._actors[name] = FunctionActor(function, self, events, actor.health)

    def record(self, invoked: FunctionInvoked) -> None:
        """An invocation's outcome to the log, without waiting for its commit (it acknowledges
        nothing: an outcome lost in a crash loses only its log line)."""
        try:
            self._writer.submit([invoked], needs_space=False)
        except (WriterOverloaded, trio.ClosedResourceError):
            log.warning("function %s: the log writer is overloaded; the outcome of %s is not logged", invoked.name, invoked.request_id)

    # --- what an instance is started with --------------------------------------------------------
    async def instance_spec(self, function: FunctionChanged, instance_id: int) -> InstanceSpec:
        """The command, directory and environment of a new instance, its code unpacked first.
        Raises BrokerError when the code is missing, OSError when it cannot be unpacked."""
        if self._code_dir is None:
            raise BrokerError("ServiceException", "This broker has no directory to run functions' code in.")
        make_private_dir(self._code_dir)  # made at the first start: it holds code other users should not read
        root = function.code_path or str(await self._unpacked(function))
        region = function.region or self.config.region
        environment = instance_environment(function, region, root, self.config.http_url, self._base_environment)
        if function.runtime in PYTHON_RUNTIMES:
            command = [self.settings.python, str(self._runtime_client()), function.handler]
        else:
            command = [str(Path(root) / "bootstrap")]
        return InstanceSpec(instance_id, function.name, command, root, environment)

    async def _unpacked(self, function: FunctionChanged) -> Path:
        """The function's zip, unpacked once per code (by its SHA-256) under the code directory."""
        assert self._code_dir is not None
        target = self._code_dir / base64.b32encode(base64.b64decode(function.code_sha256)).decode().rstrip("=").lower()
        if target.is_dir():
            return target
        stored = self._store.function_code(function.region, function.name)
        if stored is None or stored.code_sha256 != function.code_sha256:
            raise BrokerError("ServiceException", f"The code of function {function.name} is not in the store (`dovecote check` says why).")
        if self.settings.unpack_in_thread:
            await trio.to_thread.run_sync(_unpack, stored.zip, target)
        else:
            _unpack(stored.zip, target)
        return target

    def _runtime_client(self) -> Path:
        """Dovecote's runtime client for python3.x functions, written beside their code: the
        interpreter that runs it need not be able to import dovecote."""
        assert self._code_dir is not None
        path = self._code_dir / "dovecote_lambda_runtime.py"
        if not path.exists():
            try:
                source = pkgutil.get_data(__package__, "lambda_runtime_client.py")
            except OSError:
                source = None
            if source is None:
                raise BrokerError("ServiceException", "This dovecote was built without its Python runtime client (lambda_runtime_client.py).")
            path.write_bytes(source)
        return path


def _unpack(zip_bytes: bytes, target: Path) -> None:
    """Unpack into a fresh directory beside target, then rename it into place, so that a
    half-unpacked zip is never run. Files keep the modes the zip records (a bootstrap its x)."""
    import io

    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=target.parent))
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            for member in archive.infolist():
                extracted = Path(archive.extract(member, staging))
                mode = (member.external_attr >> 16) & 0o777
                if mode:
                    extracted.chmod(mode)
                elif member.filename == "bootstrap":
                    extracted.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another instance's unpacking won the race: theirs is the same code
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _base_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "LD_LIBRARY_PATH")}

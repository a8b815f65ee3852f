"""The function registry and actors with a scripted runner in place of processes, on the autojump
clock: invoke by name or ARN, warm instances reused up to the concurrency limit, timeouts, crashes
restarted with back-off, changes and deletions, the log records of invocations, restart of the
broker."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import trio

from dovecote.actors.config import BrokerConfig
from dovecote.actors.errors import BrokerError
from dovecote.actors.function_core import Code
from dovecote.actors.functions import (
    Answered,
    FunctionSettings,
    InitFailed,
    InstanceSpec,
    Invocation,
    NextWanted,
)
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import CreateQueue
from dovecote.storage.memory_store import MemoryStore
from dovecote.history import LogFilter, describe
from dovecote.storage.records import FunctionChanged, FunctionCodeStored, FunctionInvoked

from ..conftest import running_broker

ARN = "arn:aws:lambda:us-east-1:000000000000:function:echo"


def zipped(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out.getvalue()


CODE = Code(zip=zipped({"handler.py": "def main(event, context):\n    return event\n"}))
PARAMS = {"FunctionName": "echo", "Runtime": "python3.12", "Role": "arn:aws:iam::000000000000:role/r", "Handler": "handler.main"}


class ScriptedRunner:
    """Instances that answer each event by `behaviour` (an async function of the instance's spec
    and the event's payload, returning the answer, (payload, error type) for a handler's error, or
    raising Crash to end the instance)."""

    def __init__(self, behaviour=None) -> None:
        self.behaviour = behaviour or self.echo
        self.started: list[InstanceSpec] = []
        self.init_failures = 0  # the next this many instances fail their start-up

    @staticmethod
    async def echo(spec, payload):
        return payload

    async def run(self, spec: InstanceSpec, post) -> str:
        self.started.append(spec)
        if self.init_failures:
            self.init_failures -= 1
            post(InitFailed(spec.instance_id, b'{"errorType": "Runtime.ImportModuleError"}', "Runtime.ImportModuleError"))
            await trio.sleep_forever()
        while True:
            slot: ReplySlot = ReplySlot()
            post(NextWanted(spec.instance_id, slot))
            event = await slot.wait()
            if event is None:
                return "told to stop"
            try:
                answer = await self.behaviour(spec, event.payload)
            except Crash:
                return "exit status 1"
            payload, error_type = answer if isinstance(answer, tuple) else (answer, None)
            post(Answered(spec.instance_id, event.request_id, payload, error_type))


class Crash(Exception):
    pass


async def test_invoke_answers_by_name_or_arn_and_logs_each_invocation(autojump_clock, tmp_path):
    store = MemoryStore()
    runner = ScriptedRunner()
    async with running_broker(store, runner=runner, functions_dir=str(tmp_path)) as h:
        functions = h.broker.functions
        await functions.create("", PARAMS, CODE)
        for reference in ("echo", ARN, ARN + ":$LATEST", "000000000000:function:echo"):
            answer = await functions.invoke(reference, b'{"n": 1}', message_ids=["m-1"])
            assert answer.payload == b'{"n": 1}' and answer.function_error is None and answer.request_id
        assert len(runner.started) == 1  # one warm instance served all four
        with pytest.raises(BrokerError) as missing:
            await functions.invoke("nope", b"{}")
        assert missing.value.code == "ResourceNotFoundException" and "function:nope" in missing.value.message
        with pytest.raises(BrokerError) as other_account:
            await functions.invoke("arn:aws:lambda:us-east-1:111111111111:function:echo", b"{}")
        assert other_account.value.code == "ResourceNotFoundException"
        await trio.sleep(1)  # the outcomes are logged without waiting for their commit
    logged = [record for _, record in store.read_log() if isinstance(record, FunctionInvoked)]
    assert len(logged) == 4 and all(r.outcome == "ok" and r.message_ids == ["m-1"] and r.name == "echo" for r in logged)
    # `dovecote log --message-id m-1` shows which function got the message, and what it answered
    shown = [describe(lsn, record) for lsn, record in store.read_log() if LogFilter(message_ids=frozenset({"m-1"})).matches(record)]
    assert len(shown) == 4 and all("FunctionInvoked" in line and "function=echo" in line and "outcome=ok" in line for line in shown)
    (code_line,) = [describe(lsn, record) for lsn, record in store.read_log() if isinstance(record, FunctionCodeStored)]
    assert f"zip={len(CODE.zip)}B" in code_line and "PK" not in code_line  # the zip's size, not its bytes


async def test_a_python_instance_is_started_with_lambdas_environment(autojump_clock, tmp_path):
    runner = ScriptedRunner()
    settings = FunctionSettings(python="/opt/python3", unpack_in_thread=False)
    async with running_broker(runner=runner, functions_dir=str(tmp_path), function_settings=settings) as h:
        await h.broker.functions.create("", {**PARAMS, "Environment": {"Variables": {"OUT": "/tmp/x"}}, "MemorySize": 256}, CODE)
        await h.broker.functions.invoke("echo", b"{}")
    (spec,) = runner.started
    assert spec.command[0] == "/opt/python3" and spec.command[1].endswith("dovecote_lambda_runtime.py") and spec.command[2] == "handler.main"
    environment = spec.environment
    assert environment["AWS_LAMBDA_FUNCTION_NAME"] == "echo" and environment["_HANDLER"] == "handler.main"
    assert environment["AWS_REGION"] == "us-east-1" and environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert environment["LAMBDA_TASK_ROOT"] == spec.cwd and environment["OUT"] == "/tmp/x"
    assert (trio.Path(spec.cwd) / "handler.py").name == "handler.py"
    assert "def main" in open(f"{spec.cwd}/handler.py").read()


async def test_instances_are_reused_and_grow_up_to_the_concurrency_limit(autojump_clock, tmp_path):
    async def slow(spec, payload):
        await trio.sleep(1)
        return payload

    runner = ScriptedRunner(slow)
    async with running_broker(runner=runner, functions_dir=str(tmp_path), function_settings=FunctionSettings(max_instances=3, unpack_in_thread=False)) as h:
        functions = h.broker.functions
        await functions.create("", PARAMS, CODE)
        answers: list[Invocation] = []

        async def one(n):
            answers.append(await functions.invoke("echo", b"%d" % n))

        async with trio.open_nursery() as nursery:
            for n in range(9):
                nursery.start_soon(one, n)
        assert sorted(a.payload for a in answers) == [b"%d" % n for n in range(9)]
        assert len(runner.started) == 3  # nine invocations, three at a time, by three warm instances
        answers.clear()
        await functions.set_concurrency(functions.resolve("echo"), 10)  # more than the broker's cap of 3: the cap holds
        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(one, n)
        assert len(answers) == 6 and len(runner.started) == 3 + 3  # the change retired the three; three new ones, not six
        await functions.set_concurrency(functions.resolve("echo"), 0)
        with pytest.raises(BrokerError) as throttled:
            await functions.invoke("echo", b"{}")
        assert throttled.value.code == "TooManyRequestsException"


async def test_a_timeout_kills_the_instance_and_answers_as_aws_words_it(autojump_clock, tmp_path):
    async def hang(spec, payload):
        if payload == b'"hang"':
            await trio.sleep_forever()
        return payload

    store = MemoryStore()
    runner = ScriptedRunner(hang)
    async with running_broker(store, runner=runner, functions_dir=str(tmp_path)) as h:
        await h.broker.functions.create("", {**PARAMS, "Timeout": 2}, CODE)
        started = trio.current_time()
        answer = await h.broker.functions.invoke("echo", b'"hang"')
        assert trio.current_time() - started == pytest.approx(2, abs=0.01)
        assert answer.function_error == "Unhandled"
        error = json.loads(answer.payload)
        assert error["errorType"] == "Sandbox.Timedout" and f"RequestId: {answer.request_id} Error: Task timed out after 2.00 seconds" == error["errorMessage"]
        assert (await h.broker.functions.invoke("echo", b"1")).payload == b"1"  # by a new instance
        assert len(runner.started) == 2
        await trio.sleep(1)
    outcomes = [(r.outcome, r.error_type) for _, r in store.read_log() if isinstance(r, FunctionInvoked)]
    assert outcomes == [("Unhandled", "Sandbox.Timedout"), ("ok", "")]


async def test_a_crash_fails_its_invocation_and_start_failures_back_off(autojump_clock, tmp_path):
    async def crash(spec, payload):
        if payload == b'"crash"':
            raise Crash
        return payload

    runner = ScriptedRunner(crash)
    settings = FunctionSettings(restart_backoff_s=(0.0, 5.0, 20.0), unpack_in_thread=False)
    async with running_broker(runner=runner, functions_dir=str(tmp_path), function_settings=settings) as h:
        functions = h.broker.functions
        await functions.create("", PARAMS, CODE)
        crashed = await functions.invoke("echo", b'"crash"')
        assert crashed.function_error == "Unhandled" and json.loads(crashed.payload)["errorType"] == "Runtime.ExitError"
        assert "exit status 1" in json.loads(crashed.payload)["errorMessage"]
        assert (await functions.invoke("echo", b"2")).payload == b"2"  # restarted at once: it had started fine
        runner.init_failures = 2
        await functions.update_code(functions.resolve("echo"), {}, Code(zip=zipped({"handler.py": "x = 1\n"})))
        first = await functions.invoke("echo", b"3")
        assert json.loads(first.payload)["errorType"] == "Runtime.ImportModuleError"
        started = trio.current_time()
        second = await functions.invoke("echo", b"4")  # the next start waits 0 s, then 5 s before the third
        assert json.loads(second.payload)["errorType"] == "Runtime.ImportModuleError"
        third = await functions.invoke("echo", b"5")
        assert third.payload == b"5" and trio.current_time() - started == pytest.approx(5, abs=0.01)


async def test_a_change_retires_the_old_instances_and_a_deletion_refuses_further_invocations(autojump_clock, tmp_path):
    runner = ScriptedRunner()
    async with running_broker(runner=runner, functions_dir=str(tmp_path)) as h:
        functions = h.broker.functions
        await functions.create("", PARAMS, CODE)
        await functions.invoke("echo", b"1")
        await functions.update_configuration(functions.resolve("echo"), {"Environment": {"Variables": {"MODE": "new"}}})
        await functions.invoke("echo", b"2")
        assert [spec.environment.get("MODE") for spec in runner.started] == [None, "new"]
        await functions.delete(functions.resolve("echo"))
        with pytest.raises(BrokerError) as gone:
            await functions.invoke("echo", b"3")
        assert gone.value.code == "ResourceNotFoundException"


async def test_an_asynchronous_invocation_returns_at_once_and_is_retried_twice_on_error(autojump_clock, tmp_path):
    calls = []

    async def failing(spec, payload):
        calls.append(trio.current_time())
        return (b'{"errorType": "ValueError"}', "ValueError") if payload == b"fail" else payload

    store = MemoryStore()
    runner = ScriptedRunner(failing)
    async with running_broker(store, runner=runner, functions_dir=str(tmp_path)) as h:
        await h.broker.functions.create("", PARAMS, CODE)
        accepted = await h.broker.functions.invoke("echo", b"1", asynchronous=True)
        assert accepted.status_code == 202 and accepted.payload == b""
        await trio.sleep(1)
        assert len(calls) == 1
        started = trio.current_time()
        await h.broker.functions.invoke("echo", b"fail", asynchronous=True)
        await trio.sleep(600)
        assert [round(at - started) for at in calls[1:]] == [0, 60, 180]  # AWS's two retries, a minute then two apart
    outcomes = [r.outcome for _, r in store.read_log() if isinstance(r, FunctionInvoked)]
    assert outcomes == ["ok", "Unhandled", "Unhandled", "Unhandled"]


async def test_functions_are_restored_after_a_restart(autojump_clock, tmp_path):
    store = MemoryStore()
    runner = ScriptedRunner()
    async with running_broker(store, runner=runner, functions_dir=str(tmp_path)) as h:
        await h.broker.functions.create("", PARAMS, CODE)
    async with running_broker(store, runner=runner, functions_dir=str(tmp_path / "again")) as h:
        (function,) = h.broker.functions.functions()
        assert isinstance(function, FunctionChanged) and function.handler == "handler.main"
        assert (await h.broker.functions.invoke("echo", b"7")).payload == b"7"  # its code unpacked from the store


async def test_each_function_reports_itself_among_the_brokers_actors(autojump_clock, tmp_path):
    async def hang(spec, payload):
        if payload == b'"hang"':
            await trio.sleep_forever()
        return payload

    runner = ScriptedRunner(hang)
    async with running_broker(runner=runner, functions_dir=str(tmp_path)) as h:
        functions = h.broker.functions
        await functions.create("", {**PARAMS, "Timeout": 1}, CODE)
        await functions.invoke("echo", b"1")
        await functions.invoke("echo", b'"hang"')
        runner.init_failures = 1
        await functions.update_configuration(functions.resolve("echo"), {"Description": "changed"})
        await functions.invoke("echo", b"2")
        (report,) = [r for r in h.broker.statistics() if r.kind == "function"]
        assert (report.name, report.region) == ("echo", "us-east-1")
        assert report.actor.invocations == 3 and report.actor.errors == 2 and report.actor.timeouts == 1
        assert report.actor.start_failures == 1 and "Runtime.ImportModuleError" in report.health.last_error
        assert report.health.restarts == 0  # the actor itself never failed
        assert [r.kind for r in await h.broker.gather_statistics()].count("function") == 1


async def test_an_asynchronous_invocation_is_stored_before_it_is_accepted_and_runs_after_a_restart(autojump_clock, tmp_path):
    class Stuck(ScriptedRunner):
        async def run(self, spec, post):  # an instance that never asks for work
            self.started.append(spec)
            await trio.sleep_forever()

    store = MemoryStore()
    async with running_broker(store, runner=Stuck(), functions_dir=str(tmp_path)) as h:
        await h.broker.functions.create("", PARAMS, CODE)
        accepted = await h.broker.functions.invoke("echo", b'"later"', asynchronous=True, message_ids=["m-9"])
        assert accepted.status_code == 202
        (stored,) = store.load_function_events()
        assert (stored.request_id, stored.payload, stored.message_ids) == (accepted.request_id, b'"later"', ["m-9"])
    seen = []

    async def remember(spec, payload):
        seen.append(payload)
        return payload

    async with running_broker(store, runner=ScriptedRunner(remember), functions_dir=str(tmp_path)) as h:
        await trio.sleep(1)
        assert seen == [b'"later"']
    assert store.load_function_events() == []  # done: its row went with its last FunctionInvoked
    (done,) = [r for _, r in store.read_log() if isinstance(r, FunctionInvoked)]
    assert done.request_id == accepted.request_id and done.outcome == "ok" and done.message_ids == ["m-9"]
    # `dovecote log --message-id m-9`: the event queued, then its invocation; the event by its size
    shown = [describe(lsn, record) for lsn, record in store.read_log() if LogFilter(message_ids=frozenset({"m-9"})).matches(record)]
    assert [line.split()[3] for line in shown] == ["FunctionEventQueued", "FunctionInvoked"]
    assert "payload=7B" in shown[0] and "later" not in shown[0]


async def test_a_deleted_function_takes_its_pending_events_with_it(autojump_clock, tmp_path):
    store = MemoryStore()
    async with running_broker(store, runner=None, functions_dir=str(tmp_path)) as h:
        await h.broker.functions.create("", PARAMS, CODE)
    async with running_broker(store, runner=ScriptedRunner(), functions_dir=str(tmp_path)) as h:
        await h.broker.functions.set_concurrency(h.broker.functions.resolve("echo"), 0)  # nothing runs
        with pytest.raises(BrokerError) as throttled:
            await h.broker.functions.invoke("echo", b"1", asynchronous=True)
        assert throttled.value.code == "TooManyRequestsException"
        await h.broker.functions.set_concurrency(h.broker.functions.resolve("echo"), 1)
        await h.broker.functions.invoke("echo", b"1", asynchronous=True)
        await h.broker.functions.delete(h.broker.functions.resolve("echo"))
    assert store.load_function_events() == []


async def test_a_failing_function_actor_is_rebuilt_and_never_stops_the_broker(autojump_clock, tmp_path):
    class Faulty(ScriptedRunner):
        """Its first instance posts what the actor cannot handle (a bug's stand-in)."""

        async def run(self, spec, post):
            if not self.started:
                self.started.append(spec)
                post(NextWanted([spec.instance_id], ReplySlot()))  # an unhashable id: the actor raises
                await trio.sleep_forever()
            return await super().run(spec, post)

    async with running_broker(runner=Faulty(), functions_dir=str(tmp_path)) as h:
        functions = h.broker.functions
        await functions.create("", PARAMS, CODE)
        with pytest.raises(BrokerError) as failed:
            await functions.invoke("echo", b"1")
        assert failed.value.code == "InternalError"
        await trio.sleep(0.2)  # the restart's pause (0.1 s in these tests)
        assert (await functions.invoke("echo", b"2")).payload == b"2"  # by the rebuilt actor
        (report,) = [r for r in h.broker.statistics() if r.kind == "function"]
        assert report.health.restarts == 1 and "TypeError" in report.health.last_error
        assert await h.ok(CreateQueue("still-served"))  # the broker goes on


async def test_the_invocations_a_function_holds_are_bounded_in_number_and_bytes(autojump_clock, tmp_path):
    async def hang(spec, payload):
        await trio.sleep_forever()

    settings = FunctionSettings(max_waiting_bytes=100, unpack_in_thread=False)
    config = BrokerConfig(restart_backoff_s=(0.0, 0.1), mailbox_capacity=3)
    async with running_broker(config=config, runner=ScriptedRunner(hang), functions_dir=str(tmp_path), function_settings=settings) as h:
        functions = h.broker.functions
        await functions.create("", {**PARAMS, "Timeout": 900}, CODE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functions.invoke, "echo", b'"' + b"x" * 60 + b'"')
            await trio.sleep(1)
            with pytest.raises(BrokerError) as too_many_bytes:
                await functions.invoke("echo", b'"' + b"x" * 60 + b'"')
            assert too_many_bytes.value.code == "TooManyRequestsException" and "(62 bytes)" in too_many_bytes.value.message
            nursery.start_soon(functions.invoke, "echo", b"1")
            nursery.start_soon(functions.invoke, "echo", b"2")
            await trio.sleep(1)
            with pytest.raises(BrokerError) as too_many:
                await functions.invoke("echo", b"3")
            assert "holds 3 invocations" in too_many.value.message
            nursery.cancel_scope.cancel()


async def test_an_invocation_after_the_functions_stopped_is_answered_shutting_down(autojump_clock, tmp_path):
    async with running_broker(runner=ScriptedRunner(), functions_dir=str(tmp_path)) as h:
        await h.broker.functions.create("", PARAMS, CODE)
        assert (await h.broker.functions.invoke("echo", b"1")).payload == b"1"
        h.broker.functions.stop()
        await trio.sleep(1)  # the registry tells its actors to stop, and they end
        with trio.fail_after(5), pytest.raises(BrokerError) as refused:  # not a wait without end
            await h.broker.functions.invoke("echo", b"2")
        assert (refused.value.code, refused.value.message) == ("ServiceUnavailable", "The broker is shutting down.")

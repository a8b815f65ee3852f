"""The one native client under asyncio and under Trio: the same test bodies, run by anyio.run on each
backend, against one real `dovecote serve` process (TLS and an access key, so every body also shows
those work on both); and the consumer helper: a handler that fails some messages or raises, one
slower than the visibility timeout, the concurrency limit, and the broker killed mid-batch."""

from __future__ import annotations

import itertools
from collections import Counter
import math
import os

import anyio
import anyio.abc
import pytest

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    BatchResult,
    DeleteEntry,
    ListQueues,
    Peeked,
    QueueNames,
    ReceivedMessage,
    SendBatchResult,
    SendEntry,
    Sent,
    VisibilityEntry,
)
from dovecote.net.client import BlockingClient, Client, open_client

from ..faults.serve import ServeProcess
from ..tls_certificates import CertificateAuthority

KEY = ("edge", "edge-secret")
BACKENDS = ("asyncio", "trio")
DEADLINE_S = 30  # every body's whole run, on a shared machine


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("client-backends")
    ca = CertificateAuthority(directory / "pki", "client test CA")
    server = ca.issue("server", server=True)
    process = ServeProcess(
        directory / "data", "--tls-cert", server.certificate_file, "--tls-key", server.key_file,
        "--access-key", f"{KEY[0]}:{KEY[1]}", tls=ca.certificate_file, access_key=KEY,
    ).start()
    yield process
    process.terminate()


@pytest.fixture(params=BACKENDS)
def run(request):
    """Runs an async body to its end on this test's backend, within DEADLINE_S."""

    def run(body, *args):
        async def bounded():
            with anyio.fail_after(DEADLINE_S):
                return await body(*args)

        return anyio.run(bounded, backend=request.param)

    return run


_names = itertools.count()


@pytest.fixture
def queue(request):
    """A queue name of this test's own."""
    return f"q{os.getpid()}-{next(_names)}"


def connect(broker: ServeProcess, **options):
    return open_client("127.0.0.1", broker.port, tls=broker.tls, access_key=broker.access_key, **options)


def test_the_same_calls_answer_typed_results(broker, run, queue):
    async def body():
        async with connect(broker) as client:
            assert isinstance(client, Client)
            url = await client.create_queue(queue, {"VisibilityTimeout": "30"})
            assert url.endswith("/" + queue)
            sent = await client.send_message(url, "one")
            assert isinstance(sent, Sent) and sent.message_id
            batch = await client.send_message_batch(queue, [SendEntry(str(i), f"b{i}") for i in range(3)])
            assert isinstance(batch, SendBatchResult) and len(batch.successful) == 3 and not batch.failed
            listed = await client.list_queues(queue)
            assert isinstance(listed, QueueNames) and listed.queues == [url]
            assert (await client.get_queue_attributes(queue, ["ApproximateNumberOfMessages"])) == {"ApproximateNumberOfMessages": "4"}
            peeked = await client.peek_messages(queue)
            assert isinstance(peeked, Peeked) and sorted(m.body for m in peeked.messages) == ["b0", "b1", "b2", "one"]
            received = await client.receive_message(queue, max_number_of_messages=10, wait_time_seconds=1)
            assert all(isinstance(m, ReceivedMessage) for m in received)
            assert sorted(m.body for m in received) == ["b0", "b1", "b2", "one"]
            changed = await client.change_message_visibility_batch(
                queue, [VisibilityEntry(str(i), m.receipt_handle, 60) for i, m in enumerate(received)]
            )
            assert isinstance(changed, BatchResult) and len(changed.successful) == 4
            deleted = await client.delete_message_batch(queue, [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(received)])
            assert isinstance(deleted, BatchResult) and len(deleted.successful) == 4 and not deleted.failed
            with pytest.raises(BrokerError) as caught:
                await client.get_queue_attributes("no-such-queue")
            assert caught.value.code == "QueueDoesNotExist"
            await client.delete_queue(url)
        with pytest.raises(KeyError):  # the caller's own error comes out as itself, not in a group
            async with connect(broker):
                raise KeyError("mine")

    run(body)


def test_calls_from_many_tasks_are_pipelined_on_one_connection(broker, run, queue):
    """200 requests from 50 tasks at once on one connection: each gets its own answer."""

    async def body():
        async with connect(broker) as client:
            await client.create_queue(queue)
            sent: dict[str, str] = {}

            async def sender(task: int) -> None:
                for i in range(4):
                    body = f"{task}-{i}"
                    sent[body] = (await client.send_message(queue, body)).message_id

            async with anyio.create_task_group() as tasks:
                for task in range(50):
                    tasks.start_soon(sender, task)
            assert len(sent) == 200 and len(set(sent.values())) == 200
            seen: dict[str, str] = {}
            while len(seen) < 200:
                for message in await client.receive_message(queue, max_number_of_messages=10, wait_time_seconds=1):
                    seen[message.body] = message.message_id
            assert seen == sent
            await client.delete_queue(queue)

    run(body)


def test_a_lone_call_writes_its_request_itself_on_plain_tcp(tmp_path, run, monkeypatch):
    """Under Trio to the socket, under asyncio to its transport: not through the client's send task,
    which costs a switch to another task (and, pipelining, held requests back into bursts)."""
    process = ServeProcess(tmp_path).start()

    async def body():
        async with open_client("127.0.0.1", process.port) as client:
            sends = []
            stream_type = type(client._stream)
            send = stream_type.send

            async def noting_send(self, data):
                sends.append(len(data))
                await send(self, data)

            monkeypatch.setattr(stream_type, "send", noting_send)
            await client.create_queue("lone")
            for i in range(10):
                await client.send_message("lone", f"m{i}")
            assert [m.body for m in await client.receive_message("lone", max_number_of_messages=10)] == [f"m{i}" for i in range(10)]
            assert sends == []

    try:
        run(body)
    finally:
        process.terminate()


def test_calls_a_silent_broker_never_answers_time_out_each_at_its_deadline(run):
    """A peer that reads and never answers: each call raises TimeoutError at its own deadline,
    the first alone and then three at once, made 0.1 s apart."""

    async def body():
        async def silent(stream) -> None:
            async with stream:
                async for _ in stream:
                    pass

        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as peer:
            peer.start_soon(listener.serve, silent)
            stream = await anyio.connect_tcp("127.0.0.1", listener.extra(anyio.abc.SocketAttribute.local_port))
            async with anyio.create_task_group() as client_tasks:
                client = Client(stream, client_tasks, timeout_s=0.3)
                started = anyio.current_time()
                with pytest.raises(TimeoutError, match="did not answer ListQueues within 0.3 s"):
                    await client.call(ListQueues())
                assert 0.3 <= anyio.current_time() - started < 1
                gave_up: list[float] = []

                async def call_later(delay_s: float) -> None:
                    await anyio.sleep(delay_s)
                    called = anyio.current_time()
                    with pytest.raises(TimeoutError):
                        await client.list_queues()
                    gave_up.append(anyio.current_time() - called)

                async with anyio.create_task_group() as calls:
                    for delay_s in (0, 0.1, 0.2):
                        calls.start_soon(call_later, delay_s)
                assert len(gave_up) == 3 and all(0.3 <= waited < 1 for waited in gave_up), gave_up
                client.close()
                client_tasks.cancel_scope.cancel()
            peer.cancel_scope.cancel()

    run(body)


def test_a_wrong_key_or_no_tls_is_refused_with_the_reason(broker, run):
    async def body():
        with pytest.raises(BrokerError) as caught:
            async with open_client("127.0.0.1", broker.port, tls=broker.tls, access_key=("edge", "wrong")):
                pass
        assert caught.value.code == "SignatureDoesNotMatch"
        with pytest.raises(ConnectionError, match="requires TLS"):
            async with open_client("127.0.0.1", broker.port, access_key=KEY):
                pass

    run(body)


def test_a_call_after_the_broker_is_gone_raises_connection_error(tmp_path, run):
    process = ServeProcess(tmp_path).start()

    async def body():
        async with open_client("127.0.0.1", process.port) as client:
            await client.list_queues()
            process.kill9()
            with pytest.raises(ConnectionError):
                for _ in range(100):  # the loss is seen when the socket says so
                    await client.list_queues()
                    await anyio.sleep(0.01)

    run(body)


def test_a_call_waiting_when_the_client_is_left_raises_connection_error(broker, run, queue):
    """A task outside the client's block, long polling when the block ends, is answered at once."""

    async def body():
        outcome: list[BaseException] = []

        async def long_poll(client: Client) -> None:
            try:
                await client.receive_message(queue, wait_time_seconds=20)
            except ConnectionError as error:
                outcome.append(error)

        async with anyio.create_task_group() as tasks:
            async with connect(broker) as client:
                await client.create_queue(queue)
                tasks.start_soon(long_poll, client)
                await anyio.sleep(0.2)  # the poll is sent and parked
            with anyio.fail_after(5):  # not the 20 s of the poll
                while not outcome:
                    await anyio.sleep(0.01)
        assert "closed" in str(outcome[0])

    run(body)


def test_the_blocking_client_runs_the_same_operations(broker, queue):
    with BlockingClient("127.0.0.1", broker.port, tls=broker.tls, access_key=KEY, timeout_s=10) as client:
        url = client.create_queue(queue)
        assert isinstance(client.send_message(url, "blocking"), Sent)
        (message,) = client.receive_message(queue)
        assert isinstance(message, ReceivedMessage) and message.body == "blocking"
        client.delete_message(queue, message.receipt_handle)
        with pytest.raises(BrokerError):
            client.get_queue_url("no-such-queue")
        assert client.create_queue.__doc__ == Client.create_queue.__doc__
        client.delete_queue(url)


# --- the consumer helper -------------------------------------------------------------------------


async def depth(client: Client, queue: str) -> int:
    attributes = await client.get_queue_attributes(queue)
    return sum(int(attributes[name]) for name in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"))


def test_consume_deletes_what_the_handler_did_and_brings_back_what_it_failed(broker, run, queue):
    """The handler fails the odd messages the first time it sees them: only the others are
    deleted; the odd ones come back once their visibility lapses, and are deleted then."""

    async def body():
        async with connect(broker) as client:
            await client.create_queue(queue)
            await client.send_message_batch(queue, [SendEntry(str(i), str(i)) for i in range(10)])
            seen = Counter[str]()
            done = anyio.Event()

            async def handler(batch: list[ReceivedMessage]) -> list[ReceivedMessage]:
                seen.update(m.body for m in batch)
                if seen == {str(i): 2 if i % 2 else 1 for i in range(10)}:
                    done.set()
                return [m for m in batch if int(m.body) % 2 and seen[m.body] == 1]

            await client.consume(queue, handler, stop=done, visibility_timeout=1, wait_time=1)
            assert seen == {str(i): 2 if i % 2 else 1 for i in range(10)}
            assert await depth(client, queue) == 0
            await client.delete_queue(queue)

    run(body)


def test_a_handler_that_raises_fails_its_batch_and_consuming_goes_on(broker, run, queue, caplog):
    async def body():
        async with connect(broker) as client:
            await client.create_queue(queue)
            await client.send_message(queue, "first try fails")
            attempts: list[str] = []
            done = anyio.Event()

            async def handler(batch: list[ReceivedMessage]) -> None:
                attempts.extend(m.body for m in batch)
                if len(attempts) == 1:
                    raise RuntimeError("a bug in the handler")
                done.set()

            await client.consume(queue, handler, stop=done, visibility_timeout=1, wait_time=1)
            assert attempts == ["first try fails"] * 2
            assert await depth(client, queue) == 0
            await client.delete_queue(queue)

    run(body)
    assert "the handler failed on a batch of 1" in caplog.text and "a bug in the handler" in caplog.text


def test_consume_keeps_a_slow_handlers_batch_from_other_consumers(broker, run, queue):
    """A handler that takes three times the visibility timeout: the heartbeat keeps its message
    invisible, another consumer does not get it, and it is deleted once handled."""

    async def body():
        async with connect(broker) as client, connect(broker) as other:
            await client.create_queue(queue)
            await client.send_message(queue, "slow")
            done = anyio.Event()
            started = anyio.Event()

            async def handler(batch: list[ReceivedMessage]) -> None:
                started.set()
                await anyio.sleep(3)
                done.set()

            async def another_consumer() -> None:
                await started.wait()
                while not done.is_set():
                    assert await other.receive_message(queue, wait_time_seconds=0) == []
                    await anyio.sleep(0.1)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(another_consumer)
                await client.consume(queue, handler, stop=done, visibility_timeout=1, wait_time=1)
            assert await depth(client, queue) == 0
            await client.delete_queue(queue)

    run(body)


def test_consume_handles_at_most_concurrency_batches_at_once(broker, run, queue):
    async def body():
        async with connect(broker) as client:
            await client.create_queue(queue)
            for start in range(0, 60, 10):
                await client.send_message_batch(queue, [SendEntry(str(i), str(start + i)) for i in range(10)])
            running = 0
            most_running = 0
            handled: list[str] = []
            done = anyio.Event()

            async def handler(batch: list[ReceivedMessage]) -> None:
                nonlocal running, most_running
                assert len(batch) <= 5
                running += 1
                most_running = max(most_running, running)
                await anyio.sleep(0.05)
                running -= 1
                handled.extend(m.body for m in batch)
                if len(handled) == 60:
                    done.set()

            await client.consume(queue, handler, stop=done, batch_size=5, concurrency=3, wait_time=1)
            assert sorted(handled, key=int) == [str(i) for i in range(60)]
            assert await depth(client, queue) == 0
            assert most_running == 3
            await client.delete_queue(queue)

    run(body)


def test_a_stopped_consume_settles_the_batch_in_hand_and_returns(broker, run, queue):
    """stop set while a handler runs: that batch is still deleted, nothing more is received, and
    consume returns by itself."""

    async def body():
        async with connect(broker) as client:
            await client.create_queue(queue)
            await client.send_message_batch(queue, [SendEntry(str(i), str(i)) for i in range(5)])
            stop = anyio.Event()
            handled: list[str] = []

            async def handler(batch: list[ReceivedMessage]) -> None:
                stop.set()
                await anyio.sleep(0.2)
                handled.extend(m.body for m in batch)

            await client.consume(queue, handler, stop=stop, batch_size=2, wait_time=1)
            assert len(handled) == 2
            left = await client.receive_message(queue, max_number_of_messages=10, wait_time_seconds=1)
            assert sorted(m.body for m in left) == sorted(set(map(str, range(5))) - set(handled))
            await client.delete_queue(queue)

    run(body)


def test_consume_refuses_settings_it_cannot_honour(broker, run, queue):
    async def body():
        async with connect(broker) as client:
            for bad in ({"batch_size": 11}, {"concurrency": 0}, {"visibility_timeout": 0}, {"wait_time": 21}):
                with pytest.raises(ValueError, match=next(iter(bad))):
                    await client.consume(queue, lambda batch: None, **bad)

    run(body)


def test_a_broker_killed_mid_batch_loses_nothing(tmp_path, run):
    """kill -9 while a handler holds a batch: consume raises ConnectionError; after the restart the
    batch not deleted comes back, the one deleted before stays gone, and every message is handled once."""
    process = ServeProcess(tmp_path).start()
    bodies = [str(i) for i in range(25)]

    async def body():
        handled: list[str] = []

        async def kill_the_broker_on_the_second_batch(batch: list[ReceivedMessage]) -> None:
            if handled:
                process.kill9()
                await anyio.sleep(math.inf)
            handled.extend(m.body for m in batch)

        async with open_client("127.0.0.1", process.port) as client:
            await client.create_queue("work")
            for start in range(0, 25, 10):
                await client.send_message_batch("work", [SendEntry(str(i), b) for i, b in enumerate(bodies[start : start + 10])])
            with pytest.raises(ConnectionError):
                await client.consume("work", kill_the_broker_on_the_second_batch, visibility_timeout=1, wait_time=1)
        assert len(handled) == 10
        await anyio.to_thread.run_sync(process.start)
        done = anyio.Event()

        async def handle(batch: list[ReceivedMessage]) -> None:
            handled.extend(m.body for m in batch)
            if len(handled) >= 25:
                done.set()

        async with open_client("127.0.0.1", process.port) as client:
            await client.consume("work", handle, stop=done, visibility_timeout=1, wait_time=1)
            assert await depth(client, "work") == 0
        assert sorted(handled, key=int) == bodies

    try:
        run(body)
    finally:
        process.terminate()

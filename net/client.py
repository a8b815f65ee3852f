"""Client library for the native protocol: one pipelining client for asyncio and Trio alike (on
AnyIO), with a consumer helper, and a blocking client for scripts. They raise BrokerError (with the
AWS error code) when the broker answers with a failure, or refuses the connection's key, and
ConnectionError when the connection is lost or cannot be opened. Queues are named by name or by
queue URL. Every method returns a typed value: a msgspec struct of actors/ops.py, a list of them, or
the string (a URL, an ARN) or string map (attributes, tags) the AWS API answers with.

    async with open_client("127.0.0.1", 7480) as client:     # under asyncio.run or trio.run
        url = await client.create_queue("orders")
        await client.send_message(url, "hello")

    with BlockingClient("127.0.0.1", 7480, tls="ca.pem", access_key=("ID", "SECRET")) as client:
        client.send_message("orders", "hello")

tls: None (plain TCP), True (TLS, trusting the system's CAs), a CA file to trust, or an
ssl.SSLContext (with load_cert_chain for a client certificate). timeout_s: how long opening the
connection, and each call, may take (a receive may wait its long poll's 20 s beyond) before it
raises TimeoutError; the asynchronous client's connection stays usable for other calls. access_key:
(id, secret) of a key the broker knows; the secret never leaves this process, only a proof over the
broker's nonce does.

The operations and the opening are written once, as coroutines over `call` (and a send and a
receive). The asynchronous client's `call` pipelines over an AnyIO stream; the blocking client's
blocks on its socket and so never suspends: the blocking client runs the same coroutines to their
end without an event loop (`_complete`), adding no thread and no latency.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, NoReturn, ParamSpec, Protocol, TypeVar

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from dovecote.actors.errors import BrokerError, from_failure
from dovecote.actors.ops import (
    AddPermission,
    Arn,
    Arns,
    Attributes,
    BatchResult,
    CancelMessageMoveTask,
    ChangeMessageVisibility,
    ChangeMessageVisibilityBatch,
    ConfirmSubscription,
    CreateQueue,
    CreateTopic,
    DeleteEntry,
    DeleteMessage,
    DeleteMessageBatch,
    DeleteQueue,
    DeleteTopic,
    Explanation,
    ExplainDelivery,
    Failure,
    GetQueueAttributes,
    GetQueueUrl,
    GetSubscriptionAttributes,
    GetTopicAttributes,
    ListDeadLetterSourceQueues,
    ListMessageMoveTasks,
    ListQueueTags,
    ListQueues,
    ListSubscriptionsByTopic,
    ListTopics,
    MessageAttributeValue,
    MovedCount,
    MoveTask,
    MoveTasks,
    Op,
    Peeked,
    PeekMessages,
    Publish,
    PublishBatch,
    PublishBatchResult,
    PublishedMessage,
    PublishEntry,
    PurgeQueue,
    QueueName,
    QueueNames,
    ReceiveMessage,
    Received,
    ReceivedMessage,
    RemovePermission,
    Result,
    SendBatchResult,
    SendEntry,
    SendMessage,
    SendMessageBatch,
    Sent,
    SetQueueAttributes,
    SetSubscriptionAttributes,
    SetTopicAttributes,
    StartMessageMoveTask,
    Subscribe,
    SubscriptionList,
    Tags,
    TagQueue,
    TaskHandle,
    Unsubscribe,
    UntagQueue,
    Verdict,
    VisibilityEntry,
)

from . import frames
from .frames import DEFAULT_PORT
from .limits import DEFAULT_MAX_RESPONSE_FRAME_BYTES
from .outbox import Outbox
from .tls import TlsOption, client_context

DEFAULT_TIMEOUT_S = 60.0
MAX_LONG_POLL_S = 20  # SQS's longest WaitTimeSeconds, which a queue's ReceiveMessageWaitTimeSeconds may set
MAX_UNSENT_REQUESTS = 1024  # a caller past them waits until the socket takes some
MAX_BATCH_MESSAGES = 10  # SQS's most messages in one receive or batch
AccessKey = tuple[str, str]  # (key id, secret)
# A consumer's handler: given a batch, returns the messages it failed on (None: none failed).
Handler = Callable[[list[ReceivedMessage]], Awaitable[Iterable[ReceivedMessage] | None]]


class StopSignal(Protocol):
    """What tells a consumer to stop: asyncio's, Trio's and AnyIO's Event all are."""

    def is_set(self) -> bool: ...

log = logging.getLogger("dovecote.client")

R = TypeVar("R", bound=Result)
T = TypeVar("T")
P = ParamSpec("P")


def _check_welcome(welcome: bytes) -> None:
    """Raises ConnectionError unless the broker will speak this client's version."""
    version, status = frames.parse_welcome(welcome)
    if status == frames.STATUS_TLS_REQUIRED:
        raise ConnectionError("the broker requires TLS on this port: open the client with tls=(a CA file or an ssl.SSLContext)")
    if status != frames.STATUS_OK or version != frames.PROTOCOL_VERSION:
        raise ConnectionError(f"the broker speaks protocol version {version} only")


def _authenticate(challenge: bytes, access_key: AccessKey | None) -> bytes:
    """The Authenticate frame answering the broker's challenge."""
    nonce = frames.decode_challenge(challenge).nonce
    out = bytearray()
    if access_key is None:
        frames.encode_handshake(frames.Authenticate(), out)
    else:
        key_id, secret = access_key
        frames.encode_handshake(frames.Authenticate(key_id, frames.key_proof(secret, nonce, key_id)), out)
    return bytes(out)


def _check_authenticated(answer: bytes) -> None:
    """Raises BrokerError (the broker refused the key, with AWS's code) unless the opening is done."""
    result = frames.decode_handshake_answer(answer)
    if isinstance(result, Failure):
        raise from_failure(result)


class _Closed(ConnectionError):
    """The broker closed the connection while it opened."""


async def _open(
    send: Callable[[bytes], Awaitable[None]],
    receive: Callable[[], Awaitable[bytes]],
    decoder: frames.FrameDecoder,
    access_key: AccessKey | None,
) -> None:
    """The opening, once TLS is on: hello, the broker's welcome, the key's proof, the broker's
    answer. receive returns b"" at the end of the stream; what the broker sends after the opening
    stays in decoder."""
    await send(frames.hello())
    received = bytearray()
    while len(received) < frames.WELCOME_BYTES:
        chunk = await receive()
        if not chunk:
            raise _Closed()
        received += chunk
    _check_welcome(bytes(received[: frames.WELCOME_BYTES]))
    decoder.feed(bytes(received[frames.WELCOME_BYTES :]))

    async def next_payload() -> bytes:
        while (payload := decoder.next_payload()) is None:
            chunk = await receive()
            if not chunk:
                raise _Closed()
            decoder.feed(chunk)
        return payload

    await send(_authenticate(await next_payload(), access_key))
    _check_authenticated(await next_payload())


def _closed_while_opening(tls: bool) -> ConnectionError:
    if tls:  # TLS 1.3 ends the client's handshake before the broker checks its certificate
        return ConnectionError(
            "the broker closed the TLS connection while it opened: it may have refused this client's certificate, "
            "or the lack of one"
        )
    return ConnectionError("the broker closed the connection while it opened")


def _failed_to_open(error: BaseException, tls: bool) -> ConnectionError:
    """A connection that broke while opening: TLS failed (a certificate one side refused), the
    broker went away (over TLS, as it does when it refuses a client's certificate), or what it sent
    was not the protocol."""
    cause = error.__cause__ if isinstance(error.__cause__, ssl.SSLError) else error
    if isinstance(cause, ssl.SSLEOFError) or getattr(cause, "reason", None) == "UNEXPECTED_EOF_WHILE_READING":
        return _closed_while_opening(tls=True)
    if isinstance(cause, ssl.SSLError):
        return ConnectionError(f"the TLS connection to the broker failed: {cause}")
    if tls and not isinstance(cause, frames.ProtocolError):
        return _closed_while_opening(tls=True)
    return ConnectionError(f"the broker closed the connection while it opened: {cause}")


def queue_name(queue: str) -> str:
    """A queue's name from its name or URL."""
    return queue.rstrip("/").rsplit("/", 1)[-1]


def topic_name(topic: str) -> str:
    """A topic's name from its name, its ARN or one of its subscriptions' ARNs."""
    parts = topic.split(":")
    return parts[5] if len(parts) >= 6 and parts[0] == "arn" else topic


def _check(result: Result) -> Result:
    if isinstance(result, Failure):
        raise from_failure(result)
    return result


class _Operations:
    """The SQS- and SNS-shaped methods, written once over `call` for both clients."""

    async def call(self, op: Op) -> Result:
        """Send op and wait for its result (a Failure is raised as BrokerError)."""
        raise NotImplementedError

    async def _ask(self, op: Op, kind: type[R]) -> R:
        """op's result, which must be a `kind`: anything else is a broker this client does not
        understand, and raises ConnectionError."""
        result = await self.call(op)
        if not isinstance(result, kind):
            raise ConnectionError(f"the broker answered {type(op).__name__} with {type(result).__name__}, not {kind.__name__}")
        return result

    # --- SQS ------------------------------------------------------------------------------------
    async def create_queue(
        self, name: str, attributes: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        """Creates the queue (or finds it, when it exists with the same attributes); returns its URL."""
        return (await self._ask(CreateQueue(name, dict(attributes or {}), dict(tags or {})), QueueName)).queue

    async def tag_queue(self, queue: str, tags: Mapping[str, str]) -> None:
        """Adds or replaces the queue's tags."""
        await self.call(TagQueue(queue_name(queue), dict(tags)))

    async def untag_queue(self, queue: str, tag_keys: Sequence[str]) -> None:
        """Removes the queue's tags with these keys."""
        await self.call(UntagQueue(queue_name(queue), list(tag_keys)))

    async def list_queue_tags(self, queue: str) -> dict[str, str]:
        """The queue's tags."""
        return (await self._ask(ListQueueTags(queue_name(queue)), Tags)).tags

    async def add_permission(self, queue: str, label: str, account_ids: Sequence[str], actions: Sequence[str]) -> None:
        """Adds a statement, named label, to the queue's policy: these accounts may do these actions."""
        await self.call(AddPermission(queue_name(queue), label, list(account_ids), list(actions)))

    async def remove_permission(self, queue: str, label: str) -> None:
        """Removes the statement named label from the queue's policy."""
        await self.call(RemovePermission(queue_name(queue), label))

    async def peek_messages(self, queue: str, max_messages: int = 10, after_seq: int = 0, state: str = "") -> Peeked:
        """Browse without consuming; returns a Peeked (messages, next_after_seq for the next page).
        state: "" (all), "visible", "in_flight" or "delayed"."""
        return await self._ask(PeekMessages(queue_name(queue), max_messages, after_seq, state), Peeked)

    async def get_queue_url(self, name: str) -> str:
        """The URL of the queue with this name."""
        return (await self._ask(GetQueueUrl(name), QueueName)).queue

    async def list_queues(self, prefix: str = "", max_results: int | None = None, next_token: str | None = None) -> QueueNames:
        """The URLs of the queues whose names start with prefix (a page of them, with max_results)."""
        return await self._ask(ListQueues(prefix, max_results, next_token), QueueNames)

    async def delete_queue(self, queue: str) -> None:
        """Deletes the queue and every message in it."""
        await self.call(DeleteQueue(queue_name(queue)))

    async def purge_queue(self, queue: str) -> None:
        """Deletes every message in the queue."""
        await self.call(PurgeQueue(queue_name(queue)))

    async def get_queue_attributes(self, queue: str, names: Sequence[str] = ("All",)) -> dict[str, str]:
        """The queue's attributes by name (SQS's names: VisibilityTimeout, ApproximateNumberOfMessages...)."""
        return (await self._ask(GetQueueAttributes(queue_name(queue), list(names)), Attributes)).attributes

    async def set_queue_attributes(self, queue: str, attributes: Mapping[str, str]) -> None:
        """Sets these of the queue's attributes."""
        await self.call(SetQueueAttributes(queue_name(queue), dict(attributes)))

    async def send_message(
        self,
        queue: str,
        body: str,
        *,
        delay_seconds: int | None = None,
        message_attributes: Mapping[str, MessageAttributeValue] | None = None,
        message_group_id: str | None = None,
        message_deduplication_id: str | None = None,
    ) -> Sent:
        """Sends one message; returns its id (and, on a FIFO queue, its sequence number) once stored."""
        op = SendMessage(
            queue_name(queue),
            body,
            delay_seconds,
            dict(message_attributes or {}),
            message_group_id=message_group_id,
            message_deduplication_id=message_deduplication_id,
        )
        return await self._ask(op, Sent)

    async def send_message_batch(self, queue: str, entries: Sequence[SendEntry]) -> SendBatchResult:
        """Sends up to 10 messages; returns which were stored and which failed, by entry id."""
        return await self._ask(SendMessageBatch(queue_name(queue), list(entries)), SendBatchResult)

    async def receive_message(
        self,
        queue: str,
        *,
        max_number_of_messages: int = 1,
        visibility_timeout: int | None = None,
        wait_time_seconds: int | None = None,
        attribute_names: Sequence[str] = (),
        message_attribute_names: Sequence[str] = (),
        receive_request_attempt_id: str | None = None,
    ) -> list[ReceivedMessage]:
        """Receives up to max_number_of_messages (10 at most), waiting up to wait_time_seconds for
        the first (the queue's ReceiveMessageWaitTimeSeconds when None); they are invisible to
        other receivers for visibility_timeout seconds (the queue's when None)."""
        op = ReceiveMessage(
            queue_name(queue),
            max_number_of_messages,
            visibility_timeout,
            wait_time_seconds,
            list(attribute_names),
            list(message_attribute_names),
            receive_request_attempt_id,
        )
        return (await self._ask(op, Received)).messages

    async def delete_message(self, queue: str, receipt_handle: str) -> None:
        """Deletes the received message this receipt handle names."""
        await self.call(DeleteMessage(queue_name(queue), receipt_handle))

    async def delete_message_batch(self, queue: str, entries: Sequence[DeleteEntry]) -> BatchResult:
        """Deletes up to 10 received messages; returns which entries were deleted and which failed."""
        return await self._ask(DeleteMessageBatch(queue_name(queue), list(entries)), BatchResult)

    async def change_message_visibility(self, queue: str, receipt_handle: str, visibility_timeout: int) -> None:
        """Makes a received message invisible for visibility_timeout seconds from now (0: visible now)."""
        await self.call(ChangeMessageVisibility(queue_name(queue), receipt_handle, visibility_timeout))

    async def change_message_visibility_batch(self, queue: str, entries: Sequence[VisibilityEntry]) -> BatchResult:
        """change_message_visibility for up to 10 messages; returns which entries changed and which failed."""
        return await self._ask(ChangeMessageVisibilityBatch(queue_name(queue), list(entries)), BatchResult)

    async def list_dead_letter_source_queues(
        self, queue: str, max_results: int | None = None, next_token: str | None = None
    ) -> QueueNames:
        """The URLs of the queues whose redrive policy names this queue as their dead-letter queue."""
        return await self._ask(ListDeadLetterSourceQueues(queue_name(queue), max_results, next_token), QueueNames)

    async def start_message_move_task(
        self, source_queue: str, destination_arn: str = "", max_number_of_messages_per_second: int | None = None
    ) -> str:
        """Starts moving a dead-letter queue's messages back to their sources (or to destination_arn);
        returns the task's handle."""
        op = StartMessageMoveTask(queue_name(source_queue), destination_arn, max_number_of_messages_per_second)
        return (await self._ask(op, TaskHandle)).task_handle

    async def list_message_move_tasks(self, source_queue: str, max_results: int = 1) -> list[MoveTask]:
        """The queue's latest move tasks, the newest first."""
        return (await self._ask(ListMessageMoveTasks(queue_name(source_queue), max_results), MoveTasks)).tasks

    async def cancel_message_move_task(self, source_queue: str, task_handle: str) -> int:
        """Cancels a running move task; returns how many messages it had moved."""
        return (await self._ask(CancelMessageMoveTask(queue_name(source_queue), task_handle), MovedCount)).moved

    # --- SNS ------------------------------------------------------------------------------------
    async def create_topic(
        self, name: str, attributes: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        """Creates the topic (or finds it); returns its ARN."""
        return (await self._ask(CreateTopic(name, dict(attributes or {}), dict(tags or {})), Arn)).arn

    async def delete_topic(self, topic: str) -> None:
        """Deletes the topic and its subscriptions."""
        await self.call(DeleteTopic(topic_name(topic)))

    async def list_topics(self, next_token: str | None = None) -> Arns:
        """A page of the topics' ARNs."""
        return await self._ask(ListTopics(next_token), Arns)

    async def get_topic_attributes(self, topic: str) -> dict[str, str]:
        """The topic's attributes by name."""
        return (await self._ask(GetTopicAttributes(topic_name(topic)), Attributes)).attributes

    async def set_topic_attributes(self, topic: str, name: str, value: str) -> None:
        """Sets one of the topic's attributes."""
        await self.call(SetTopicAttributes(topic_name(topic), name, value))

    async def subscribe(
        self, topic: str, protocol: str, endpoint: str, attributes: Mapping[str, str] | None = None, return_arn: bool = True
    ) -> str:
        """Returns the subscription's ARN (an HTTP/S or email one is pending until confirmed)."""
        op = Subscribe(topic_name(topic), protocol, endpoint, dict(attributes or {}), return_arn)
        return (await self._ask(op, Arn)).arn

    async def confirm_subscription(self, topic: str, token: str) -> str:
        """Returns the confirmed subscription's ARN."""
        return (await self._ask(ConfirmSubscription(topic_name(topic), token), Arn)).arn

    async def unsubscribe(self, subscription_arn: str) -> None:
        """Deletes the subscription."""
        await self.call(Unsubscribe(topic_name(subscription_arn), subscription_arn))

    async def list_subscriptions_by_topic(self, topic: str, next_token: str | None = None) -> SubscriptionList:
        """A page of the topic's subscriptions."""
        return await self._ask(ListSubscriptionsByTopic(topic_name(topic), next_token), SubscriptionList)

    async def get_subscription_attributes(self, subscription_arn: str) -> dict[str, str]:
        """The subscription's attributes by name."""
        op = GetSubscriptionAttributes(topic_name(subscription_arn), subscription_arn)
        return (await self._ask(op, Attributes)).attributes

    async def set_subscription_attributes(self, subscription_arn: str, name: str, value: str) -> None:
        """Sets one of the subscription's attributes (FilterPolicy, RawMessageDelivery...)."""
        await self.call(SetSubscriptionAttributes(topic_name(subscription_arn), subscription_arn, name, value))

    async def publish(
        self,
        topic: str,
        message: str,
        *,
        subject: str | None = None,
        message_structure: str | None = None,
        message_attributes: Mapping[str, MessageAttributeValue] | None = None,
        message_group_id: str | None = None,
        message_deduplication_id: str | None = None,
    ) -> PublishedMessage:
        """Publishes one message; returns its id once it and its deliveries are stored."""
        op = Publish(
            topic_name(topic), message, subject, message_structure, dict(message_attributes or {}),
            message_group_id, message_deduplication_id,
        )
        return await self._ask(op, PublishedMessage)

    async def publish_batch(self, topic: str, entries: Sequence[PublishEntry]) -> PublishBatchResult:
        """Publishes up to 10 messages; returns which were published and which failed, by entry id."""
        return await self._ask(PublishBatch(topic_name(topic), list(entries)), PublishBatchResult)

    async def explain(
        self, topic: str, message: str, message_attributes: Mapping[str, MessageAttributeValue] | None = None
    ) -> list[Verdict]:
        """Which subscriptions a message would reach, and why not the others (nothing is published)."""
        op = ExplainDelivery(topic_name(topic), message, dict(message_attributes or {}))
        return (await self._ask(op, Explanation)).verdicts


class _Answer:
    """One request's answer: set once (synchronously, by the receive loop), awaited by the caller,
    who gives up on it at `deadline` (AnyIO's clock). actors/mailbox.py's ReplySlot is Trio's; this
    one is AnyIO's, for either loop."""

    __slots__ = ("_event", "_value", "deadline")

    def __init__(self, deadline: float) -> None:
        self._event = anyio.Event()
        self._value: Result | BaseException | None = None
        self.deadline = deadline

    def __call__(self, value: Result | BaseException) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    async def wait(self) -> Result | BaseException | None:
        await self._event.wait()
        return self._value


class Client(_Operations):
    """A pipelining client, under asyncio or Trio. Many tasks may call it at once; use open_client().
    On plain TCP a call writes its request itself when the socket (under asyncio, its transport)
    takes it at once (outbox.py), so a lone request costs no switch to another task on its way out."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        task_group: anyio.abc.TaskGroup,
        decoder: frames.FrameDecoder | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """decoder: holds what the broker sent after the opening, if anything. timeout_s: each call's.
        The client's two tasks (sending, receiving) run in task_group until close()."""
        self._stream = stream
        self._timeout_s = timeout_s
        self._decoder = decoder or frames.FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME_BYTES)
        self._ids = itertools.count(1)
        self._unsent_requests = anyio.Semaphore(MAX_UNSENT_REQUESTS)
        self._requests = Outbox(self._requests_sent, anyio.Event)
        self._requests.attach(stream)
        # Registrations run ahead of answers by at most what the broker lets be in flight plus what
        # the socket buffers hold; this bound is far above both.
        self._registered_send, self._registered = anyio.create_memory_object_stream[tuple[int, _Answer]](65536)
        self._lost: BaseException | None = None
        self._closed_because: BaseException = ConnectionError("closed by the broker")  # the receive loop's to say
        # Calls give up at their deadlines: the receive loop's wait for answers ends at the earliest
        # (one scope for every call, where a scope each cost asyncio a quarter of its throughput).
        self._next_deadline = math.inf  # no call's is earlier; some may be later
        self._deadline_scope = anyio.CancelScope()  # the receive loop's next wait, and its deadline
        task_group.start_soon(self._send_loop)
        task_group.start_soon(self._receive_loop)

    async def call(self, op: Op) -> Result:
        """Send op and wait for its result. Raises BrokerError, ConnectionError, or TimeoutError when
        no answer came in time (a late one is dropped)."""
        if self._lost is not None:
            raise ConnectionError(f"connection to the broker lost: {self._lost}")
        timeout_s = self._timeout_s + (MAX_LONG_POLL_S if isinstance(op, ReceiveMessage) else 0)
        deadline = anyio.current_time() + timeout_s
        try:
            self._unsent_requests.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.CancelScope(deadline=deadline) as waiting:
                await self._unsent_requests.acquire()
            if waiting.cancelled_caught:
                raise TimeoutError(f"the broker did not answer {type(op).__name__} within {timeout_s:g} s") from None
        answer = _Answer(deadline)
        request_id = next(self._ids)
        pending = self._requests.pending
        start = len(pending)
        try:
            frames.encode_request(request_id, op, pending)
        except BaseException:
            del pending[start:]  # no half frame on the wire
            self._unsent_requests.release()
            raise
        self._registered_send.send_nowait((request_id, answer))
        if answer.deadline < self._next_deadline:  # the receive loop wakes then, to give up on it
            self._next_deadline = self._deadline_scope.deadline = answer.deadline
        self._requests.added()
        result = await answer.wait()
        if isinstance(result, TimeoutError):
            raise TimeoutError(f"the broker did not answer {type(op).__name__} within {timeout_s:g} s")
        if isinstance(result, BaseException):
            raise ConnectionError(f"connection to the broker lost: {result}")
        assert result is not None
        return _check(result)

    def _requests_sent(self, count: int) -> None:
        for _ in range(count):
            self._unsent_requests.release()

    def close(self) -> None:
        """No more requests: a later call raises ConnectionError."""
        self._lost = self._closed_because = ConnectionError("the client is closed")
        self._requests.detach()

    async def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        batch_size: int = MAX_BATCH_MESSAGES,
        concurrency: int = 1,
        visibility_timeout: int = 30,
        wait_time: int = MAX_LONG_POLL_S,
        attribute_names: Sequence[str] = (),
        message_attribute_names: Sequence[str] = (),
        stop: StopSignal | None = None,
    ) -> None:
        """Receive the queue's messages and hand them to handler, a batch at a time, until `stop`
        is set (an asyncio, Trio or AnyIO Event) or this is cancelled.

        `concurrency` batches of up to `batch_size` messages are handled at once (no more are
        received than can be handled). Each batch is received with `visibility_timeout` (seconds),
        waiting up to `wait_time` seconds for the first message; while its handler runs, the batch's
        visibility is extended every half visibility timeout (ChangeMessageVisibilityBatch), so a
        slow handler keeps its messages from other consumers. handler(batch) returns the messages it
        failed on, or None when none failed: the others are deleted; the failed ones stay, to be
        received again once their visibility lapses (and counted by the queue's redrive policy). A
        handler that raises fails its whole batch (the error is logged, consuming goes on).

        Once `stop` is set, no more is received: the receives under way end (within `wait_time`),
        their batches are handled and settled, and consume returns. A cancelled consume cancels its
        handlers instead: their messages come back after the visibility timeout. Raises
        ConnectionError when the connection is lost (the batches in hand are not deleted, and come
        back), BrokerError when the broker refuses a receive (the queue is gone).
        """
        if not 1 <= batch_size <= MAX_BATCH_MESSAGES:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_MESSAGES}, not {batch_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if visibility_timeout < 1:
            raise ValueError(f"visibility_timeout must be at least 1 s (it is extended while a handler runs), not {visibility_timeout}")
        if not 0 <= wait_time <= MAX_LONG_POLL_S:
            raise ValueError(f"wait_time must be between 0 and {MAX_LONG_POLL_S} s, not {wait_time}")
        receive = functools.partial(
            self.receive_message,
            queue,
            max_number_of_messages=batch_size,
            visibility_timeout=visibility_timeout,
            wait_time_seconds=wait_time,
            attribute_names=attribute_names,
            message_attribute_names=message_attribute_names,
        )

        async def consumer() -> None:
            while stop is None or not stop.is_set():
                batch = await receive()
                if batch:
                    await self._settle(queue, batch, await self._handled(queue, batch, handler, visibility_timeout))

        with _unwrapped_errors():
            async with anyio.create_task_group() as consumers:
                for _ in range(concurrency):
                    consumers.start_soon(consumer)

    async def _handled(
        self, queue: str, batch: list[ReceivedMessage], handler: Handler, visibility_timeout: int
    ) -> set[str]:
        """Runs handler on batch, keeping the batch invisible meanwhile; returns the receipt handles
        of the messages it failed on."""
        async with anyio.create_task_group() as heartbeat:
            heartbeat.start_soon(self._keep_invisible, queue, batch, visibility_timeout)
            try:
                failed = await handler(batch)
            except Exception:
                log.exception("the handler failed on a batch of %d from %s: it comes back after its visibility timeout", len(batch), queue)
                failed = batch
            heartbeat.cancel_scope.cancel()
        return {message.receipt_handle for message in failed or ()}

    async def _keep_invisible(self, queue: str, batch: list[ReceivedMessage], visibility_timeout: int) -> NoReturn:
        entries = [VisibilityEntry(str(i), message.receipt_handle, visibility_timeout) for i, message in enumerate(batch)]
        while True:
            await anyio.sleep(visibility_timeout / 2)
            # An entry that fails (its message deleted meanwhile, or its handle stale) needs no more.
            result = await self.change_message_visibility_batch(queue, entries)
            if result.failed:
                refused = {failure.id for failure in result.failed}
                entries = [entry for entry in entries if entry.id not in refused]

    async def _settle(self, queue: str, batch: list[ReceivedMessage], failed: set[str]) -> None:
        """Deletes the batch's messages but the failed ones."""
        done = [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(batch) if m.receipt_handle not in failed]
        if not done:
            return
        result = await self.delete_message_batch(queue, done)
        for failure in result.failed:  # its visibility lapsed, so another consumer may have it
            log.warning("a handled message from %s could not be deleted: %s %s", queue, failure.code, failure.message)

    async def _send_loop(self) -> None:
        """Send what calls could not write themselves; on a broken connection, close the stream,
        which ends the receive loop and fails every call waiting."""
        try:
            await self._requests.run(self._stream)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError) as error:
            self._lost = error
            await anyio.aclose_forcefully(self._stream)

    async def _receive_loop(self) -> None:
        """Hands each answer to its call, and a TimeoutError to each call whose deadline passes;
        when the connection ends, the reason to every call still waiting."""
        pending: dict[int, _Answer] = {}
        try:
            while True:
                with self._deadline_scope:
                    await self._receive_answers(pending)
                self._deadline_scope = anyio.CancelScope()
                self._give_up_overdue(pending)
        except anyio.EndOfStream:
            pass
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError, frames.ProtocolError) as exc:
            self._closed_because = exc
        finally:  # also when open_client's block ends and cancels this loop: no call waits forever
            self._lost = self._closed_because
            self._take_registrations(pending)
            for answer in pending.values():
                answer(self._closed_because)

    async def _receive_answers(self, pending: dict[int, _Answer]) -> NoReturn:
        decoder = self._decoder
        while True:
            decoder.feed(await self._stream.receive(1 << 16))
            while (payload := decoder.next_payload()) is not None:
                frame = frames.decode_response(payload)
                if frame.id not in pending:
                    self._take_registrations(pending)
                answer = pending.pop(frame.id, None)
                if answer is not None:
                    answer(frame.result)
                elif frame.id == 0 and isinstance(frame.result, Failure):
                    self._closed_because = ConnectionError(frame.result.message)

    def _take_registrations(self, pending: dict[int, _Answer]) -> None:
        """The calls made since the last look, into pending."""
        while True:
            try:
                request_id, answer = self._registered.receive_nowait()
            except anyio.WouldBlock:
                return
            pending[request_id] = answer

    def _give_up_overdue(self, pending: dict[int, _Answer]) -> None:
        """The earliest deadline has come: every call past its own gets a TimeoutError (its answer,
        if it comes, is dropped); the next wait ends at the earliest deadline left."""
        self._take_registrations(pending)
        now = anyio.current_time()
        for request_id in [request_id for request_id, answer in pending.items() if answer.deadline <= now]:
            pending.pop(request_id)(TimeoutError())
        self._next_deadline = self._deadline_scope.deadline = min((answer.deadline for answer in pending.values()), default=math.inf)


@contextlib.contextmanager
def _unwrapped_errors() -> Iterator[None]:
    """An error from a task group as itself, not in an ExceptionGroup, when it is the only one
    (the client's own tasks raise none: what comes out is the caller's, or a consumer's)."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors = group.exceptions
        while len(errors) == 1 and isinstance(errors[0], BaseExceptionGroup):
            errors = errors[0].exceptions
        if len(errors) == 1:
            raise errors[0] from errors[0].__cause__  # its own cause kept, the group not shown
        raise


@contextlib.asynccontextmanager
async def open_client(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    tls: TlsOption = None,
    access_key: AccessKey | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AsyncIterator[Client]:
    """A connection to the broker, opened (TLS, the handshake, the key's proof) before this yields,
    under asyncio or Trio. Raises ConnectionError when it cannot be opened, TimeoutError when
    opening takes longer than timeout_s, and BrokerError when the broker refuses the key. The
    connection is closed on leaving; calls still waiting then raise ConnectionError."""
    with anyio.move_on_after(timeout_s) as opening:
        stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
    if opening.cancelled_caught:
        raise TimeoutError(f"could not connect to the broker at {host}:{port} within {timeout_s:g} s")
    context = client_context(tls)
    async with stream:
        decoder = frames.FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME_BYTES)
        with anyio.move_on_after(timeout_s) as opening:
            try:
                if context is not None:
                    stream = await TLSStream.wrap(stream, hostname=host, ssl_context=context, standard_compatible=False)
                await _open(stream.send, functools.partial(_receive_or_end, stream), decoder, access_key)
            except (anyio.BrokenResourceError, ssl.SSLError, frames.ProtocolError) as error:
                raise _failed_to_open(error, context is not None) from None
            except (_Closed, anyio.EndOfStream):
                raise _closed_while_opening(context is not None) from None
        if opening.cancelled_caught:
            raise TimeoutError(f"the broker at {host}:{port} did not open the connection within {timeout_s:g} s")
        with _unwrapped_errors():
            async with anyio.create_task_group() as tasks:
                client = Client(stream, tasks, decoder, timeout_s)
                try:
                    yield client
                finally:
                    client.close()
                    tasks.cancel_scope.cancel()


async def _receive_or_end(stream: anyio.abc.ByteStream) -> bytes:
    try:
        return await stream.receive(1 << 16)
    except anyio.EndOfStream:
        return b""


def _complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends: the blocking client's, whose calls block on
    the socket instead."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value
    coroutine.close()
    raise RuntimeError("the blocking client's call suspended")


class _SocketCalls(_Operations):
    """The operations over a blocking socket, one request at a time."""

    def __init__(self, sock: socket.socket, decoder: frames.FrameDecoder) -> None:
        self.socket = sock
        self.decoder = decoder
        self._ids = itertools.count(1)

    async def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    async def receive(self) -> bytes:
        return self.socket.recv(1 << 16)

    async def call(self, op: Op) -> Result:
        request_id = next(self._ids)
        out = bytearray()
        frames.encode_request(request_id, op, out)
        self.socket.sendall(out)
        while True:
            frame = frames.decode_response(self._next_payload())
            if frame.id == request_id:
                return _check(frame.result)
            if frame.id == 0 and isinstance(frame.result, Failure):
                raise ConnectionError(frame.result.message)

    def _next_payload(self) -> bytes:
        while (payload := self.decoder.next_payload()) is None:
            data = self.socket.recv(1 << 16)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self.decoder.feed(data)
        return payload


def _blocking(method: Callable[Concatenate[_Operations, P], Coroutine[Any, Any, T]]) -> Callable[Concatenate[BlockingClient, P], T]:
    """The blocking client's form of one of the operations."""

    @functools.wraps(method)
    def blocking(self: BlockingClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return _complete(method(self._calls, *args, **kwargs))

    return blocking


class BlockingClient:
    """A blocking client for scripts and the CLI: one request at a time on one socket. Its methods
    are the asynchronous client's, blocking; each raises what that one does, and OSError (socket's
    TimeoutError among them) when the socket fails or a wait exceeds timeout_s."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        tls: TlsOption = None,
        access_key: AccessKey | None = None,
    ) -> None:
        """Connects and opens (TLS, the handshake, the key's proof), blocking. Raises
        ConnectionError (an OSError) when it cannot, BrokerError when the broker refuses the key."""
        sock = socket.create_connection((host, port), timeout=timeout_s)
        self._calls = _SocketCalls(sock, frames.FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME_BYTES))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = client_context(tls)
            if context is not None:
                try:
                    self._calls.socket = context.wrap_socket(sock, server_hostname=host)
                except ssl.SSLError as error:
                    raise _failed_to_open(error, tls=True) from None
            try:
                _complete(_open(self._calls.send, self._calls.receive, self._calls.decoder, access_key))
            except _Closed:
                raise _closed_while_opening(context is not None) from None
            except (ssl.SSLError, frames.ProtocolError) as error:  # TLS 1.3: a refused client certificate shows on the first read
                raise _failed_to_open(error, context is not None) from None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection."""
        self._calls.socket.close()

    def call(self, op: Op) -> Result:
        """Send op and wait for its result (a Failure is raised as BrokerError)."""
        return _complete(self._calls.call(op))

    create_queue = _blocking(_Operations.create_queue)
    tag_queue = _blocking(_Operations.tag_queue)
    untag_queue = _blocking(_Operations.untag_queue)
    list_queue_tags = _blocking(_Operations.list_queue_tags)
    add_permission = _blocking(_Operations.add_permission)
    remove_permission = _blocking(_Operations.remove_permission)
    peek_messages = _blocking(_Operations.peek_messages)
    get_queue_url = _blocking(_Operations.get_queue_url)
    list_queues = _blocking(_Operations.list_queues)
    delete_queue = _blocking(_Operations.delete_queue)
    purge_queue = _blocking(_Operations.purge_queue)
    get_queue_attributes = _blocking(_Operations.get_queue_attributes)
    set_queue_attributes = _blocking(_Operations.set_queue_attributes)
    send_message = _blocking(_Operations.send_message)
    send_message_batch = _blocking(_Operations.send_message_batch)
    receive_message = _blocking(_Operations.receive_message)
    delete_message = _blocking(_Operations.delete_message)
    delete_message_batch = _blocking(_Operations.delete_message_batch)
    change_message_visibility = _blocking(_Operations.change_message_visibility)
    change_message_visibility_batch = _blocking(_Operations.change_message_visibility_batch)
    list_dead_letter_source_queues = _blocking(_Operations.list_dead_letter_source_queues)
    start_message_move_task = _blocking(_Operations.start_message_move_task)
    list_message_move_tasks = _blocking(_Operations.list_message_move_tasks)
    cancel_message_move_task = _blocking(_Operations.cancel_message_move_task)
    create_topic = _blocking(_Operations.create_topic)
    delete_topic = _blocking(_Operations.delete_topic)
    list_topics = _blocking(_Operations.list_topics)
    get_topic_attributes = _blocking(_Operations.get_topic_attributes)
    set_topic_attributes = _blocking(_Operations.set_topic_attributes)
    subscribe = _blocking(_Operations.subscribe)
    confirm_subscription = _blocking(_Operations.confirm_subscription)
    unsubscribe = _blocking(_Operations.unsubscribe)
    list_subscriptions_by_topic = _blocking(_Operations.list_subscriptions_by_topic)
    get_subscription_attributes = _blocking(_Operations.get_subscription_attributes)
    set_subscription_attributes = _blocking(_Operations.set_subscription_attributes)
    publish = _blocking(_Operations.publish)
    publish_batch = _blocking(_Operations.publish_batch)
    explain = _blocking(_Operations.explain)


__all__ = [
    "Attributes",
    "BlockingClient",
    "BrokerError",
    "Client",
    "DeleteEntry",
    "Handler",
    "StopSignal",
    "MessageAttributeValue",
    "QueueName",
    "QueueNames",
    "Received",
    "ReceivedMessage",
    "SendEntry",
    "VisibilityEntry",
    "open_client",
    "queue_name",
]

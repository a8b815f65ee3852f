"""Client library for the native protocol: a Trio client that pipelines, and a blocking client for
scripts. Both raise BrokerError (with the AWS error code) when the broker answers with a failure,
or refuses the connection's key, and ConnectionError when the connection is lost or cannot be
opened. Queues are named by name or by queue URL.

    async with open_client("127.0.0.1", 7480) as client:
        url = await client.create_queue("orders")
        await client.send_message(url, "hello")

    with BlockingClient("127.0.0.1", 7480, tls="ca.pem", access_key=("ID", "SECRET")) as client:
        client.send_message("orders", "hello")

tls: None (plain TCP), True (TLS, trusting the system's CAs), a CA file to trust, or an
ssl.SSLContext (with load_cert_chain for a client certificate). open_client's timeout_s: how long opening the
connection, and each call, may take (a receive may wait its long poll's 20 s beyond) before it
raises TimeoutError; the connection stays usable for other calls. access_key: (id, secret) of a key
the broker knows; the secret never leaves this process, only a proof over the broker's nonce does.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import trio

from dovecote.actors.errors import BrokerError, from_failure
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import (
    MessageAttributeValue,
    AddPermission,
    Attributes,
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
    Op,
    PeekMessages,
    Publish,
    PublishBatch,
    PublishEntry,
    PurgeQueue,
    QueueName,
    QueueNames,
    ReceiveMessage,
    Received,
    ReceivedMessage,
    RemovePermission,
    Result,
    SendEntry,
    SendMessage,
    SendMessageBatch,
    SetQueueAttributes,
    SetSubscriptionAttributes,
    SetTopicAttributes,
    StartMessageMoveTask,
    Subscribe,
    TagQueue,
    Unsubscribe,
    UntagQueue,
    VisibilityEntry,
)

from . import frames
from .limits import DEFAULT_MAX_RESPONSE_FRAME_BYTES
from .outbox import Outbox
from .tls import TlsOption, client_context

DEFAULT_PORT = 7480
DEFAULT_TIMEOUT_S = 60.0
MAX_LONG_POLL_S = 20  # SQS's longest WaitTimeSeconds, which a queue's ReceiveMessageWaitTimeSeconds may set
MAX_UNSENT_REQUESTS = 1024  # a caller past them waits until the socket takes some
AccessKey = tuple[str, str]  # (key id, secret)


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


def _closed_while_opening(tls: bool) -> ConnectionError:
    if tls:  # TLS 1.3 ends the client's handshake before the broker checks its certificate
        return ConnectionError(
            "the broker closed the TLS connection while it opened: it may have refused this client's certificate, "
            "or the lack of one"
        )
    return ConnectionError("the broker closed the connection while it opened")


def _failed_to_open(error: BaseException) -> ConnectionError:
    """A connection that broke while opening: TLS failed (a certificate one side refused), the
    broker went away, or what it sent was not the protocol."""
    cause = error.__cause__ if isinstance(error.__cause__, ssl.SSLError) else error
    if isinstance(cause, ssl.SSLEOFError) or getattr(cause, "reason", None) == "UNEXPECTED_EOF_WHILE_READING":
        return _closed_while_opening(tls=True)
    if isinstance(cause, ssl.SSLError):
        return ConnectionError(f"the TLS connection to the broker failed: {cause}")
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
    """The SQS-shaped methods, written once over `call` for both clients (`call` is either
    blocking or awaitable; each method returns what `call` returns, post-processed by `_then`)."""

    def call(self, op: Op) -> Any:
        raise NotImplementedError

    def _then(self, value: Any, finish: Any) -> Any:
        raise NotImplementedError

    def create_queue(
        self, name: str, attributes: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
    ) -> Any:
        return self._then(self.call(CreateQueue(name, dict(attributes or {}), dict(tags or {}))), lambda r: r.queue)

    def tag_queue(self, queue: str, tags: Mapping[str, str]) -> Any:
        return self._then(self.call(TagQueue(queue_name(queue), dict(tags))), lambda r: None)

    def untag_queue(self, queue: str, tag_keys: Sequence[str]) -> Any:
        return self._then(self.call(UntagQueue(queue_name(queue), list(tag_keys))), lambda r: None)

    def list_queue_tags(self, queue: str) -> Any:
        return self._then(self.call(ListQueueTags(queue_name(queue))), lambda r: r.tags)

    def add_permission(self, queue: str, label: str, account_ids: Sequence[str], actions: Sequence[str]) -> Any:
        op = AddPermission(queue_name(queue), label, list(account_ids), list(actions))
        return self._then(self.call(op), lambda r: None)

    def peek_messages(self, queue: str, max_messages: int = 10, after_seq: int = 0, state: str = "") -> Any:
        """Browse without consuming; returns a Peeked (messages, next_after_seq for the next page)."""
        return self._then(self.call(PeekMessages(queue_name(queue), max_messages, after_seq, state)), lambda r: r)

    def remove_permission(self, queue: str, label: str) -> Any:
        return self._then(self.call(RemovePermission(queue_name(queue), label)), lambda r: None)

    def get_queue_url(self, name: str) -> Any:
        return self._then(self.call(GetQueueUrl(name)), lambda r: r.queue)

    def list_queues(self, prefix: str = "", max_results: int | None = None, next_token: str | None = None) -> Any:
        return self._then(self.call(ListQueues(prefix, max_results, next_token)), lambda r: r)

    def delete_queue(self, queue: str) -> Any:
        return self._then(self.call(DeleteQueue(queue_name(queue))), lambda r: None)

    def purge_queue(self, queue: str) -> Any:
        return self._then(self.call(PurgeQueue(queue_name(queue))), lambda r: None)

    def get_queue_attributes(self, queue: str, names: Sequence[str] = ("All",)) -> Any:
        return self._then(self.call(GetQueueAttributes(queue_name(queue), list(names))), lambda r: r.attributes)

    def set_queue_attributes(self, queue: str, attributes: Mapping[str, str]) -> Any:
        return self._then(self.call(SetQueueAttributes(queue_name(queue), dict(attributes))), lambda r: None)

    def send_message(
        self,
        queue: str,
        body: str,
        *,
        delay_seconds: int | None = None,
        message_attributes: Mapping[str, MessageAttributeValue] | None = None,
        message_group_id: str | None = None,
        message_deduplication_id: str | None = None,
    ) -> Any:
        op = SendMessage(
            queue_name(queue),
            body,
            delay_seconds,
            dict(message_attributes or {}),
            message_group_id=message_group_id,
            message_deduplication_id=message_deduplication_id,
        )
        return self._then(self.call(op), lambda r: r)

    def send_message_batch(self, queue: str, entries: Sequence[SendEntry]) -> Any:
        return self._then(self.call(SendMessageBatch(queue_name(queue), list(entries))), lambda r: r)

    def receive_message(
        self,
        queue: str,
        *,
        max_number_of_messages: int = 1,
        visibility_timeout: int | None = None,
        wait_time_seconds: int | None = None,
        attribute_names: Sequence[str] = (),
        message_attribute_names: Sequence[str] = (),
        receive_request_attempt_id: str | None = None,
    ) -> Any:
        op = ReceiveMessage(
            queue_name(queue),
            max_number_of_messages,
            visibility_timeout,
            wait_time_seconds,
            list(attribute_names),
            list(message_attribute_names),
            receive_request_attempt_id,
        )
        return self._then(self.call(op), lambda r: r.messages)

    def list_dead_letter_source_queues(
        self, queue: str, max_results: int | None = None, next_token: str | None = None
    ) -> Any:
        return self._then(self.call(ListDeadLetterSourceQueues(queue_name(queue), max_results, next_token)), lambda r: r)

    def start_message_move_task(
        self, source_queue: str, destination_arn: str = "", max_number_of_messages_per_second: int | None = None
    ) -> Any:
        op = StartMessageMoveTask(queue_name(source_queue), destination_arn, max_number_of_messages_per_second)
        return self._then(self.call(op), lambda r: r.task_handle)

    def list_message_move_tasks(self, source_queue: str, max_results: int = 1) -> Any:
        return self._then(self.call(ListMessageMoveTasks(queue_name(source_queue), max_results)), lambda r: r.tasks)

    def cancel_message_move_task(self, source_queue: str, task_handle: str) -> Any:
        op = CancelMessageMoveTask(queue_name(source_queue), task_handle)
        return self._then(self.call(op), lambda r: r.moved)

    # --- SNS ------------------------------------------------------------------------------------
    def create_topic(self, name: str, attributes: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> Any:
        return self._then(self.call(CreateTopic(name, dict(attributes or {}), dict(tags or {}))), lambda r: r.arn)

    def delete_topic(self, topic: str) -> Any:
        return self._then(self.call(DeleteTopic(topic_name(topic))), lambda r: None)

    def list_topics(self, next_token: str | None = None) -> Any:
        return self._then(self.call(ListTopics(next_token)), lambda r: r)

    def get_topic_attributes(self, topic: str) -> Any:
        return self._then(self.call(GetTopicAttributes(topic_name(topic))), lambda r: r.attributes)

    def set_topic_attributes(self, topic: str, name: str, value: str) -> Any:
        return self._then(self.call(SetTopicAttributes(topic_name(topic), name, value)), lambda r: None)

    def subscribe(
        self, topic: str, protocol: str, endpoint: str, attributes: Mapping[str, str] | None = None, return_arn: bool = True
    ) -> Any:
        """Returns the subscription's ARN (an HTTP/S or email one is pending until confirmed)."""
        op = Subscribe(topic_name(topic), protocol, endpoint, dict(attributes or {}), return_arn)
        return self._then(self.call(op), lambda r: r.arn)

    def confirm_subscription(self, topic: str, token: str) -> Any:
        """Returns the confirmed subscription's ARN."""
        return self._then(self.call(ConfirmSubscription(topic_name(topic), token)), lambda r: r.arn)

    def unsubscribe(self, subscription_arn: str) -> Any:
        return self._then(self.call(Unsubscribe(topic_name(subscription_arn), subscription_arn)), lambda r: None)

    def list_subscriptions_by_topic(self, topic: str, next_token: str | None = None) -> Any:
        return self._then(self.call(ListSubscriptionsByTopic(topic_name(topic), next_token)), lambda r: r)

    def get_subscription_attributes(self, subscription_arn: str) -> Any:
        op = GetSubscriptionAttributes(topic_name(subscription_arn), subscription_arn)
        return self._then(self.call(op), lambda r: r.attributes)

    def set_subscription_attributes(self, subscription_arn: str, name: str, value: str) -> Any:
        op = SetSubscriptionAttributes(topic_name(subscription_arn), subscription_arn, name, value)
        return self._then(self.call(op), lambda r: None)

    def publish(
        self,
        topic: str,
        message: str,
        *,
        subject: str | None = None,
        message_structure: str | None = None,
        message_attributes: Mapping[str, MessageAttributeValue] | None = None,
        message_group_id: str | None = None,
        message_deduplication_id: str | None = None,
    ) -> Any:
        op = Publish(
            topic_name(topic), message, subject, message_structure, dict(message_attributes or {}),
            message_group_id, message_deduplication_id,
        )
        return self._then(self.call(op), lambda r: r)

    def publish_batch(self, topic: str, entries: Sequence[PublishEntry]) -> Any:
        return self._then(self.call(PublishBatch(topic_name(topic), list(entries))), lambda r: r)

    def explain(self, topic: str, message: str, message_attributes: Mapping[str, MessageAttributeValue] | None = None) -> Any:
        """Which subscriptions a message would reach, and why not the others (nothing is published)."""
        op = ExplainDelivery(topic_name(topic), message, dict(message_attributes or {}))
        return self._then(self.call(op), lambda r: r.verdicts)

    def delete_message(self, queue: str, receipt_handle: str) -> Any:
        return self._then(self.call(DeleteMessage(queue_name(queue), receipt_handle)), lambda r: None)

    def delete_message_batch(self, queue: str, entries: Sequence[DeleteEntry]) -> Any:
        return self._then(self.call(DeleteMessageBatch(queue_name(queue), list(entries))), lambda r: r)

    def change_message_visibility(self, queue: str, receipt_handle: str, visibility_timeout: int) -> Any:
        op = ChangeMessageVisibility(queue_name(queue), receipt_handle, visibility_timeout)
        return self._then(self.call(op), lambda r: None)

    def change_message_visibility_batch(self, queue: str, entries: Sequence[VisibilityEntry]) -> Any:
        return self._then(self.call(ChangeMessageVisibilityBatch(queue_name(queue), list(entries))), lambda r: r)


class Client(_Operations):
    """A pipelining Trio client. Many tasks may call it at once; use open_client(). A call writes
    its request to the socket itself when it takes it at once (outbox.py), so a lone request costs
    no switch to another task on its way out."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        nursery: trio.Nursery,
        decoder: frames.FrameDecoder | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """decoder: holds what the broker sent after the opening, if anything. timeout_s: each call's."""
        self._stream = stream
        self._timeout_s = timeout_s
        self._decoder = decoder or frames.FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME_BYTES)
        self._ids = itertools.count(1)
        self._unsent_requests = trio.Semaphore(MAX_UNSENT_REQUESTS)
        self._requests = Outbox(self._requests_sent)
        self._requests.attach(stream)
        # Registrations run ahead of answers by at most what the broker lets be in flight plus what
        # the socket buffers hold; this bound is far above both.
        self._registered_send, self._registered = trio.open_memory_channel[tuple[int, ReplySlot]](65536)
        self._lost: BaseException | None = None
        nursery.start_soon(self._send_loop)
        nursery.start_soon(self._receive_loop)

    async def call(self, op: Op) -> Result:  # type: ignore[override]
        """Send op and wait for its result. Raises BrokerError, ConnectionError, or TimeoutError when
        no answer came in time (a late one is dropped)."""
        if self._lost is not None:
            raise ConnectionError(f"connection to the broker lost: {self._lost}")
        slot: ReplySlot[Result | BaseException] = ReplySlot()
        timeout_s = self._timeout_s + (MAX_LONG_POLL_S if isinstance(op, ReceiveMessage) else 0)
        with trio.move_on_after(timeout_s) as deadline:
            try:
                self._unsent_requests.acquire_nowait()
            except trio.WouldBlock:
                await self._unsent_requests.acquire()
            request_id = next(self._ids)
            pending = self._requests.pending
            start = len(pending)
            try:
                frames.encode_request(request_id, op, pending)
            except BaseException:
                del pending[start:]  # no half frame on the wire
                self._unsent_requests.release()
                raise
            self._registered_send.send_nowait((request_id, slot))
            self._requests.added()
            result = await slot.wait()
        if deadline.cancelled_caught:
            raise TimeoutError(f"the broker did not answer {type(op).__name__} within {timeout_s:g} s")
        if isinstance(result, BaseException):
            raise ConnectionError(f"connection to the broker lost: {result}")
        return _check(result)

    async def _then(self, value: Any, finish: Any) -> Any:  # type: ignore[override]
        return finish(await value)

    def _requests_sent(self, count: int) -> None:
        for _ in range(count):
            self._unsent_requests.release()

    def close(self) -> None:
        """No more requests: a later call raises ConnectionError."""
        self._lost = ConnectionError("the client is closed")
        self._requests.detach()

    async def _send_loop(self) -> None:
        """Send what calls could not write themselves; on a broken connection, close the stream,
        which ends the receive loop and fails every call waiting."""
        try:
            await self._requests.run(self._stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._lost = error
            await trio.aclose_forcefully(self._stream)

    async def _receive_loop(self) -> None:
        pending: dict[int, ReplySlot] = {}
        decoder = self._decoder
        error: BaseException = ConnectionError("closed by the broker")
        try:
            while True:
                data = await self._stream.receive_some(1 << 16)
                if not data:
                    break
                decoder.feed(data)
                while (payload := decoder.next_payload()) is not None:
                    frame = frames.decode_response(payload)
                    while frame.id not in pending:
                        try:
                            request_id, slot = self._registered.receive_nowait()
                        except trio.WouldBlock:
                            break
                        pending[request_id] = slot
                    slot = pending.pop(frame.id, None)
                    if slot is not None:
                        slot(frame.result)
                    elif frame.id == 0 and isinstance(frame.result, Failure):
                        error = ConnectionError(frame.result.message)
        except (trio.BrokenResourceError, trio.ClosedResourceError, frames.ProtocolError) as exc:
            error = exc
        self._lost = error
        while True:
            try:
                request_id, slot = self._registered.receive_nowait()
            except trio.WouldBlock:
                break
            pending[request_id] = slot
        for slot in pending.values():
            slot(error)


@contextlib.asynccontextmanager
async def open_client(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    tls: TlsOption = None,
    access_key: AccessKey | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AsyncIterator[Client]:
    """A connection to the broker, opened (TLS, the handshake, the key's proof) before this yields.
    Raises ConnectionError when it cannot be opened, TimeoutError when opening takes longer than
    timeout_s, and BrokerError when the broker refuses the key."""
    with trio.move_on_after(timeout_s) as opening:
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if opening.cancelled_caught:
        raise TimeoutError(f"could not connect to the broker at {host}:{port} within {timeout_s:g} s")
    context = client_context(tls)
    if context is not None:
        stream = trio.SSLStream(stream, context, server_hostname=host)
    async with stream:
        decoder = frames.FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME_BYTES)
        with trio.move_on_after(timeout_s) as opening:
            try:
                await _open_trio(stream, decoder, access_key)
            except (trio.BrokenResourceError, frames.ProtocolError) as error:
                raise _failed_to_open(error) from None
            except _Closed:
                raise _closed_while_opening(context is not None) from None
        if opening.cancelled_caught:
            raise TimeoutError(f"the broker at {host}:{port} did not open the connection within {timeout_s:g} s")
        async with trio.open_nursery() as nursery:
            client = Client(stream, nursery, decoder, timeout_s)
            try:
                yield client
            finally:
                client.close()
                nursery.cancel_scope.cancel()


async def _open_trio(stream: trio.abc.Stream, decoder: frames.FrameDecoder, access_key: AccessKey | None) -> None:
    async def receive_exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = await stream.receive_some(count - len(data))
            if not chunk:
                raise _Closed()
            data += chunk
        return data

    async def next_payload() -> bytes:
        while (payload := decoder.next_payload()) is None:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                raise _Closed()
            decoder.feed(chunk)
        return payload

    await stream.send_all(frames.hello())
    _check_welcome(await receive_exactly(frames.WELCOME_BYTES))
    await stream.send_all(_authenticate(await next_payload(), access_key))
    _check_authenticated(await next_payload())


class BlockingClient(_Operations):
    """A blocking client for scripts and the CLI: one request at a time on one socket."""

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
        self._socket: socket.socket = socket.create_connection((host, port), timeout=timeout_s)
        try:
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = client_context(tls)
            if context is not None:
                try:
                    self._socket = context.wrap_socket(self._socket, server_hostname=host)
                except ssl.SSLError as error:
                    raise _failed_to_open(error) from None
            self._decoder = frames.FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME_BYTES)
            self._ids = itertools.count(1)
            try:
                self._open(access_key)
            except _Closed:
                raise _closed_while_opening(context is not None) from None
        except BaseException:
            self.close()
            raise

    def _open(self, access_key: AccessKey | None) -> None:
        try:
            self._socket.sendall(frames.hello())
            _check_welcome(self._receive_exactly(frames.WELCOME_BYTES))
            self._socket.sendall(_authenticate(self._next_payload(), access_key))
            _check_authenticated(self._next_payload())
        except (ssl.SSLError, frames.ProtocolError) as error:  # TLS 1.3: a refused client certificate shows on the first read
            raise _failed_to_open(error) from None

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close()

    def call(self, op: Op) -> Result:
        request_id = next(self._ids)
        out = bytearray()
        frames.encode_request(request_id, op, out)
        self._socket.sendall(out)
        while True:
            frame = frames.decode_response(self._next_payload())
            if frame.id == request_id:
                return _check(frame.result)
            if frame.id == 0 and isinstance(frame.result, Failure):
                raise ConnectionError(frame.result.message)

    def _then(self, value: Any, finish: Any) -> Any:
        return finish(value)

    def _next_payload(self) -> bytes:
        while (payload := self._decoder.next_payload()) is None:
            data = self._socket.recv(1 << 16)
            if not data:
                raise _Closed("the broker closed the connection")
            self._decoder.feed(data)
        return payload

    def _receive_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self._socket.recv(count - len(data))
            if not chunk:
                raise _Closed("the broker closed the connection during the handshake")
            data += chunk
        return data


__all__ = [
    "Attributes",
    "BlockingClient",
    "BrokerError",
    "Client",
    "DeleteEntry",
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

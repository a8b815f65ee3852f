"""The native protocol's TCP listener: a thin shell around frames.py and a broker Session.

A connection opens with TLS when the broker has a certificate, then the version handshake and, in
version 2, the proof of a key (frames.py says how); the whole opening must be done within
`handshake_timeout_s`; each frame, once its first byte is in, must be whole within `frame_timeout_s`
(however slowly it trickles), and answers the peer does not take within `write_timeout_s` close the
connection. Connections are admitted by the accept loop (listener.py) against the limits in all
and per peer address. Its session acts as the principal the opening proved, for every request.
Each connection has a reader task that decodes requests and hands them to the broker. Answers go
out in completion order (pipelined) through the connection's outbox (outbox.py): written to the
socket by the task that produced them (the queue's actor, mostly) when it takes them at once, so a
lone request's answer costs no task switch, else by the connection's answer task. A semaphore
bounds the requests in flight per connection, each slot freed once its answer is handed to the
kernel, so a client that does not read cannot grow the broker's memory.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable

import trio

from dovecote.actors.errors import BrokerError, failure, invalid
from dovecote.actors.ops import Failure, Op, QueueName, QueueNames, Result
from dovecote.actors.broker import Broker
from dovecote.actors.principals import ANYONE, Keyring, Principal
from dovecote.actors.session import Session

from . import frames
from .limits import ConnectionCounts, NetLimits
from .listener import accept_loop
from .outbox import Outbox
from .audit import DENIED_CODES, DOOR_NATIVE, Audit
from .failure_log import FailureLog
from .tls import ServerTls, certificate_principal, peer_address, starts_with_tls

log = logging.getLogger("dovecote.net")


def authenticate(
    keyring: Keyring,
    nonce: bytes,
    message: frames.Authenticate,
    certificate: Principal | None,
    certificates_asked: bool = False,
) -> Principal:
    """The principal a version 2 connection acts as, from its Authenticate answer to `nonce` and
    the principal its TLS client certificate named (if any). Raises BrokerError with AWS's code
    when the connection is refused. A broker without keys checks nothing: everyone is ANYONE, as
    the AWS API then accepts any signature."""
    if not keyring:
        return ANYONE
    if message.key_id:
        secret = keyring.secret(message.key_id)
        if secret is None:
            raise BrokerError("InvalidClientTokenId", f"The access key {message.key_id!r} is not known to this broker.")
        if not hmac.compare_digest(frames.key_proof(secret, nonce, message.key_id), message.proof):
            raise BrokerError("SignatureDoesNotMatch", f"The proof for the access key {message.key_id!r} does not match: is its secret right?")
        return keyring.principal(message.key_id)
    if certificate is not None:
        return certificate
    raise BrokerError(
        "MissingAuthenticationToken",
        "This broker requires an access key: open the client with access_key=(ID, SECRET)"
        + (", or with a client certificate whose common name is a key's id." if certificates_asked else "."),
    )


def _version_1_refused() -> BrokerError:
    return BrokerError(
        "MissingAuthenticationToken",
        "This broker requires an access key, which protocol version 1 cannot present: use a dovecote client of "
        f"protocol version {frames.PROTOCOL_VERSION} with access_key=(ID, SECRET).",
    )


class NativeServer:
    def __init__(
        self,
        broker: Broker,
        limits: NetLimits,
        stopping: trio.Event,
        queue_url: Callable[[str], str],
        counts: ConnectionCounts,
        keyring: Keyring | None = None,
        tls: ServerTls | None = None,
        audit: Audit | None = None,
    ) -> None:
        """counts: the connections held, shared with the HTTP listener. keyring: the keys a
        connection may prove (none: every connection acts as ANYONE).
        tls: the certificate every connection is wrapped in (None: plain TCP). audit: told of
        connections refused for want of a key, and of requests refused for what they asked."""
        self._broker = broker
        self._queue_url = queue_url
        self._limits = limits
        self._stopping = stopping
        self._keyring = keyring if keyring is not None else Keyring({})
        self._tls = tls
        self._audit = audit if audit is not None else Audit()
        self._failures = FailureLog(log, limits.failure_log_interval_s)
        self._counts = counts

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(accept_loop, "native", listener, self._counts, self._limits, self._connection, nursery)
            task_status.started(bound_port)
            await self._stopping.wait()
            for listener in listeners:
                await listener.aclose()

    async def _connection(self, stream: trio.SocketStream) -> None:
        connection = _Connection(
            self._broker, self._limits, self._stopping, self._queue_url, stream, self._keyring, self._tls, self._audit
        )
        try:
            await connection.run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away (or failed the TLS handshake); what it asked for stands
        except* Exception:
            # one connection never stops the broker, and a flood of failures writes one traceback an interval
            self._failures.exception("a native connection failed; the broker goes on")
        finally:
            await _close_quietly(connection.stream)


async def _close_quietly(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


class _Connection:
    def __init__(
        self,
        broker: Broker,
        limits: NetLimits,
        stopping: trio.Event,
        queue_url: Callable[[str], str],
        stream: trio.SocketStream,
        keyring: Keyring,
        tls: ServerTls | None,
        audit: Audit,
    ):
        self._broker = broker
        self._session: Session | None = None  # the principal's, once the opening proves one
        self._queue_url = queue_url
        self._limits = limits
        self._stopping = stopping
        self._socket_stream = stream
        self.stream: trio.abc.Stream = stream  # the TLS stream over it, once TLS is on
        self._keyring = keyring
        self._tls = tls
        self._audit = audit
        self._peer = peer_address(stream)
        self._key_id = ""  # the key the opening proved, for the audit
        self._decoder = frames.FrameDecoder(frames.MAX_HANDSHAKE_FRAME_BYTES)
        self._inflight = trio.Semaphore(limits.max_inflight_per_connection)
        self._answers = Outbox(self._free_slots)
        self._no_more_answers = False

    async def run(self) -> None:
        opened = False
        with trio.move_on_after(self._limits.handshake_timeout_s) as opening:
            async with trio.open_nursery() as watching:
                watching.start_soon(_cancel_when_set, self._stopping, opening)  # shutdown waits for no opening
                try:
                    opened = await self._open()
                except BaseException:
                    # Closed now, as the failure left it: a refusal's alert is read before any reset
                    # that bytes arriving while the nursery winds down would cause.
                    self._socket_stream.socket.close()
                    raise
                watching.cancel_scope.cancel()
        if not opened:
            return
        try:
            await self._serve_requests()
        finally:
            self._no_more_answers = True
            self._answers.detach()

    async def _serve_requests(self) -> None:
        self._answers.attach(self.stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._answers.run, self.stream, self._limits.write_timeout_s)
            reason = None
            async with trio.open_nursery() as reading:
                reading.start_soon(_cancel_when_set, self._stopping, reading.cancel_scope)
                reason = await self._read_requests()
                reading.cancel_scope.cancel()
            if reason is not None:
                self._answer(0, failure(invalid(f"protocol error: {reason}")))
            # Let every request already accepted finish and be answered, then close.
            with trio.move_on_after(self._limits.shutdown_grace_s):
                for _ in range(self._limits.max_inflight_per_connection):
                    await self._inflight.acquire()
            self._no_more_answers = True
            self._answers.detach()

    async def _open(self) -> bool:
        """TLS, the version handshake and the key's proof. False: refused (answered) or gone."""
        certificate = None
        if self._tls is not None:
            tls_first = await starts_with_tls(self._socket_stream)
            if not tls_first:
                if tls_first is False:  # plain text: if it is a dovecote client, tell it in its own protocol
                    hello = await self._receive_exactly(frames.HELLO_BYTES)
                    if hello.startswith(frames.MAGIC):
                        await self.stream.send_all(frames.welcome(frames.PROTOCOL_VERSION, frames.STATUS_TLS_REQUIRED))
                return False
            tls_stream = trio.SSLStream(self._socket_stream, self._tls.native_context, server_side=True)
            self.stream = tls_stream
            await tls_stream.do_handshake()
            certificate = certificate_principal(tls_stream, self._keyring)
        try:
            version = frames.parse_hello(await self._receive_exactly(frames.HELLO_BYTES))
        except frames.ProtocolError:
            return False
        if version not in frames.SUPPORTED_VERSIONS:
            await self.stream.send_all(frames.welcome(frames.PROTOCOL_VERSION, frames.STATUS_UNSUPPORTED_VERSION))
            return False
        out = bytearray(frames.welcome(version, frames.STATUS_OK))
        if version == 1:
            if self._keyring and certificate is None:
                refusal = _version_1_refused()
                self._audit.authentication_failed(DOOR_NATIVE, refusal.code, "", self._peer)
                frames.encode_refusal(failure(refusal), out)
                await self.stream.send_all(out)
                return False
            await self.stream.send_all(out)
            self._act_as(certificate or ANYONE)
            return True
        nonce = secrets.token_bytes(frames.NONCE_BYTES)
        frames.encode_handshake(frames.Challenge(nonce), out)
        await self.stream.send_all(out)
        out.clear()
        try:
            message = frames.decode_authenticate(await self._receive_frame())
        except frames.ProtocolError as error:
            frames.encode_refusal(failure(invalid(f"protocol error: {error}")), out)
        else:
            try:
                principal = authenticate(self._keyring, nonce, message, certificate, self._tls is not None and self._tls.mutual)
            except BrokerError as error:
                self._audit.authentication_failed(DOOR_NATIVE, error.code, message.key_id, self._peer)
                frames.encode_refusal(failure(error), out)
            else:
                self._act_as(principal)
                frames.encode_handshake(frames.Authenticated(principal.key_id), out)
                await self.stream.send_all(out)
                return True
        await self.stream.send_all(out)
        return False

    def _act_as(self, principal: Principal) -> None:
        self._session = self._broker.session(None, principal)
        self._key_id = principal.key_id

    async def _receive_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = await self.stream.receive_some(count - len(data))
            if not chunk:
                raise trio.BrokenResourceError("closed during the handshake")
            data += chunk
        return data

    async def _receive_frame(self) -> bytes:
        while (payload := self._decoder.next_payload()) is None:
            data = await self.stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("closed during the handshake")
            self._decoder.feed(data)
        return payload

    async def _read_requests(self) -> str | None:
        """Read until the peer closes or times out (None) or breaks the protocol (the reason)."""
        decoder = self._decoder  # with what came after the opening
        decoder.max_frame_bytes = self._limits.max_request_frame_bytes
        session = self._session
        assert session is not None, "requests are read only once the opening named the principal"
        frame_deadline = None  # when the frame begun must be whole
        while True:
            decoded = False
            try:
                while (payload := decoder.next_payload()) is not None:
                    decoded = True
                    envelope = frames.decode_envelope(payload)
                    await self._inflight.acquire()
                    try:
                        op = frames.decode_op(envelope.op)
                    except ValueError as error:
                        self._answer(envelope.id, failure(invalid(str(error))))
                        continue
                    session.submit(op, self._answerer(envelope.id, op))
            except frames.ProtocolError as error:
                return str(error)
            if not decoder.has_partial_frame():
                frame_deadline = None
                deadline = trio.current_time() + self._limits.idle_timeout_s
            else:
                if frame_deadline is None or decoded:  # a new frame has begun
                    frame_deadline = trio.current_time() + self._limits.frame_timeout_s
                deadline = frame_deadline
            with trio.move_on_at(deadline) as read_scope:
                data = await self.stream.receive_some(65536)
            if read_scope.cancelled_caught:
                if frame_deadline is not None:
                    return f"a frame did not arrive whole within {self._limits.frame_timeout_s:g} s"
                if self._idle():
                    return None
                continue
            if not data:
                return None
            decoder.feed(data)

    def _idle(self) -> bool:
        return self._inflight.value == self._limits.max_inflight_per_connection

    def _answerer(self, request_id: int, op: Op) -> Callable[[Result], None]:
        def answer(result: Result) -> None:
            if type(result) is Failure and result.code in DENIED_CODES:
                self._audit.access_denied(DOOR_NATIVE, type(op).__name__, self._key_id, self._peer)
            self._answer(request_id, result)

        return answer

    def _answer(self, request_id: int, result: Result) -> None:
        if self._no_more_answers:
            return  # the connection is gone; the request's effects stand
        # The actors name queues; clients of this protocol get queue URLs, as SQS clients do.
        if type(result) is QueueName:
            result = QueueName(self._queue_url(result.queue))
        elif type(result) is QueueNames:
            result = QueueNames([self._queue_url(name) for name in result.queues], result.next_token)
        frames.encode_response(request_id, result, self._answers.pending)
        self._answers.added()

    def _free_slots(self, answers: int) -> None:
        for _ in range(answers):
            if self._inflight.value < self._limits.max_inflight_per_connection:
                self._inflight.release()


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()

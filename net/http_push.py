"""Pushing SNS deliveries out of the broker: HTTP/S POSTs over keep-alive HTTP/1.1 connections
(h11 on Trio streams, a connection per sending task, a cap on requests in flight in all), mail
through an SMTP relay (smtplib, in a worker thread), and SMS and mobile pushes to the operator's
sink (mobile_sink.py: a webhook POSTed as any HTTP push, or a command). A push is plain data in; the
answer is "" for success, else what went wrong, in words.

A push needs one POST on a connection it already has, and nothing of an HTTP client's pools,
redirects, cookies or models: each request is built by h11 and written in one send, and its
answer is parsed by h11 and read only up to a cap. Through httpx's transport a push cost the broker
about 0.5 ms of CPU; this way it costs a fraction of that (README, Performance).

ssl, certifi and the mail modules are imported when the first push goes out, not when the broker starts: a
broker that never pushes never pays for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

import h11
import msgspec
import trio

from dovecote.actors.limits import PUSH_MAX_IN_FLIGHT, PUSH_MAX_RESPONSE_BYTES, PUSH_TIMEOUT_S
from dovecote.actors.push_types import MOBILE_PROTOCOLS, UNREACHABLE, PushRequest

from .mobile_sink import MobileSink, run_command, webhook_request

if TYPE_CHECKING:
    import email.message
    import ssl

USER_AGENT = b"Amazon Simple Notification Service Agent"


class SmtpRelay(msgspec.Struct, frozen=True):
    """The mail server email subscriptions are sent through."""

    host: str
    port: int = 25
    starttls: bool = False
    username: str = ""
    password: str = ""
    sender: str = "dovecote@localhost"
    timeout_s: float = 30.0


def mail_message(relay: SmtpRelay, request: PushRequest) -> email.message.EmailMessage:
    import email.message

    message = email.message.EmailMessage()
    message["From"] = relay.sender
    message["To"] = request.endpoint
    message["Subject"] = request.subject or "AWS Notification Message"
    message["X-Amz-Sns-Message-Id"] = request.message_id
    message["X-Amz-Sns-Message-Type"] = request.message_type
    message.set_content(request.body)
    return message


def _send_mail(relay: SmtpRelay, message: email.message.EmailMessage) -> None:
    import smtplib

    with smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout_s) as smtp:
        if relay.starttls:
            smtp.starttls()
        if relay.username:
            smtp.login(relay.username, relay.password)
        smtp.send_message(message)


class Pusher:
    """Sends pushes for every topic's delivery actors; holds no broker state. Each sending task
    has a keep-alive connection of its own (`connection`), so no pool is ever searched; a limiter
    caps the requests in flight in all."""

    def __init__(
        self,
        smtp: SmtpRelay | None = None,
        *,
        timeout_s: float = PUSH_TIMEOUT_S,
        max_in_flight: int = PUSH_MAX_IN_FLIGHT,
        verify: bool | str = True,
        max_response_bytes: int = PUSH_MAX_RESPONSE_BYTES,
        sink: MobileSink | None = None,
    ) -> None:
        """verify: check HTTPS endpoints' certificates against certifi's CAs (True), a CA
        bundle file, or not at all (False). max_response_bytes: of an endpoint's answer's body, read
        to keep its connection; beyond, the connection is dropped. sink: where SMS and mobile pushes
        go (None: sms and application subscriptions are refused)."""
        self.smtp = smtp
        self.sink = sink
        self.max_response_bytes = max_response_bytes
        self.timeout_s = timeout_s
        self.protocols = frozenset(
            ("http", "https", *(("email", "email-json") if smtp is not None else ()), *(MOBILE_PROTOCOLS if sink is not None else ()))
        )
        self.in_flight = trio.CapacityLimiter(max_in_flight)
        self._verify = verify
        self._tls: ssl.SSLContext | None = None  # made at the first HTTPS connection, once: loading the CAs is slow

    def tls(self) -> ssl.SSLContext:
        if self._tls is None:
            import ssl

            import certifi

            verify = self._verify
            context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else certifi.where())
            if verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A keep-alive connection (opened at its first request, and again whenever it closed),
        for one request at a time."""
        connection = Connection(self)
        try:
            yield connection
        finally:
            await connection.close()

    async def run_command(self, sink: MobileSink, request: PushRequest) -> str:
        """The command sink, under the same cap as requests: commands in flight are processes."""
        async with self.in_flight:
            return await run_command(sink, request, self.timeout_s)

    async def mail(self, request: PushRequest) -> str:
        if self.smtp is None:
            return "no SMTP relay is configured"
        import smtplib

        try:
            await trio.to_thread.run_sync(_send_mail, self.smtp, mail_message(self.smtp, request), abandon_on_cancel=True)
        except (OSError, smtplib.SMTPException) as error:
            return f"{type(error).__name__}: {error}"[:200]
        return ""


class Endpoint(NamedTuple):
    """An HTTP/S endpoint's URL, taken apart once."""

    url: str
    https: bool
    host: str
    port: int
    target: bytes  # path and query
    host_header: bytes


def parse_endpoint(url: str) -> Endpoint:
    """Raises ValueError, saying why, for a URL no POST can go to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http or https URL: {url!r}")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)  # .port raises ValueError for a port out of range
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.netloc.rpartition("@")[2]  # no credentials in the Host header
    return Endpoint(url, https, parts.hostname, port, target.encode("ascii", "strict"), host.encode("idna"))


class _Unreachable(Exception):
    """No connection could be made (refused, no route, name unknown, a TLS handshake refused)."""


class Connection:
    """What one sending task sends through: one keep-alive HTTP/1.1 connection, to the endpoint it
    last sent to."""

    def __init__(self, pusher: Pusher) -> None:
        self._pusher = pusher
        self._endpoint: Endpoint | None = None
        self._stream: trio.abc.Stream | None = None
        self._socket: trio.socket.SocketType | None = None  # under the stream, to see whether it was closed while idle
        self._http = h11.Connection(h11.CLIENT)

    async def send(self, request: PushRequest) -> str:
        """"" when delivered, else what went wrong."""
        if request.protocol in ("email", "email-json"):
            return await self._pusher.mail(request)
        if request.protocol in MOBILE_PROTOCOLS:
            sink = self._pusher.sink
            if sink is None:
                return "no SMS and mobile push sink is configured"
            if sink.command:
                return await self._pusher.run_command(sink, request)
            request = webhook_request(sink, request)
        if self._endpoint is None or self._endpoint.url != request.endpoint:
            try:
                endpoint = parse_endpoint(request.endpoint)
            except (ValueError, UnicodeError) as error:
                return f"InvalidURL: {error}"[:200]
            await self.close()
            self._endpoint = endpoint
        async with self._pusher.in_flight:
            with trio.move_on_after(self._pusher.timeout_s):
                try:
                    return await self._post(self._endpoint, request)
                except _Unreachable as error:
                    outcome = f"{UNREACHABLE}: {error.__cause__ or error}"
                except h11.ProtocolError as error:
                    outcome = f"{type(error).__name__}: {error}"
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
                    outcome = f"ConnectionError: {str(error.__cause__ or error) or type(error).__name__}"
                await self.close()
                return outcome[:200]
            await self.close()  # in the middle of an exchange: the connection cannot be used again
            return "timeout"

    async def _post(self, endpoint: Endpoint, request: PushRequest) -> str:
        if self._stream is not None and (self._http.our_state is not h11.IDLE or self._closed_while_idle()):
            await self.close()
        if self._stream is None:
            await self._open(endpoint)
        http = self._http
        body = request.body.encode()
        head = h11.Request(method=b"POST", target=endpoint.target, headers=_headers(endpoint, request, len(body)))
        # One write for the whole request (h11 checks the header values: none can add a header).
        await self._stream.send_all(http.send(head) + http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage()))
        status, complete = await self._read_answer()
        if complete and http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()  # kept alive
        else:
            await self.close()
        return "" if 200 <= status < 300 else f"HTTP {status}"

    async def _read_answer(self) -> tuple[int, bool]:
        """The answer's status, and whether its body was read whole (up to the cap: beyond, the
        rest is not read, and the connection is not kept)."""
        http, status, read = self._http, 0, 0
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await self._stream.receive_some(65536)
                if not data and not status:
                    raise h11.RemoteProtocolError("the endpoint closed the connection without answering")
                http.receive_data(data)
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data:
                read += len(event.data)
                if read > self._pusher.max_response_bytes:
                    return status, False
            elif type(event) is h11.EndOfMessage:
                return status, True
            elif type(event) is h11.ConnectionClosed:
                return status, False
            # an informational answer (100 Continue) is passed over: the final one follows

    def _closed_while_idle(self) -> bool:
        """An idle keep-alive connection with something to read has been closed by the endpoint
        (or sent what no request asked for): it is not used again."""
        assert self._socket is not None
        return self._socket.is_readable()

    async def _open(self, endpoint: Endpoint) -> None:
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        except OSError as error:
            raise _Unreachable() from error
        self._socket = stream.socket
        if endpoint.https:
            import ssl

            stream = trio.SSLStream(stream, self._pusher.tls(), server_hostname=endpoint.host, https_compatible=True)
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as error:
                await trio.aclose_forcefully(stream)
                raise _Unreachable() from (error.__cause__ or error)
        self._stream = stream
        self._http = h11.Connection(h11.CLIENT)

    async def close(self) -> None:
        if self._stream is not None:
            stream, self._stream, self._socket = self._stream, None, None
            await trio.aclose_forcefully(stream)


def _headers(endpoint: Endpoint, request: PushRequest, length: int) -> list[tuple[bytes, bytes]]:
    """The headers SNS sends with every HTTP/S message."""
    headers = [
        (b"Host", endpoint.host_header),
        (b"Content-Length", b"%d" % length),
        (b"Content-Type", request.content_type.encode()),
        (b"User-Agent", USER_AGENT),
        (b"x-amz-sns-message-type", request.message_type.encode()),
        (b"x-amz-sns-message-id", request.message_id.encode()),
        (b"x-amz-sns-topic-arn", request.topic_arn.encode()),
    ]
    if request.subscription_arn:
        headers.append((b"x-amz-sns-subscription-arn", request.subscription_arn.encode()))
    if request.raw:
        headers.append((b"x-amz-sns-rawdelivery", b"true"))
    return headers

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
from dovecote.actors.errors import BrokerError
from dovecote.actors.esm import Functions
from dovecote.actors.push_types import FUNCTION_PROTOCOL, MOBILE_PROTOCOLS, NOT_RETRIED, UNREACHABLE, PushRequest
from dovecote.actors.sns_messages import lambda_event

from .http_client import HttpConnection, Unreachable, tls_context
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
        self.protocols = frozenset((
            "http", "https", FUNCTION_PROTOCOL, *(("email", "email-json") if smtp is not None else ()),
            *(MOBILE_PROTOCOLS if sink is not None else ()),
        ))
        self.functions: Functions | None = None  # the broker's functions, once they run (serve_functions)
        self.in_flight = trio.CapacityLimiter(max_in_flight)
        self._verify = verify
        self._tls: ssl.SSLContext | None = None  # made at the first HTTPS connection, once: loading the CAs is slow

    def tls(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = tls_context(self._verify)
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

    def serve_functions(self, functions: Functions) -> None:
        """Deliver `lambda` subscriptions' pushes to these functions (until then, each attempt
        fails and is retried)."""
        self.functions = functions

    async def invoke(self, request: PushRequest) -> str:
        """An asynchronous invocation of the subscription's function with SNS's event: delivered
        once the function's queue of events took it (its own retries are the function's). A
        function that does not exist is SNS's client-side error: not retried."""
        if self.functions is None:
            return "the broker's functions are not running yet"
        try:
            await self.functions.invoke(
                request.endpoint, lambda_event(request.body, request.subscription_arn), asynchronous=True, message_ids=[request.message_id]
            )
        except BrokerError as error:
            # No such function, or an endpoint that names none: retrying cannot help (SNS's client-side errors)
            retried = NOT_RETRIED if error.code in ("ResourceNotFoundException", "InvalidParameterValueException") else ""
            return f"{retried}{error.code}: {error.message}"[:200]
        return ""

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


class Connection:
    """What one sending task sends through: one keep-alive HTTP/1.1 connection (http_client.py), to
    the endpoint it last sent to."""

    def __init__(self, pusher: Pusher) -> None:
        self._pusher = pusher
        self._endpoint: Endpoint | None = None
        self._http: HttpConnection | None = None

    async def send(self, request: PushRequest) -> str:
        """"" when delivered, else what went wrong."""
        if request.protocol == FUNCTION_PROTOCOL:
            return await self._pusher.invoke(request)
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
            self._http = HttpConnection(endpoint.host, endpoint.port, self._pusher.tls() if endpoint.https else None)
        assert self._http is not None
        body = request.body.encode()
        async with self._pusher.in_flight:
            with trio.move_on_after(self._pusher.timeout_s):
                try:
                    answer = await self._http.exchange(
                        b"POST", self._endpoint.target, _headers(self._endpoint, request, len(body)), body,
                        self._pusher.max_response_bytes,
                    )
                except Unreachable as error:
                    return f"{UNREACHABLE}: {error.__cause__ or error}"[:200]
                except h11.ProtocolError as error:
                    return f"{type(error).__name__}: {error}"[:200]
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
                    return f"ConnectionError: {str(error.__cause__ or error) or type(error).__name__}"[:200]
                return "" if 200 <= answer.status < 300 else f"HTTP {answer.status}"
            return "timeout"  # in the middle of an exchange: its connection was closed

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


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

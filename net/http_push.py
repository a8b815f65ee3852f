"""Pushing SNS deliveries out of the broker: HTTP/S POSTs with httpx (a keep-alive connection per
sending task, a cap on requests in flight in all), mail through an SMTP relay (smtplib, in a
worker thread), and SMS and mobile pushes to the operator's sink (mobile_sink.py: a webhook
POSTed as any HTTP push, or a command). A push is plain data in; the answer is "" for success,
else what went wrong, in words.

POSTs go to httpx's transport directly rather than through an AsyncClient: a push needs none of
the client's cookies, auth, redirects or URL merging, and skipping them saves about a third of
each request's cost.

httpx, ssl and the mail modules are imported when the first push goes out, not when the broker
starts: a broker that never pushes never pays for them (they were a tenth of its start-up).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
import trio

from dovecote.actors.limits import PUSH_MAX_IN_FLIGHT, PUSH_MAX_RESPONSE_BYTES, PUSH_TIMEOUT_S
from dovecote.actors.push_types import MOBILE_PROTOCOLS, UNREACHABLE, PushRequest

from .mobile_sink import MobileSink, run_command, webhook_request

if TYPE_CHECKING:
    import email.message

    import httpx

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


def http_headers(request: PushRequest) -> list[tuple[bytes, bytes]]:
    """The headers SNS sends with every HTTP/S message (as bytes: httpx takes them as they are)."""
    headers = [
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
    has a keep-alive connection of its own (`connection`): httpcore looks through every connection
    of a pool on each request, so a shared pool of hundreds of connections would make each request
    cost hundreds of system calls. A limiter caps the requests in flight in all."""

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
        """verify: check HTTPS endpoints' certificates against the CAs httpx trusts (certifi's,
        True), a CA bundle file, or not at all (False). max_response_bytes: of an endpoint's
        answer's body, read to keep its connection; beyond, the connection is dropped. sink: where
        SMS and mobile pushes go (None: sms and application subscriptions are refused)."""
        self.smtp = smtp
        self.sink = sink
        self._max_response_bytes = max_response_bytes
        self.timeout_s = timeout_s
        self.protocols = frozenset(
            ("http", "https", *(("email", "email-json") if smtp is not None else ()), *(MOBILE_PROTOCOLS if sink is not None else ()))
        )
        self._in_flight = trio.CapacityLimiter(max_in_flight)
        self._verify = verify
        self._tls = None  # made at the first connection, once: loading the CAs is slow
        # No pool timeout: waiting for a free connection is not a failed attempt.
        self._timeouts = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": None}

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A keep-alive connection (opened at its first request, and again whenever it closed),
        for one request at a time."""
        import httpx

        if self._tls is None:
            import ssl

            verify = self._verify
            self._tls = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else httpx.create_ssl_context(verify=verify)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncHTTPTransport(limits=limits, verify=self._tls) as transport:
            yield Connection(self, transport)

    async def post(self, transport: httpx.AsyncHTTPTransport, url: httpx.URL, request: PushRequest) -> str:
        import httpx

        async with self._in_flight:
            with trio.move_on_after(self.timeout_s):
                try:
                    post = httpx.Request(
                        "POST", url, content=request.body.encode(), headers=http_headers(request), extensions={"timeout": self._timeouts}
                    )
                    response = await transport.handle_async_request(post)
                    try:
                        await self._drain(response)
                    finally:
                        await response.aclose()
                except httpx.TimeoutException:
                    return "timeout"
                except httpx.ConnectError as error:
                    return f"{UNREACHABLE}: {error}"[:200]
                except httpx.HTTPError as error:
                    return f"{type(error).__name__}: {error}"[:200]
                if 200 <= response.status_code < 300:
                    return ""
                return f"HTTP {response.status_code}"
            return "timeout"

    async def _drain(self, response: httpx.Response) -> None:
        """Read the answer's body, which only its status matters for, up to the cap: a body read
        whole lets the connection be kept; one beyond the cap is not read on, and the connection
        closes with the response."""
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read > self._max_response_bytes:
                return

    async def run_command(self, sink: MobileSink, request: PushRequest) -> str:
        """The command sink, under the same cap as requests: commands in flight are processes."""
        async with self._in_flight:
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


class Connection:
    """What one sending task sends through."""

    def __init__(self, pusher: Pusher, transport: httpx.AsyncHTTPTransport) -> None:
        self._pusher = pusher
        self._transport = transport
        self._endpoint: tuple[str, httpx.URL] | None = None  # the last URL, parsed (a task sends to one endpoint)

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
        if self._endpoint is None or self._endpoint[0] != request.endpoint:
            import httpx

            try:
                self._endpoint = (request.endpoint, httpx.URL(request.endpoint))
            except httpx.InvalidURL as error:
                return f"InvalidURL: {error}"[:200]
        return await self._pusher.post(self._transport, self._endpoint[1], request)

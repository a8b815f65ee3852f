"""Pushing SNS deliveries out of the broker: HTTP/S POSTs with httpx (one shared client: keep-alive
connections, a cap on connections in all), and mail through an SMTP relay (smtplib, in a worker
thread). A push is plain data in; the answer is "" for success, else what went wrong, in words.
"""

from __future__ import annotations

import contextlib
import email.message
import smtplib
from collections.abc import AsyncIterator

import httpx
import msgspec
import trio

from dovecote.actors.push import PushRequest

USER_AGENT = "Amazon Simple Notification Service Agent"
DEFAULT_TIMEOUT_S = 15.0  # per attempt, connecting and answering together, as SNS waits
DEFAULT_MAX_CONNECTIONS = 256


class SmtpRelay(msgspec.Struct, frozen=True):
    """The mail server email subscriptions are sent through."""

    host: str
    port: int = 25
    starttls: bool = False
    username: str = ""
    password: str = ""
    sender: str = "dovecote@localhost"
    timeout_s: float = 30.0


def http_headers(request: PushRequest) -> dict[str, str]:
    """The headers SNS sends with every HTTP/S message."""
    headers = {
        "Content-Type": request.content_type,
        "User-Agent": USER_AGENT,
        "x-amz-sns-message-type": request.message_type,
        "x-amz-sns-message-id": request.message_id,
        "x-amz-sns-topic-arn": request.topic_arn,
    }
    if request.subscription_arn:
        headers["x-amz-sns-subscription-arn"] = request.subscription_arn
    if request.raw:
        headers["x-amz-sns-rawdelivery"] = "true"
    return headers


def mail_message(relay: SmtpRelay, request: PushRequest) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = relay.sender
    message["To"] = request.endpoint
    message["Subject"] = request.subject or "AWS Notification Message"
    message["X-Amz-Sns-Message-Id"] = request.message_id
    message["X-Amz-Sns-Message-Type"] = request.message_type
    message.set_content(request.body)
    return message


def _send_mail(relay: SmtpRelay, message: email.message.EmailMessage) -> None:
    with smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout_s) as smtp:
        if relay.starttls:
            smtp.starttls()
        if relay.username:
            smtp.login(relay.username, relay.password)
        smtp.send_message(message)


class Pusher:
    """Sends pushes; shared by every topic's delivery actors. Holds no broker state."""

    def __init__(self, client: httpx.AsyncClient, smtp: SmtpRelay | None, timeout_s: float) -> None:
        self._client = client
        self.smtp = smtp
        self.timeout_s = timeout_s
        self.protocols = frozenset(("http", "https", "email", "email-json") if smtp is not None else ("http", "https"))

    async def send(self, request: PushRequest) -> str:
        if request.protocol in ("email", "email-json"):
            return await self._mail(request)
        return await self._post(request)

    async def _post(self, request: PushRequest) -> str:
        with trio.move_on_after(self.timeout_s):
            try:
                response = await self._client.post(request.endpoint, content=request.body.encode(), headers=http_headers(request))
            except httpx.TimeoutException:
                return "timeout"
            except httpx.HTTPError as error:
                return f"{type(error).__name__}: {error}"[:200]
            if 200 <= response.status_code < 300:
                return ""
            return f"HTTP {response.status_code}"
        return "timeout"

    async def _mail(self, request: PushRequest) -> str:
        if self.smtp is None:
            return "no SMTP relay is configured"
        try:
            await trio.to_thread.run_sync(_send_mail, self.smtp, mail_message(self.smtp, request), abandon_on_cancel=True)
        except (OSError, smtplib.SMTPException) as error:
            return f"{type(error).__name__}: {error}"[:200]
        return ""


@contextlib.asynccontextmanager
async def open_pusher(
    smtp: SmtpRelay | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    verify: bool | str = True,
) -> AsyncIterator[Pusher]:
    """verify: check HTTPS endpoints' certificates against the system's CAs (True), a CA bundle
    file, or not at all (False)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    # No pool timeout: waiting for a free connection is not a failed attempt.
    timeout = httpx.Timeout(timeout_s, pool=None)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, verify=verify, follow_redirects=False) as client:
        yield Pusher(client, smtp, timeout_s)

"""Where SMS and mobile push deliveries go: a sink the operator configures, since the broker reaches
no carrier or push service itself. Either an HTTP webhook (a gateway of the operator's choice) that
is POSTed one JSON document per delivery, or a local command that is run once per delivery with the
message on its standard input and the details in its environment.

The webhook's document: {"protocol": "sms" | "application", "endpoint": the phone number (E.164) or
the platform endpoint's ARN, "message": the text to send, "messageId", "topicArn",
"subscriptionArn"} (both "" for a publish straight to an endpoint or a phone number, and for the
SMS sandbox's one-time passwords). A 2xx answer is a delivery; anything else is retried as an HTTP
push is.

The command's environment: DOVECOTE_PROTOCOL, DOVECOTE_ENDPOINT, DOVECOTE_MESSAGE_ID,
DOVECOTE_TOPIC_ARN, DOVECOTE_SUBSCRIPTION_ARN, beside the broker's own variables but for its
DOVECOTE_ settings; exit status 0 is a delivery, any other is retried.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import msgspec
import trio

from dovecote.actors.push_types import PushRequest

STDERR_KEPT_BYTES = 180  # of a failed command's standard error, kept in its outcome (at most 200 characters)


class MobileSink(msgspec.Struct, frozen=True):
    """One of the two: a webhook URL or a command line (split as a shell would, run without one)."""

    url: str = ""
    command: str = ""


def webhook_request(sink: MobileSink, request: PushRequest) -> PushRequest:
    """The delivery as the POST to the webhook (sent as any HTTP push is)."""
    document = {
        "protocol": request.protocol,
        "endpoint": request.endpoint,
        "message": request.body,
        "messageId": request.message_id,
        "topicArn": request.topic_arn,
        "subscriptionArn": request.subscription_arn,
    }
    return msgspec.structs.replace(
        request, endpoint=sink.url, body=json.dumps(document), content_type="application/json; charset=UTF-8"
    )


def command_environment(request: PushRequest) -> dict[str, str]:
    """The broker's environment without its own DOVECOTE_ settings (secrets among them: the SMTP
    password, access keys), and the delivery's details."""
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith("DOVECOTE_")},
        "DOVECOTE_PROTOCOL": request.protocol,
        "DOVECOTE_ENDPOINT": request.endpoint,
        "DOVECOTE_MESSAGE_ID": request.message_id,
        "DOVECOTE_TOPIC_ARN": request.topic_arn,
        "DOVECOTE_SUBSCRIPTION_ARN": request.subscription_arn,
    }


async def run_command(sink: MobileSink, request: PushRequest, timeout_s: float) -> str:
    """"" when the command took the delivery (exit 0), else what went wrong. A command that runs
    past timeout_s is killed and its delivery retried. Of its standard error only the last
    STDERR_KEPT_BYTES are kept (read as it comes, so a chatty command costs no memory); its
    standard output is discarded."""
    with trio.move_on_after(timeout_s):
        try:
            process = await trio.lowlevel.open_process(
                shlex.split(sink.command), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=command_environment(request),
            )
        except OSError as error:
            return f"{type(error).__name__}: {error}"[:200]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_feed, process.stdin, request.body.encode())
                stderr = await _tail(process.stderr)
            status = await process.wait()
        finally:
            if process.returncode is None:  # timed out
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        if status == 0:
            return ""
        said = stderr.decode(errors="replace").strip()
        return f"exit {status}: {said}" if said else f"exit {status}"
    return "timeout"


async def _feed(stdin: trio.abc.SendStream, body: bytes) -> None:
    """The message on the command's stdin; a command that exits without reading it is no error."""
    async with stdin:
        try:
            await stdin.send_all(body)
        except trio.BrokenResourceError:
            pass


async def _tail(stderr: trio.abc.ReceiveStream) -> bytes:
    """The last STDERR_KEPT_BYTES of a stream, read to its end."""
    kept = b""
    async with stderr:
        while chunk := await stderr.receive_some():
            kept = (kept + chunk)[-STDERR_KEPT_BYTES:]
    return kept

"""Where SMS and mobile push deliveries go: a sink the operator configures, since the broker reaches
no carrier or push service itself. Either an HTTP webhook (a gateway of the operator's choice) that
is POSTed one JSON document per delivery, or a local command that is run once per delivery with the
message on its standard input and the details in its environment.

The webhook's document: {"protocol": "sms" | "application", "endpoint": the phone number (E.164) or
the platform endpoint's ARN, "message": the text to send, "messageId", "topicArn",
"subscriptionArn"}. A 2xx answer is a delivery; anything else is retried as an HTTP push is.

The command's environment: DOVECOTE_PROTOCOL, DOVECOTE_ENDPOINT, DOVECOTE_MESSAGE_ID,
DOVECOTE_TOPIC_ARN, DOVECOTE_SUBSCRIPTION_ARN (beside the broker's own); exit status 0 is a
delivery, any other is retried.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import msgspec
import trio

from dovecote.actors.push_types import PushRequest

STDERR_KEPT = 200  # characters of a failed command's standard error kept in its outcome


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
    return {
        **os.environ,
        "DOVECOTE_PROTOCOL": request.protocol,
        "DOVECOTE_ENDPOINT": request.endpoint,
        "DOVECOTE_MESSAGE_ID": request.message_id,
        "DOVECOTE_TOPIC_ARN": request.topic_arn,
        "DOVECOTE_SUBSCRIPTION_ARN": request.subscription_arn,
    }


async def run_command(sink: MobileSink, request: PushRequest, timeout_s: float) -> str:
    """"" when the command took the delivery (exit 0), else what went wrong. A command that runs
    past timeout_s is killed and its delivery retried."""
    with trio.move_on_after(timeout_s):
        try:
            done = await trio.run_process(
                shlex.split(sink.command), stdin=request.body.encode(), stdout=subprocess.DEVNULL, capture_stderr=True,
                check=False, env=command_environment(request),
            )
        except OSError as error:
            return f"{type(error).__name__}: {error}"[:200]
        if done.returncode == 0:
            return ""
        stderr = done.stderr.decode(errors="replace").strip()[-STDERR_KEPT:]
        return f"exit {done.returncode}: {stderr}" if stderr else f"exit {done.returncode}"
    return "timeout"


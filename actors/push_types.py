"""The value types of an SNS push (HTTP/S, email, SMS and mobile push), shared by topics, their
delivery actors and the sender in net/: pure data and the sender's interface, no I/O."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec

from .delivery_policy import EffectivePolicy

CONFIRMED_BY_TOKEN = ("http", "https", "email", "email-json")  # subscriptions confirmed by a token sent to them
MOBILE_PROTOCOLS = ("sms", "application")  # delivered through the operator's sink (net/mobile_sink.py)
FUNCTION_PROTOCOL = "lambda"  # an asynchronous invocation of a function of this broker
PUSH_PROTOCOLS = (*CONFIRMED_BY_TOKEN, *MOBILE_PROTOCOLS, FUNCTION_PROTOCOL)
UNREACHABLE = "unreachable"  # how an outcome starts when no connection could be made
# How an outcome starts when retrying cannot help (SNS's "client-side error": the function is
# gone): the push goes to the dead-letter queue, or is dropped, at once.
NOT_RETRIED = "not retried: "

# How /metrics counts deliveries, by protocol (sqs and PUSH_PROTOCOLS): a delivery ends delivered,
# dead-lettered or dropped; each failed attempt that is tried again counts as retried.
DELIVERED, RETRIED, DEAD_LETTERED, DROPPED = "delivered", "retried", "dead_lettered", "dropped"
DELIVERY_OUTCOMES = (DELIVERED, RETRIED, DEAD_LETTERED, DROPPED)


class PushRequest(msgspec.Struct, frozen=True):
    protocol: str  # one of PUSH_PROTOCOLS
    endpoint: str  # a URL, a mail address, a phone number or a platform endpoint's ARN
    message_type: str  # Notification, SubscriptionConfirmation or UnsubscribeConfirmation
    message_id: str
    topic_arn: str
    subscription_arn: str
    body: str
    raw: bool = False
    subject: str = ""  # mail only
    content_type: str = "text/plain; charset=UTF-8"


class PushTarget(msgspec.Struct, frozen=True):
    """What a delivery actor knows of its subscription, from the topic."""

    topic_id: int
    topic: str
    topic_arn: str
    subscription_id: int
    subscription_arn: str
    protocol: str
    endpoint: str
    raw: bool
    policy: EffectivePolicy
    dead_letter_arn: str  # "": exhausted pushes are dropped


class PushConnection(Protocol):
    async def send(self, request: PushRequest) -> str:
        """"" when delivered, else what went wrong."""


class Sender(Protocol):
    """Sends pushes (net/http_push.py)."""

    protocols: frozenset[str]  # those of PUSH_PROTOCOLS it can reach

    def connection(self) -> AbstractAsyncContextManager[PushConnection]:
        """A keep-alive connection, for one request at a time."""

"""What a broker is made with: its namespace, its capacities and how its topics sign and push."""

from __future__ import annotations

import msgspec

from .limits import ACTOR_MAILBOX_MESSAGES_FROM_ACTORS, ACTOR_MAILBOX_REQUESTS, PUSH_MAX_PENDING_PER_SUBSCRIPTION


class BrokerConfig(msgspec.Struct, frozen=True):
    region: str = "us-east-1"  # for requests that name none
    account_id: str = "000000000000"  # the one account this broker hosts
    mailbox_capacity: int = ACTOR_MAILBOX_REQUESTS  # client requests waiting per queue or topic
    actor_mail_capacity: int = ACTOR_MAILBOX_MESSAGES_FROM_ACTORS  # messages other actors' mail carries, on top
    lifecycle_capacity: int = 1024  # create and delete requests waiting
    max_queues: int = 10_000
    max_topics: int = 100_000
    # Pauses before restarting an actor that failed, by how often it failed in a row; after
    # max_restarts failures, each within restart_window_s of the last, it is stopped.
    restart_backoff_s: tuple[float, ...] = (0.0, 0.5, 2.0, 10.0, 30.0)
    max_restarts: int = 5
    restart_window_s: float = 60.0
    http_url: str = "http://127.0.0.1:7481"  # the broker's HTTP port as clients reach it (UnsubscribeURL)
    sign_sqs_envelopes: bool = True  # False: envelopes delivered to queues go without a signature
    # Sign in a worker thread, beside the event loop (not in tests on the autojump clock, whose
    # time would jump while a thread works).
    sign_in_thread: bool = False
    max_pending_pushes: int = PUSH_MAX_PENDING_PER_SUBSCRIPTION  # per HTTP/S or email subscription
    # Keys are configured: besides every request being authorised, a topic delivers into a queue
    # only if the queue's Policy lets it (as on AWS). Off: every delivery goes through, as before.
    authentication: bool = False


def queue_arn(config: BrokerConfig, region: str, name: str) -> str:
    return f"arn:aws:sqs:{region or config.region}:{config.account_id}:{name}"


def topic_arn(config: BrokerConfig, region: str, name: str) -> str:
    return f"arn:aws:sns:{region or config.region}:{config.account_id}:{name}"

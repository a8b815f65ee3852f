"""SNS message archiving and replay: a subscription's ReplayPolicy replays the topic's archived
publishes of a time window to it, through its filter policy, with the same MessageId and Timestamp
and "Replayed": true in the envelope. Pure: the archive is read through the function given.

A replay's progress is kept with the subscription (hidden attributes: the last seq replayed, and
where the replay ends), and each batch's deliveries are stored in one commit with that progress,
so a crash in the middle resumes the replay without loss or repeats.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from dovecote.storage.records import MessageSent, Published, Record, SubscriptionChanged

from . import sns_validation
from .errors import invalid_parameter
from .filter_policy import MessageView
from .limits import REPLAY_BATCH_PUBLISHES
from .messages import QueueTarget

if TYPE_CHECKING:
    from .topic_core import QueueTargets, Subscription, TopicCore

REPLAY_CURSOR = "dovecote:ReplayCursor"  # kept with the subscription, not shown: the last seq replayed
REPLAY_UNTIL = "dovecote:ReplayUntil"  # the replay's end, in wall-clock ms
ArchiveReader = Callable[[int, int], list[Published]]  # (after seq, at most) -> the topic's archived publishes


def active_replays(subscriptions: Mapping[str, Subscription]) -> list[tuple[str, int]]:
    """(subscription ARN, last seq replayed) of each replay to go on with."""
    return [
        (s.arn, int(s.attributes.get(REPLAY_CURSOR, "0")))
        for s in subscriptions.values()
        if s.attributes.get("ReplayStatus") in ("Pending", "In progress")
    ]


def replay_start(policy_text: str, archive_days: int, wall_ms: int) -> dict[str, str]:
    """The subscription attributes that start (or, with an empty policy, stop) a replay."""
    if not policy_text:
        return {"ReplayStatus": "Completed"}
    if not archive_days:
        raise invalid_parameter("ReplayPolicy: the topic has no ArchivePolicy, so there is nothing to replay")
    policy = json.loads(policy_text)
    ending = sns_validation.replay_time(policy["EndingPoint"]) if "EndingPoint" in policy else wall_ms
    return {"ReplayStatus": "Pending", REPLAY_CURSOR: "0", REPLAY_UNTIL: str(min(ending, wall_ms))}


def next_batches(
    core: TopicCore, read_archive: ArchiveReader, targets: QueueTargets, wall_ms: int
) -> list[tuple[QueueTarget | None, Record]]:
    """The next batch of each running replay: its deliveries, and each subscription's new state,
    to be stored together."""
    batch: list[tuple[QueueTarget | None, Record]] = []
    for arn, cursor in active_replays(core.subscriptions):
        archived = read_archive(cursor, REPLAY_BATCH_PUBLISHES)
        deliveries, state = _replay_batch(core, core.subscription(arn), archived, len(archived) < REPLAY_BATCH_PUBLISHES, targets, wall_ms)
        batch.extend(deliveries)
        batch.append((None, state))
    return batch


def _replay_batch(
    core: TopicCore, subscription: Subscription, archived: list[Published], complete: bool, targets: QueueTargets, wall_ms: int
) -> tuple[list[tuple[QueueTarget | None, Record]], SubscriptionChanged]:
    """The deliveries of one batch of archived publishes to a replaying subscription, and its new
    state: the cursor moved past the batch, Completed when `complete` or the replay's end is
    reached, Failed when its queue is gone or its policy refuses the topic."""
    policy = json.loads(subscription.attributes["ReplayPolicy"])
    starting = sns_validation.replay_time(policy["StartingPoint"])
    until = int(subscription.attributes[REPLAY_UNTIL])
    target = targets.get(subscription.endpoint) if subscription.confirmed else None
    if target is not None and not core.may_deliver(target):
        target = None  # the queue's policy refuses the topic: the replay fails, as for a queue gone
    deliveries: list[tuple[QueueTarget | None, Record]] = []
    cursor = int(subscription.attributes.get(REPLAY_CURSOR, "0"))
    for record in archived:
        if record.at_ms > until:
            complete = True
            break
        cursor = record.seq
        if record.at_ms < starting or target is None:
            continue
        payloads = sns_validation.validate_publish(record.message, record.subject or None, record.message_structure or None, {})
        payload = payloads.get("sqs", payloads["default"])
        if subscription.filter is not None and subscription.filter.first_failure(MessageView(record.attributes, payload)):
            continue
        envelope = core.messages.envelope(
            record.message_id, payload, record.subject or None, record.attributes, record.at_ms, None,
            core.signature_version(), signed=core.options.sign_sqs, replayed=True,
        )
        delivery: MessageSent = core.delivery(subscription, target, payload, record.attributes, envelope, record.at_ms, record.group_id, "")
        deliveries.append((target, delivery))
    status = "Failed" if target is None else "Completed" if complete else "In progress"
    state = core.changed(subscription, {**subscription.attributes, "ReplayStatus": status, REPLAY_CURSOR: str(cursor)}, wall_ms)
    return deliveries, state

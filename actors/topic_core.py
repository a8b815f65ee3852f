"""The rules of one SNS topic, as a pure object: its attributes, its subscriptions, and what a
publish turns into. No I/O, no clock of its own (times are passed in).

A publish becomes one `Published` record and, in the same commit, one `MessageSent` record for
every SQS subscription whose queue exists and whose filter policy matches: the fan-out is exact
because it is a single transaction. The queue records are built here, with the ids and names of the
queues this topic was told about (`QueueTarget`, kept current by the registry); the shell hands
them to the queues' actors after the commit.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import msgspec

from dovecote.storage.records import (
    MessageAttribute,
    MessageSent,
    Published,
    PushQueued,
    Record,
    SubscriptionChanged,
    SubscriptionDeleted,
    TopicAttributesChanged,
    TopicDeleted,
)
from dovecote.storage.store import LoadedTopic, PendingPush

from . import delivery_policy, policy, validation
from .dedup import DedupWindow
from .errors import BrokerError
from .filter_policy import ATTRIBUTES, FilterPolicy, MessageView, compile_policy, explain
from .ids import MessageIds
from .push import PUSH_PROTOCOLS, PushRequest, PushTarget
from .signing import Signer, canonical_string
from .ops import SubscriptionInfo, Verdict

MAX_MESSAGE_BYTES = 256 * 1024
MAX_SUBSCRIPTIONS = 100_000
MAX_ARCHIVE_DAYS = 365
REPLAY_CURSOR = "dovecote:ReplayCursor"  # kept with the subscription, not shown: the last seq replayed
REPLAY_UNTIL = "dovecote:ReplayUntil"  # the replay's end, in wall-clock ms
TOKEN = "dovecote:Token"  # an HTTP/S or email subscription's confirmation token
UNREACHABLE_PROTOCOLS = {"sms", "application", "lambda", "firehose"}  # need services outside this broker
MAIL_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
UNSIGNED = "dovecote-unsigned-"  # stands in an envelope for a Signature still to be made
TOPIC_ATTRIBUTES = {
    "DisplayName",
    "Policy",
    "DeliveryPolicy",
    "KmsMasterKeyId",
    "SignatureVersion",
    "TracingConfig",
    "ArchivePolicy",
    "ContentBasedDeduplication",
    "DataProtectionPolicy",
}
SUBSCRIPTION_ATTRIBUTES = {
    "DeliveryPolicy",
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "RedrivePolicy",
    "SubscriptionRoleArn",
    "ReplayPolicy",
}


def invalid_parameter(what: str) -> BrokerError:
    return BrokerError("InvalidParameter", f"Invalid parameter: {what}")


class QueueTarget(NamedTuple):
    """What a topic knows of a queue it may deliver to."""

    queue_id: int
    name: str
    fifo: bool
    post: Callable  # into the queue actor's mailbox


class Subscription(msgspec.Struct, gc=False):
    id: int
    arn: str
    protocol: str
    endpoint: str
    attributes: dict[str, str]
    confirmed: bool
    filter: FilterPolicy | None = None
    raw: bool = False


class Duplicate(msgspec.Struct, frozen=True):
    """A FIFO publish whose deduplication id was seen within 5 minutes: accepted, not delivered."""

    message_id: str
    dedup_key: str


class PreparedPublish(NamedTuple):
    published: Published
    deliveries: list[tuple[QueueTarget, MessageSent]]
    sequence_number: str | None
    pushes: list[PushQueued]


class TopicCore:
    def __init__(
        self,
        topic_id: int,
        name: str,
        attributes: Mapping[str, str],
        arn: str,
        *,
        tags: Mapping[str, str] | None = None,
        http_url: str = "",
        first_sequence: int = 0,
        signer: Signer | None = None,
        sign_sqs: bool = True,
        push_protocols: frozenset[str] = frozenset(),
        sign_later: bool = False,
    ) -> None:
        """signer: signs what HTTP/S and email-json subscriptions get, and (sign_sqs) the envelopes
        queues get; sign_later: envelopes get a stand-in Signature, and take_unsigned() hands
        their canonical strings to the actor to sign off the event loop. push_protocols: those of
        http, https, email, email-json this broker can deliver (email needs an SMTP relay)."""
        self.topic_id = topic_id
        self.name = name
        self.arn = arn
        self.region = arn.split(":")[3]
        self.account_id = arn.split(":")[4]
        self.attributes: dict[str, str] = dict(attributes)
        self.tags: dict[str, str] = dict(tags or {})
        self.fifo = self.attributes.get("FifoTopic") == "true"
        self.http_url = http_url.rstrip("/")
        self.signer = signer  # None: envelopes go unsigned
        self.sign_sqs = sign_sqs
        self.sign_later = sign_later
        self._unsigned: list[tuple[str, bytes, str]] = []  # (stand-in, canonical string, SignatureVersion)
        self._stand_ins = itertools.count(1)
        self.push_protocols = push_protocols
        self.restored_pushes: dict[int, list[PendingPush]] = {}  # by subscription id, for the delivery actors
        self.subscriptions: dict[str, Subscription] = {}  # by ARN, in subscription order
        self.deleted_subscriptions = 0
        self._dedup = DedupWindow(per_group=False)
        self._message_ids = MessageIds()
        # FIFO sequence numbers: above every LSN stored before this topic's actor started, and
        # one up per publish, so they only grow, across restarts too, whatever the wall clock does.
        self._sequence = first_sequence

    @classmethod
    def restore(
        cls,
        loaded: LoadedTopic,
        arn: str,
        *,
        now: float,
        wall_ms: int,
        http_url: str,
        last_lsn: int,
        signer: Signer | None = None,
        sign_sqs: bool = True,
        push_protocols: frozenset[str] = frozenset(),
        sign_later: bool = False,
    ) -> TopicCore:
        row = loaded.row
        core = cls(
            row.topic_id, row.topic, row.attributes, arn, tags=row.tags, http_url=http_url, first_sequence=last_lsn,
            signer=signer, sign_sqs=sign_sqs, push_protocols=push_protocols, sign_later=sign_later,
        )
        for record in loaded.subscriptions:
            core.subscriptions[record.subscription_arn] = _subscription(record)
        for push in loaded.pushes:
            core.restored_pushes.setdefault(push.subscription_id, []).append(push)
        core._dedup.restore(loaded.dedup, now, wall_ms)
        return core

    # --- the topic ------------------------------------------------------------------------------
    def get_attributes(self) -> dict[str, str]:
        confirmed = sum(1 for s in self.subscriptions.values() if s.confirmed)
        return {
            "TopicArn": self.arn,
            "Owner": self.account_id,
            "Policy": self.attributes.get("Policy") or _default_policy(self.arn, self.account_id),
            "DisplayName": "",
            "SubscriptionsConfirmed": str(confirmed),
            "SubscriptionsPending": str(len(self.subscriptions) - confirmed),
            "SubscriptionsDeleted": str(self.deleted_subscriptions),
            "EffectiveDeliveryPolicy": delivery_policy.effective_json(
                delivery_policy.effective(self.attributes.get("DeliveryPolicy"), None)
            ),
            **{name: value for name, value in self.attributes.items() if name != "Policy"},
        }

    def set_attribute(self, name: str, value: str, wall_ms: int) -> TopicAttributesChanged:
        checked = validate_topic_attributes({name: value}, fifo=self.fifo)
        self.attributes = {**self.attributes, **checked}
        return self._configuration(wall_ms)

    def tag(self, tags: Mapping[str, str], wall_ms: int) -> TopicAttributesChanged:
        self.tags = policy.tagged(self.tags, tags)
        return self._configuration(wall_ms)

    def untag(self, keys: Sequence[str], wall_ms: int) -> TopicAttributesChanged:
        self.tags = policy.untagged(self.tags, keys)
        return self._configuration(wall_ms)

    def add_permission(self, label: str, account_ids: Sequence[str], actions: Sequence[str], wall_ms: int) -> TopicAttributesChanged:
        document = policy.with_permission(
            self.attributes.get("Policy") or _default_policy(self.arn, self.account_id), self.arn, label, account_ids, actions, "SNS"
        )
        self.attributes = {**self.attributes, "Policy": document}
        return self._configuration(wall_ms)

    def remove_permission(self, label: str, wall_ms: int) -> TopicAttributesChanged:
        self.attributes = policy.without_permission(self.attributes, self.arn, label)
        return self._configuration(wall_ms)

    def deleted_record(self, wall_ms: int) -> TopicDeleted:
        return TopicDeleted(wall_ms, self.topic_id, self.name)

    def _configuration(self, wall_ms: int) -> TopicAttributesChanged:
        return TopicAttributesChanged(wall_ms, self.topic_id, self.name, dict(self.attributes), self.region, dict(self.tags))

    # --- subscriptions --------------------------------------------------------------------------
    def subscribe(
        self, protocol: str, endpoint: str, attributes: Mapping[str, str], wall_ms: int
    ) -> tuple[str, SubscriptionChanged | None]:
        """The subscription's ARN, and its record when it is new (an equal one already there is
        returned as it is)."""
        protocol = protocol.lower()
        self._check_endpoint(protocol, endpoint)
        checked = validate_subscription_attributes(attributes)
        for existing in self.subscriptions.values():
            if existing.protocol == protocol and existing.endpoint == endpoint:
                if any(existing.attributes.get(k) != v for k, v in checked.items()):
                    raise invalid_parameter("Attributes Reason: Subscription already exists with different attributes")
                return existing.arn, None
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise BrokerError("SubscriptionLimitExceeded", f"A topic has at most {MAX_SUBSCRIPTIONS} subscriptions.")
        if checked.get("ReplayPolicy"):
            checked.update(self._replay_start(checked["ReplayPolicy"], wall_ms))
        number = max((s.id for s in self.subscriptions.values()), default=0) + 1
        confirmed = protocol == "sqs"  # the others confirm by the token sent to their endpoint
        if not confirmed:
            checked[TOKEN] = secrets.token_hex(64)
        record = SubscriptionChanged(
            wall_ms, self.topic_id, self.name, number, f"{self.arn}:{self._message_ids.new()}", protocol, endpoint, checked, confirmed
        )
        self.subscriptions[record.subscription_arn] = _subscription(record)
        return record.subscription_arn, record

    def _check_endpoint(self, protocol: str, endpoint: str) -> None:
        if protocol in UNREACHABLE_PROTOCOLS:
            raise invalid_parameter(f"Protocol {protocol}: this broker cannot reach that service; use sqs, http, https or email")
        if protocol in PUSH_PROTOCOLS:
            if self.fifo:
                raise invalid_parameter(f"Invalid protocol type: {protocol} is not supported for FIFO topics; use sqs")
            if protocol not in self.push_protocols:
                raise invalid_parameter(
                    f"Protocol {protocol}: this broker has no SMTP relay configured (dovecote serve --smtp-host)"
                    if protocol.startswith("email")
                    else f"Protocol {protocol}: this broker delivers no HTTP pushes"
                )
            if protocol.startswith("email"):
                if not MAIL_ADDRESS.fullmatch(endpoint):
                    raise invalid_parameter("Invalid SMTP endpoint: " + endpoint[:80])
                return
            url = urlsplit(endpoint)
            if url.scheme != protocol or not url.hostname:
                raise invalid_parameter(f"Invalid {protocol} endpoint: must be an {protocol}:// URL, got {endpoint[:80]!r}")
            return
        if protocol != "sqs":
            raise invalid_parameter(f"Invalid protocol type: {protocol[:40]}")
        try:
            _, _, queue = validation.parse_queue_arn(endpoint)
        except BrokerError:
            raise invalid_parameter("SQS endpoint ARN") from None
        if queue.endswith(".fifo") != self.fifo:
            raise invalid_parameter(
                "Endpoint Reason: FIFO SQS Queues can not be subscribed to standard SNS topics"
                if not self.fifo
                else "Endpoint Reason: Please use FIFO SQS queue"
            )

    def _replay_start(self, policy_text: str, wall_ms: int) -> dict[str, str]:
        """The attributes that start (or, with an empty policy, stop) a replay."""
        if not policy_text:
            return {"ReplayStatus": "Completed"}
        if not self.archive_days:
            raise invalid_parameter("ReplayPolicy: the topic has no ArchivePolicy, so there is nothing to replay")
        policy = json.loads(policy_text)
        ending = _replay_time(policy["EndingPoint"]) if "EndingPoint" in policy else wall_ms
        return {"ReplayStatus": "Pending", REPLAY_CURSOR: "0", REPLAY_UNTIL: str(min(ending, wall_ms))}

    def unsubscribe(self, arn: str, wall_ms: int) -> SubscriptionDeleted | None:
        subscription = self.subscriptions.pop(arn, None)
        if subscription is None:
            return None  # AWS answers an unknown or repeated Unsubscribe with success
        self.deleted_subscriptions += 1
        return SubscriptionDeleted(wall_ms, self.topic_id, self.name, subscription.id, arn)

    def subscription(self, arn: str) -> Subscription:
        subscription = self.subscriptions.get(arn)
        if subscription is None:
            raise BrokerError("NotFound", "Subscription does not exist")
        return subscription

    def subscription_attributes(self, arn: str) -> dict[str, str]:
        subscription = self.subscription(arn)
        return {
            "SubscriptionArn": arn,
            "TopicArn": self.arn,
            "Owner": self.account_id,
            "Protocol": subscription.protocol,
            "Endpoint": subscription.endpoint,
            "PendingConfirmation": "false" if subscription.confirmed else "true",
            "ConfirmationWasAuthenticated": "true" if subscription.confirmed else "false",
            "RawMessageDelivery": "false",
            "EffectiveDeliveryPolicy": delivery_policy.effective_json(self.delivery_policy(subscription)),
            **{k: v for k, v in subscription.attributes.items() if not k.startswith("dovecote:")},
        }

    def set_subscription_attribute(self, arn: str, name: str, value: str, wall_ms: int) -> SubscriptionChanged:
        subscription = self.subscription(arn)
        attributes = {**subscription.attributes, **validate_subscription_attributes({name: value}, subscription.attributes)}
        if name == "ReplayPolicy":
            attributes.update(self._replay_start(value, wall_ms))
        if name == "FilterPolicy" and not value:
            attributes.pop("FilterPolicy", None)
        if name == "FilterPolicyScope" and "FilterPolicy" in attributes:
            compile_policy(attributes["FilterPolicy"], value)  # the policy must suit its new scope
        record = SubscriptionChanged(
            wall_ms, self.topic_id, self.name, subscription.id, arn, subscription.protocol, subscription.endpoint,
            attributes, subscription.confirmed,
        )
        self.subscriptions[arn] = _subscription(record)
        return record

    def confirm(self, token: str, wall_ms: int) -> tuple[str, SubscriptionChanged | None]:
        """The ARN of the subscription the token confirms, and its record when it was pending."""
        for subscription in self.subscriptions.values():
            if subscription.attributes.get(TOKEN) == token:
                if subscription.confirmed:
                    return subscription.arn, None
                record = SubscriptionChanged(
                    wall_ms, self.topic_id, self.name, subscription.id, subscription.arn, subscription.protocol,
                    subscription.endpoint, subscription.attributes, True,
                )
                self.subscriptions[subscription.arn] = _subscription(record)
                return subscription.arn, record
        raise invalid_parameter(f"Token: no subscription of this topic has the token {token[:60]!r}")

    def notice(self, arn: str, message_type: str, wall_ms: int) -> PushRequest:
        """The SubscriptionConfirmation or UnsubscribeConfirmation of an HTTP/S or email
        subscription: it carries the token and the SubscribeURL that confirms (again)."""
        subscription = self.subscription(arn)
        token = subscription.attributes[TOKEN]
        subscribe_url = f"{self.http_url}/?Action=ConfirmSubscription&TopicArn={quote(self.arn, safe='')}&Token={token}"
        if message_type == "SubscriptionConfirmation":
            text = (
                f"You have chosen to subscribe to the topic {self.arn}.\n"
                "To confirm the subscription, visit the SubscribeURL included in this message."
            )
        else:
            text = (
                f"You have chosen to deactivate subscription {arn}.\n"
                "To cancel this operation and restore the subscription, visit the SubscribeURL included in this message."
            )
        message_id = self._message_ids.new()
        fields: dict[str, object] = {
            "Type": message_type, "MessageId": message_id, "Token": token, "TopicArn": self.arn, "Message": text,
            "SubscribeURL": subscribe_url, "Timestamp": iso_timestamp(wall_ms),
        }
        self._sign(fields, True, later=False)
        subject = "AWS Notification - Subscription Confirmation" if message_type == "SubscriptionConfirmation" else "AWS Notification - Unsubscribe Confirmation"
        if subscription.protocol == "email":
            body = f"{text}\n\n{subscribe_url}\n"
        else:
            body = _json(fields)
        return PushRequest(
            subscription.protocol, subscription.endpoint, message_type, message_id, self.arn, "", body, False, subject,
            self.delivery_policy(subscription).content_type,
        )

    def delivery_policy(self, subscription: Subscription) -> delivery_policy.EffectivePolicy:
        return delivery_policy.effective(self.attributes.get("DeliveryPolicy"), subscription.attributes.get("DeliveryPolicy"))

    def push_targets(self) -> dict[int, PushTarget]:
        """What each confirmed HTTP/S or email subscription's delivery actor works to, by id."""
        targets = {}
        for s in self.subscriptions.values():
            if s.confirmed and s.protocol in PUSH_PROTOCOLS:
                redrive = s.attributes.get("RedrivePolicy")
                dead_letter = json.loads(redrive).get("deadLetterTargetArn", "") if redrive else ""
                targets[s.id] = PushTarget(
                    self.topic_id, self.name, self.arn, s.id, s.arn, s.protocol, s.endpoint, s.raw, self.delivery_policy(s), dead_letter
                )
        return targets

    def list_subscriptions(self) -> list[SubscriptionInfo]:
        return [
            SubscriptionInfo(s.arn if s.confirmed else "PendingConfirmation", self.account_id, s.protocol, s.endpoint, self.arn)
            for s in self.subscriptions.values()
        ]

    # --- publishing -----------------------------------------------------------------------------
    def prepare_publish(
        self,
        message: str,
        subject: str | None,
        message_structure: str | None,
        attributes: Mapping[str, MessageAttribute],
        group_id: str | None,
        dedup_id: str | None,
        targets: Mapping[str, QueueTarget],
        now: float,
        wall_ms: int,
    ) -> PreparedPublish | Duplicate:
        """Validate a publish and build its records; nothing changes until stored() (or
        forget() when storage refused them), but for the deduplication id being remembered."""
        payloads = validate_publish(message, subject, message_structure, attributes)
        dedup_id = self._fifo_parameters(message, group_id, dedup_id)
        if dedup_id:
            key = self._dedup.key(dedup_id, group_id or "")
            seen = self._dedup.seen(key, now)
            if seen is not None:
                return Duplicate(seen.message_id, key)
        message_id = self._message_ids.new()
        sequence_number = None
        if self.fifo:
            self._sequence += 1
            sequence_number = f"{self._sequence:020d}"
        deliveries: list[tuple[QueueTarget, MessageSent]] = []
        pushes: list[PushQueued] = []
        delivered_to: list[str] = []
        views: dict[str, MessageView] = {}  # by payload: its values are read once for all policies
        envelopes: dict[tuple[str, bool], tuple[str, str]] = {}  # by payload and signedness: made (and signed) once
        for subscription in self.subscriptions.values():
            push = subscription.protocol in PUSH_PROTOCOLS
            target = None if push else targets.get(subscription.endpoint)
            if not subscription.confirmed or (target is None and not push):
                continue
            payload = payloads.get(subscription.protocol, payloads["default"])
            if subscription.filter is not None:
                view = views.get(payload)
                if view is None:
                    view = views[payload] = MessageView(attributes, payload)
                if subscription.filter.first_failure(view) is not None:
                    continue
            envelope = None
            if not subscription.raw and subscription.protocol != "email":
                signed = push or self.sign_sqs  # HTTP/S and email-json messages are always signed
                envelope = envelopes.get((payload, signed))
                if envelope is None:
                    envelope = envelopes[(payload, signed)] = self._envelope(
                        message_id, payload, subject, attributes, wall_ms, sequence_number, signed=signed
                    )
            if target is not None:
                deliveries.append(
                    (target, self._delivery(subscription, target, payload, attributes, envelope, wall_ms, group_id or "", dedup_id))
                )
            else:
                pushes.append(self._push(subscription, message_id, payload, subject, attributes, envelope, wall_ms))
            delivered_to.append(subscription.arn)
        published = Published(
            at_ms=wall_ms,
            topic_id=self.topic_id,
            topic=self.name,
            seq=0,
            message_id=message_id,
            message=message,
            subject=subject or "",
            attributes=dict(attributes),
            message_structure=message_structure or "",
            group_id=group_id or "",
            dedup_id=dedup_id,
            delivered_to=delivered_to,
            archive_until_ms=wall_ms + self.archive_days * 86_400_000 if self.archive_days else 0,
        )
        if dedup_id:
            self._dedup.remember(self._dedup.key(dedup_id, group_id or ""), message_id, now)
        return PreparedPublish(published, deliveries, sequence_number, pushes)

    @property
    def attributes(self) -> dict[str, str]:
        return self._attributes

    @attributes.setter
    def attributes(self, attributes: dict[str, str]) -> None:
        self._attributes = attributes
        # Read once per change, not per publish.
        policy_text = attributes.get("ArchivePolicy")
        self.archive_days = int(str(json.loads(policy_text).get("MessageRetentionPeriod", 0))) if policy_text else 0

    # --- replaying the archive to one subscription ----------------------------------------------
    def active_replays(self) -> list[tuple[str, int]]:
        """(subscription ARN, last seq replayed) of each replay to go on with."""
        return [
            (s.arn, int(s.attributes.get(REPLAY_CURSOR, "0")))
            for s in self.subscriptions.values()
            if s.attributes.get("ReplayStatus") in ("Pending", "In progress")
        ]

    def replay_batch(
        self, arn: str, archived: Sequence[Published], complete: bool, targets: Mapping[str, QueueTarget], wall_ms: int
    ) -> tuple[list[tuple[QueueTarget, MessageSent]], SubscriptionChanged]:
        """The deliveries of one batch of archived publishes to a replaying subscription (same
        MessageId and Timestamp, marked Replayed, through its filter policy), and the
        subscription's new state: its cursor moved past the batch, Completed when `complete` or
        the replay's end is reached."""
        subscription = self.subscription(arn)
        policy = json.loads(subscription.attributes["ReplayPolicy"])
        starting = _replay_time(policy["StartingPoint"])
        until = int(subscription.attributes[REPLAY_UNTIL])
        target = self._targets_of(subscription, targets)
        deliveries: list[tuple[QueueTarget, MessageSent]] = []
        cursor = int(subscription.attributes.get(REPLAY_CURSOR, "0"))
        for record in archived:
            if record.at_ms > until:
                complete = True
                break
            cursor = record.seq
            if record.at_ms < starting or target is None:
                continue
            payloads = validate_publish(record.message, record.subject or None, record.message_structure or None, {})
            payload = payloads.get("sqs", payloads["default"])
            if subscription.filter is not None and subscription.filter.first_failure(MessageView(record.attributes, payload)):
                continue
            envelope = self._envelope(
                record.message_id, payload, record.subject or None, record.attributes, record.at_ms, None, replayed=True,
                signed=self.sign_sqs,
            )
            delivery = self._delivery(subscription, target, payload, record.attributes, envelope, record.at_ms, record.group_id, "")
            deliveries.append((target, delivery))
        status = "Failed" if target is None else "Completed" if complete else "In progress"
        attributes = {**subscription.attributes, "ReplayStatus": status, REPLAY_CURSOR: str(cursor)}
        record = SubscriptionChanged(
            wall_ms, self.topic_id, self.name, subscription.id, arn, subscription.protocol, subscription.endpoint,
            attributes, subscription.confirmed,
        )
        self.subscriptions[arn] = _subscription(record)
        return deliveries, record

    def _targets_of(self, subscription: Subscription, targets: Mapping[str, QueueTarget]) -> QueueTarget | None:
        return targets.get(subscription.endpoint) if subscription.confirmed else None

    def _delivery(
        self,
        subscription: Subscription,
        target: QueueTarget,
        payload: str,
        attributes: Mapping[str, MessageAttribute],
        envelope: tuple[str, str] | None,
        at_ms: int,
        group_id: str,
        dedup_id: str,
    ) -> MessageSent:
        """One SQS delivery: the raw payload with its attributes, or the envelope around the
        subscription's ARN."""
        if subscription.raw or envelope is None:
            body, sqs_attributes = payload, dict(attributes)
        else:
            body, sqs_attributes = envelope[0] + subscription.arn + envelope[1], {}
        return MessageSent(
            at_ms=at_ms,
            queue_id=target.queue_id,
            queue=target.name,
            seq=0,
            delay_seconds=0,
            message_id=self._message_ids.new(),
            sender_id="",
            body=body,
            attributes=sqs_attributes,
            group_id=group_id,
            dedup_id=dedup_id if target.fifo else "",
        )

    def _push(
        self,
        subscription: Subscription,
        message_id: str,
        payload: str,
        subject: str | None,
        attributes: Mapping[str, MessageAttribute],
        envelope: tuple[str, str] | None,
        at_ms: int,
    ) -> PushQueued:
        """One HTTP/S or email delivery: the envelope, the raw payload, or (email) the text with
        the unsubscribe link."""
        if envelope is not None:
            body = envelope[0] + subscription.arn + envelope[1]
        elif subscription.protocol == "email":
            body = (
                f"{payload}\n\n--\nIf you wish to stop receiving notifications from this topic, please click or visit the "
                f"link below to unsubscribe:\n{self.unsubscribe_url(subscription.arn)}\n"
            )
        else:
            body = payload
        return PushQueued(
            at_ms, self.topic_id, self.name, subscription.id, 0, message_id, body, subject or "",
            dict(attributes) if subscription.raw else {},
        )

    def stored(self, published: Published) -> None:
        if published.dedup_id:
            self._dedup.stored(self._dedup.key(published.dedup_id, published.group_id), published.message_id, published.seq)

    def forget(self, published: Published) -> None:
        if published.dedup_id:
            self._dedup.forget(self._dedup.key(published.dedup_id, published.group_id), published.message_id)

    def stored_seq_of(self, duplicate: Duplicate) -> int:
        return self._dedup.stored_seq(duplicate.dedup_key, duplicate.message_id)

    def expire_dedup(self, now: float) -> int | None:
        return self._dedup.expire(now)

    def _fifo_parameters(self, message: str, group_id: str | None, dedup_id: str | None) -> str:
        if not self.fifo:
            if group_id is not None or dedup_id is not None:
                raise invalid_parameter(
                    "MessageGroupId and MessageDeduplicationId are valid only for FIFO topics"
                )
            return ""
        if group_id is None:
            raise invalid_parameter("The MessageGroupId parameter is required for FIFO topics")
        validation.validate_group_id(group_id)
        if dedup_id is not None:
            validation.validate_group_id(dedup_id, "MessageDeduplicationId")
            return dedup_id
        if self.attributes.get("ContentBasedDeduplication") != "true":
            raise invalid_parameter(
                "The topic should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly"
            )
        return hashlib.sha256(message.encode()).hexdigest()

    def _envelope(
        self,
        message_id: str,
        message: str,
        subject: str | None,
        attributes: Mapping[str, MessageAttribute],
        wall_ms: int,
        sequence_number: str | None,
        replayed: bool = False,
        signed: bool = True,
    ) -> tuple[str, str]:
        """The SNS JSON envelope an SQS subscription receives (without RawMessageDelivery), as the
        text before and after the subscription's ARN (in its UnsubscribeURL), which alone differs
        between subscriptions. ARNs need no JSON escaping."""
        head: dict[str, object] = {"Type": "Notification", "MessageId": message_id}
        if sequence_number is not None:
            head["SequenceNumber"] = sequence_number
        head["TopicArn"] = self.arn
        if subject:
            head["Subject"] = subject
        head["Message"] = message
        head["Timestamp"] = iso_timestamp(wall_ms)
        if not self.fifo:
            self._sign(head, signed)
        if replayed:
            head["Replayed"] = True
        url = _json(self.unsubscribe_url(""))[:-1]
        before = f'{_json(head)[:-1]},"UnsubscribeURL":{url}'
        if not attributes:
            return before, '"}'
        encoded = {
            name: {
                "Type": value.data_type,
                "Value": base64.b64encode(value.binary_value).decode() if value.binary_value is not None else value.string_value,
            }
            for name, value in attributes.items()
        }
        return before, f'",{_json({"MessageAttributes": encoded})[1:]}'


    def unsubscribe_url(self, subscription_arn: str) -> str:
        return f"{self.http_url}/?Action=Unsubscribe&SubscriptionArn={subscription_arn}"

    def _sign(self, fields: dict[str, object], signed: bool, later: bool = True) -> None:
        """Add SignatureVersion, and the Signature (or, signing later, its stand-in) and
        SigningCertURL when signing."""
        version = self.attributes.get("SignatureVersion", "1")
        fields["SignatureVersion"] = version
        if signed and self.signer is not None:
            if self.sign_later and later:
                stand_in = f"{UNSIGNED}{next(self._stand_ins)}"
                self._unsigned.append((stand_in, canonical_string(fields), version))
                fields["Signature"] = stand_in
            else:
                fields["Signature"] = self.signer.sign(fields, version)
            fields["SigningCertURL"] = self.signer.certificate_url

    def take_unsigned(self) -> list[tuple[str, bytes, str]]:
        """The signatures the records prepared since the last call stand in for."""
        unsigned, self._unsigned = self._unsigned, []
        return unsigned

    def explain(self, message: str, attributes: Mapping[str, MessageAttribute], targets: Mapping[str, QueueTarget]) -> list[Verdict]:
        verdicts = []
        for subscription in self.subscriptions.values():
            reason = ""
            if not subscription.confirmed:
                reason = "the subscription is pending confirmation"
            elif subscription.protocol not in PUSH_PROTOCOLS and subscription.endpoint not in targets:
                reason = f"the queue {subscription.endpoint} does not exist"
            elif subscription.filter is not None:
                reason = explain(subscription.filter, attributes, message) or ""
            verdicts.append(Verdict(subscription.arn, subscription.protocol, subscription.endpoint, not reason, reason))
        return verdicts


def with_signatures(records: Sequence[Record], signatures: Mapping[str, str]) -> list[Record]:
    """The records, their envelopes' stand-ins replaced by the signatures (a stand-in is found as
    the envelope's "Signature" member: inside a JSON string its quotes would be escaped)."""
    out: list[Record] = []
    for record in records:
        body = getattr(record, "body", None)
        start = body.find(f'"Signature":"{UNSIGNED}') if body is not None else -1
        if start >= 0:
            value_start = start + len('"Signature":"')
            value_end = body.index('"', value_start)
            body = body[:value_start] + signatures[body[value_start:value_end]] + body[value_end:]
            record = msgspec.structs.replace(record, body=body)
        out.append(record)
    return out


def _replay_time(value: object) -> int:
    """A ReplayPolicy point (ISO 8601, or epoch milliseconds) in wall-clock milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise invalid_parameter(f"ReplayPolicy: {str(value)[:40]!r} is not a timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def iso_timestamp(wall_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(wall_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall_ms % 1000:03d}Z"


def _subscription(record: SubscriptionChanged) -> Subscription:
    attributes = record.attributes
    policy_text = attributes.get("FilterPolicy")
    return Subscription(
        record.subscription_id,
        record.subscription_arn,
        record.protocol,
        record.endpoint,
        dict(attributes),
        record.confirmed,
        compile_policy(policy_text, attributes.get("FilterPolicyScope", ATTRIBUTES)) if policy_text else None,
        attributes.get("RawMessageDelivery") == "true",
    )


def _default_policy(arn: str, account_id: str) -> str:
    return json.dumps(
        {
            "Version": "2008-10-17",
            "Id": "__default_policy_ID",
            "Statement": [
                {
                    "Sid": "__default_statement_ID",
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": [
                        "SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission",
                        "SNS:RemovePermission", "SNS:DeleteTopic", "SNS:Subscribe",
                        "SNS:ListSubscriptionsByTopic", "SNS:Publish",
                    ],
                    "Resource": arn,
                    "Condition": {"StringEquals": {"AWS:SourceOwner": account_id}},
                }
            ],
        },
        separators=(",", ":"),
    )


# --- validation -----------------------------------------------------------------------------------
def validate_topic_name(name: str, fifo: bool) -> None:
    base = name[:-5] if fifo and name.endswith(".fifo") else name
    if not 1 <= len(name) <= 256 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in base) or fifo != name.endswith(".fifo"):
        raise invalid_parameter(
            "Topic Name" if not fifo else "Fifo Topic names must end with .fifo and must be made up of only "
            "uppercase and lowercase ASCII letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters long."
        )


def validate_topic_attributes(attributes: Mapping[str, str], *, fifo: bool, creating: bool = False) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in attributes.items():
        if name == "FifoTopic" and creating:
            if value.lower() not in ("true", "false"):
                raise invalid_parameter("Attributes Reason: FifoTopic must be true or false")
            if fifo:
                checked[name] = "true"
            continue
        if name not in TOPIC_ATTRIBUTES:
            raise invalid_parameter(f"AttributeName: {name[:60]}")
        if name == "ContentBasedDeduplication":
            if not fifo:
                raise invalid_parameter("Attributes Reason: Content-based deduplication can only be set for FIFO topics")
            if value.lower() not in ("true", "false"):
                raise invalid_parameter("Attributes Reason: ContentBasedDeduplication must be true or false")
            value = value.lower()
        elif name == "SignatureVersion" and value not in ("1", "2"):
            raise invalid_parameter("Attributes Reason: SignatureVersion must be 1 or 2")
        elif name == "TracingConfig" and value not in ("PassThrough", "Active"):
            raise invalid_parameter("Attributes Reason: TracingConfig must be PassThrough or Active")
        elif name == "DisplayName" and len(value) > 100:
            raise invalid_parameter("DisplayName: at most 100 characters")
        elif name == "ArchivePolicy" and value:
            if not fifo:
                raise invalid_parameter("Attributes Reason: ArchivePolicy is supported only for FIFO topics")
            document = _json_object(name, value)
            days = document.get("MessageRetentionPeriod")
            if document and (isinstance(days, bool) or not str(days).isdigit() or not 1 <= int(str(days)) <= MAX_ARCHIVE_DAYS):
                raise invalid_parameter(f"ArchivePolicy: MessageRetentionPeriod must be 1 to {MAX_ARCHIVE_DAYS} days")
        elif name == "DeliveryPolicy" and value:
            delivery_policy.validate_topic_policy(value)
        elif name in ("Policy", "DataProtectionPolicy") and value:
            _json_object(name, value)
        checked[name] = value
    return checked


def validate_subscription_attributes(attributes: Mapping[str, str], current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Check subscription attributes being set (beside the `current` ones, whose scope a new
    FilterPolicy is compiled for)."""
    scope = attributes.get("FilterPolicyScope", (current or {}).get("FilterPolicyScope", ATTRIBUTES))
    checked: dict[str, str] = {}
    for name, value in attributes.items():
        if name not in SUBSCRIPTION_ATTRIBUTES:
            raise invalid_parameter(f"AttributeName: {name[:60]}")
        if name == "RawMessageDelivery":
            if value.lower() not in ("true", "false"):
                raise invalid_parameter("Attributes Reason: RawMessageDelivery: Invalid value [" + value[:20] + "]. Must be true or false.")
            value = value.lower()
        elif name == "FilterPolicyScope" and value not in ("MessageAttributes", "MessageBody"):
            raise invalid_parameter("Attributes Reason: FilterPolicyScope: must be MessageAttributes or MessageBody")
        elif name == "FilterPolicy" and value:
            compile_policy(value, scope)
        elif name == "RedrivePolicy" and value:
            target = _json_object(name, value).get("deadLetterTargetArn")
            if not isinstance(target, str):
                raise invalid_parameter("RedrivePolicy: deadLetterTargetArn is missing")
            try:
                validation.parse_queue_arn(target)
            except BrokerError:
                raise invalid_parameter("RedrivePolicy: deadLetterTargetArn must be an SQS queue ARN") from None
        elif name == "ReplayPolicy" and value:
            policy = _json_object(name, value)
            if policy.get("PointType") != "Timestamp" or "StartingPoint" not in policy:
                raise invalid_parameter("ReplayPolicy: PointType must be Timestamp, with a StartingPoint")
            for point in ("StartingPoint", "EndingPoint"):
                if point in policy:
                    _replay_time(policy[point])
        elif name == "DeliveryPolicy" and value:
            delivery_policy.validate_subscription_policy(value)
        checked[name] = value
    return checked


def _json_object(name: str, value: str) -> dict:
    document = validation.json_object(value)
    if document is None:
        raise invalid_parameter(f"{name}: must be a JSON object")
    return document


def validate_publish(
    message: str, subject: str | None, message_structure: str | None, attributes: Mapping[str, MessageAttribute]
) -> dict[str, str]:
    """Check a publish; returns its payloads by protocol (with `default`)."""
    if not message:
        raise invalid_parameter("Empty message")
    if subject is not None and (not subject or len(subject) >= 100 or not subject.isprintable()):
        raise invalid_parameter("Subject: 1 to 99 printable characters, no line breaks")
    size = len(message.encode())
    if attributes:
        try:
            size += validation.validate_message_attributes(attributes)
        except BrokerError as error:
            raise invalid_parameter(f"MessageAttributes: {error.message}") from None
        for name, value in attributes.items():
            if value.data_type == "String.Array":
                try:
                    items = json.loads(value.string_value or "")
                except ValueError:
                    items = None
                if not isinstance(items, list):
                    raise invalid_parameter(f"Message attribute '{name}' of type String.Array must be a JSON array")
    if size > MAX_MESSAGE_BYTES:
        raise invalid_parameter(f"Message too long: messages are at most {MAX_MESSAGE_BYTES} bytes with their attributes")
    if message_structure is None:
        return {"default": message}
    if message_structure != "json":
        raise invalid_parameter("MessageStructure: the only valid value is json")
    try:
        payloads = json.loads(message)
    except ValueError:
        raise invalid_parameter("Message Structure - JSON message body failed to parse") from None
    if not isinstance(payloads, dict) or not isinstance(payloads.get("default"), str):
        raise invalid_parameter("Message Structure - No default entry in JSON message body")
    return {protocol: text for protocol, text in payloads.items() if isinstance(text, str)}


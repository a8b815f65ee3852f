"""The rules of one SNS topic, as a pure object: its attributes, its subscriptions, and what a
publish turns into. No I/O, no clock of its own (times are passed in).

Theory of operation
-------------------
The Trio shell (`topic.py`) drives the core in cycles, as a queue's shell does: each request goes
to `handle`, then `tick` runs the topic's timers and the next batch of each archive replay, and
both fill a `TopicCycle`. A publish becomes one `Published` record and, in the same commit, one
`MessageSent` record for every SQS subscription whose queue exists and whose filter policy matches,
and one `PushQueued` record for every matching confirmed HTTP/S or email subscription: the fan-out
is exact because it is a single transaction. `publish_records` gives those records (in the entry
storage may refuse when the disk is full), with each delivery's queue; configuration changes go in
another entry. Once stored, `settle` gives the answers, the messages each queue adopts and the
pushes each delivery actor takes on. The queues a topic may deliver to are looked up at publish
time (`QueueTargets`, the broker's directory), never copied here.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import msgspec

from dovecote.storage.records import (
    DedupWindowClosed,
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

from . import archive_replay, authorization, delivery_policy, mobile, paging, policy, sns_validation
from .attributes import AnyAttribute, to_stored
from .dedup import DedupWindow
from .errors import (
    BrokerError,
    failure,
    invalid_parameter,
    no_such_topic,
    not_an_operation,
    original_not_stored,
    storage_failed,
)
from .filter_policy import ATTRIBUTES, FilterPolicy, MessageView, compile_policy, explain
from .ids import MessageIds, random_id
from .limits import HOUSEKEEPING_INTERVAL_S, SNS_MAX_SUBSCRIPTIONS_PER_TOPIC
from .messages import AdoptedMessage, QueueTarget, Reply, Request, Stop, adopted
from .ops import (
    AddTopicPermission,
    Arn,
    Attributes,
    BatchFailure,
    ConfirmSubscription,
    DeleteTopic,
    Done,
    ExplainDelivery,
    Explanation,
    GetSubscriptionAttributes,
    GetTopicAttributes,
    ListSubscriptionsByTopic,
    ListTopicTags,
    Publish,
    PublishBatch,
    PublishBatchResult,
    PublishEntry,
    PublishedEntry,
    PublishedMessage,
    RemoveTopicPermission,
    Result,
    SetSubscriptionAttributes,
    SetTopicAttributes,
    Subscribe,
    SubscriptionInfo,
    TagTopic,
    Tags,
    Unsubscribe,
    UnsubscribeByUrl,
    UntagTopic,
    Verdict,
)
from .principals import SNS
from .push_types import (
    CONFIRMED_BY_TOKEN, DEAD_LETTERED, DELIVERED, DROPPED, FUNCTION_PROTOCOL, MOBILE_PROTOCOLS, PUSH_PROTOCOLS, PushRequest, PushTarget,
)
from .signing import Signer
from .stored_time import elapsed_since
from .sns_messages import SnsMessages

TOKEN = "dovecote:Token"  # an HTTP/S or email subscription's confirmation token


class QueueTargets(Protocol):
    """The queues a topic may deliver to, by ARN (the broker's directory)."""

    def get(self, queue_arn: str) -> QueueTarget | None: ...


class TopicOptions(NamedTuple):
    """What every topic of a broker is made with."""

    http_url: str = ""  # the broker's HTTP port as endpoints reach it (SubscribeURL, UnsubscribeURL)
    signer: Signer | None = None  # signs what subscriptions get (None: unsigned)
    sign_sqs: bool = True  # False: envelopes delivered to queues go without a signature
    push_protocols: frozenset[str] = frozenset()  # those of http, https, email, email-json this broker delivers
    sign_later: bool = False  # envelopes get stand-ins, signed by the actor off the event loop
    check_deliveries: bool = False  # True (authentication on): a queue's Policy must let the topic deliver into it


class Subscription(msgspec.Struct, gc=False):
    id: int
    arn: str
    protocol: str
    endpoint: str
    attributes: dict[str, str]
    confirmed: bool
    filter: FilterPolicy | None = None
    raw: bool = False


class DuplicatePublish(msgspec.Struct, frozen=True):
    """A FIFO publish whose deduplication id was seen within 5 minutes: accepted, not delivered."""

    message_id: str
    dedup_key: str


class PreparedPublish(NamedTuple):
    published: Published
    deliveries: list[tuple[QueueTarget, MessageSent]]
    sequence_number: str | None
    pushes: list[PushQueued]
    dropped: int = 0  # matching SQS subscriptions whose queue does not exist


class TopicCounters:
    """What this topic published and delivered since the broker started: plain counts, changed by
    the topic's own task alone and read by anyone (/metrics). A topic rebuilt from the store after a
    failure keeps its counters (recovery.py hands them on)."""

    __slots__ = ("publishes", "deliveries")

    def __init__(self) -> None:
        self.publishes = 0  # stored (FIFO duplicates not)
        # (protocol, outcome) -> count (push_types.DELIVERY_OUTCOMES): SQS deliveries are counted
        # here as their publish is stored; pushes by their delivery actors, added here as those end.
        self.deliveries: dict[tuple[str, str], int] = {}

    def add(self, protocol: str, outcome: str, count: int = 1) -> None:
        key = (protocol, outcome)
        self.deliveries[key] = self.deliveries.get(key, 0) + count


class PublishGroup(NamedTuple):
    """One Publish or PublishBatch of a cycle, answered once its records are settled."""

    reply: Reply
    entry_ids: list[str] | None  # the batch entries of `prepared`, in order; None: a Publish
    prepared: list[PreparedPublish | DuplicatePublish]
    refused: list[BatchFailure]


class TopicCycle:
    """What one cycle of a topic will commit, and what waits for that commit."""

    __slots__ = ("records", "publishes", "replayed", "replies", "notices", "ended_by")

    def __init__(self) -> None:
        self.records: list[Record] = []  # configuration: stored before this cycle's publishes
        self.publishes: list[PublishGroup] = []
        self.replayed: list[tuple[QueueTarget | None, Record]] = []  # replay deliveries and progress
        self.replies: list[tuple[Reply, Result]] = []  # sent once the cycle is committed
        self.notices: list[tuple[PushRequest, delivery_policy.EffectivePolicy]] = []  # sent once committed
        self.ended_by: Request | None = None  # a DeleteTopic or Stop

    def failed(self, result: Result) -> list[tuple[Reply, Result]]:
        """Every answer of this cycle as `result`."""
        answers = [(group.reply, result) for group in self.publishes] + [(reply, result) for reply, _ in self.replies]
        self.publishes.clear()
        self.replies.clear()
        return answers


class Settled(NamedTuple):
    """A topic cycle's outcome, for the shell to hand on."""

    answers: list[tuple[Reply, Result]]
    adopted: list[tuple[QueueTarget, list[AdoptedMessage]]]  # what each queue serves from now on
    pushed: dict[int, list[tuple[int, str]]]  # subscription id -> (seq, MessageId) of its new pushes


class TopicCore:
    def __init__(
        self,
        topic_id: int,
        name: str,
        attributes: Mapping[str, str],
        arn: str,
        *,
        tags: Mapping[str, str] | None = None,
        first_sequence: int = 0,
        options: TopicOptions = TopicOptions(),
    ) -> None:
        self.topic_id = topic_id
        self.name = name
        self.arn = arn
        self.region = arn.split(":")[3]
        self.account_id = arn.split(":")[4]
        self.access = authorization.OwnPolicy()  # the Policy attribute, parsed (see the attributes setter)
        self.attributes: dict[str, str] = dict(attributes)
        self.tags: dict[str, str] = dict(tags or {})
        self.fifo = self.attributes.get("FifoTopic") == "true"
        self.options = options
        self.messages = SnsMessages(arn, self.fifo, options.http_url, options.signer, sign_later=options.sign_later)
        self.restored_pushes: dict[int, list[PendingPush]] = {}  # by subscription id, for the delivery actors
        self.subscriptions: dict[str, Subscription] = {}  # by ARN, in subscription order
        self.deleted_subscriptions = 0
        self._dedup = DedupWindow(per_group=False)
        self._message_ids = MessageIds()
        self._housekeeping_at = -math.inf
        # FIFO sequence numbers: above every LSN stored before this topic's actor started, and
        # one up per publish, so they only grow, across restarts too, whatever the wall clock does.
        self._sequence = first_sequence
        self.counters = TopicCounters()
        self._delivery_context = authorization.delivery_context(arn, self.account_id)
        self._delivery_grants: dict[str, tuple[authorization.Policy | None, bool]] = {}  # queue ARN -> (its policy, allowed)

    @classmethod
    def restore(
        cls, loaded: LoadedTopic, arn: str, *, now: float, wall_ms: int, last_written_ms: int, last_lsn: int, options: TopicOptions
    ) -> TopicCore:
        row = loaded.row
        core = cls(row.topic_id, row.topic, row.attributes, arn, tags=row.tags, first_sequence=last_lsn, options=options)
        for record in loaded.subscriptions:
            core.subscriptions[record.subscription_arn] = _subscription(record)
        for push in loaded.pushes:
            core.restored_pushes.setdefault(push.subscription_id, []).append(push)
        core._dedup.restore(loaded.dedup, now, elapsed_since(last_written_ms, wall_ms))
        return core

    # --- one request ----------------------------------------------------------------------------
    def handle(self, request: Request, cycle: TopicCycle, targets: QueueTargets, now: float, wall_ms: int) -> None:
        """Handle one request of a cycle: answer it now, or fill `cycle` with what it commits and
        the answer that waits for the commit."""
        op, reply = request.op, request.reply
        if cycle.ended_by is not None:
            reply(failure(no_such_topic()))
            return
        try:
            self._handle(op, reply, request, cycle, targets, now, wall_ms)
        except BrokerError as error:
            reply(failure(error))

    def _handle(
        self, op: object, reply: Reply, request: Request, cycle: TopicCycle, targets: QueueTargets, now: float, wall_ms: int
    ) -> None:
        records, replies = cycle.records, cycle.replies
        match op:
            case Publish():
                cycle.publishes.append(PublishGroup(reply, None, [self.prepare_publish(op, targets, now, wall_ms, request.trace_header)], []))
            case PublishBatch():
                self._publish_batch(op, request, cycle, targets, now, wall_ms)
            case Subscribe():
                self._check_dead_letter_queue(op.attributes.get("RedrivePolicy"), op.endpoint, targets, subscribing=True)
                arn, record = self.subscribe(op.protocol, op.endpoint, op.attributes, wall_ms)
                if record is not None:
                    records.append(record)
                if self.subscription(arn).confirmed:
                    replies.append((reply, Arn(arn)))
                else:  # the confirmation goes out (again); AWS answers so until the endpoint confirms
                    self._notice(arn, "SubscriptionConfirmation", cycle, wall_ms)
                    replies.append((reply, Arn(arn if op.return_subscription_arn else "pending confirmation")))
            case ConfirmSubscription():
                arn, record = self.confirm(op.token, wall_ms)
                if record is not None:
                    records.append(record)
                replies.append((reply, Arn(arn)))
            case SetSubscriptionAttributes():
                if op.name == "RedrivePolicy":
                    self._check_dead_letter_queue(op.value, self.subscription(op.subscription_arn).endpoint, targets)
                records.append(self.set_subscription_attribute(op.subscription_arn, op.name, op.value, wall_ms))
                replies.append((reply, Done()))
            case GetSubscriptionAttributes():
                reply(Attributes(self.subscription_attributes(op.subscription_arn)))
            case ListSubscriptionsByTopic():
                reply(paging.subscription_page(self.list_subscriptions(), op.next_token))
            case GetTopicAttributes():
                reply(Attributes(self.get_attributes()))
            case SetTopicAttributes():
                records.append(self.set_attribute(op.name, op.value, wall_ms))
                replies.append((reply, Done()))
            case TagTopic():
                records.append(self.tag(op.tags, wall_ms))
                replies.append((reply, Done()))
            case UntagTopic():
                records.append(self.untag(op.tag_keys, wall_ms))
                replies.append((reply, Done()))
            case ListTopicTags():
                reply(Tags(dict(self.tags)))
            case AddTopicPermission():
                records.append(self.add_permission(op.label, op.account_ids, op.actions, wall_ms))
                replies.append((reply, Done()))
            case RemoveTopicPermission():
                records.append(self.remove_permission(op.label, wall_ms))
                replies.append((reply, Done()))
            case ExplainDelivery():
                reply(Explanation(self.explain(op.message, op.message_attributes, targets)))
            case Unsubscribe() | UnsubscribeByUrl():
                subscription = self.subscriptions.get(op.subscription_arn)
                if isinstance(op, UnsubscribeByUrl) and subscription is not None and subscription.protocol not in CONFIRMED_BY_TOKEN:
                    # AWS's rule: a subscription its owner confirmed by a signed Subscribe (sqs, sms,
                    # application) is deleted by a signed request only.
                    raise BrokerError(
                        "AuthorizationError", f"Unsubscribing {subscription.arn} requires a request signed by a key of this broker."
                    )
                if subscription is not None and subscription.protocol in CONFIRMED_BY_TOKEN:
                    self._notice(subscription.arn, "UnsubscribeConfirmation", cycle, wall_ms)
                record = self.unsubscribe(op.subscription_arn, wall_ms)
                if record is not None:
                    records.append(record)
                replies.append((reply, Done()))
            case DeleteTopic() | Stop():
                cycle.ended_by = request
            case _:
                raise not_an_operation("topic", op)

    def _check_dead_letter_queue(
        self, redrive_policy: str | None, endpoint: str, targets: QueueTargets, subscribing: bool = False
    ) -> None:
        """A subscription's dead-letter queue, when this broker has it, is of its endpoint's kind:
        FIFO for a FIFO queue's subscription to a FIFO topic, else standard."""
        if not redrive_policy:
            return
        try:
            arn = json.loads(redrive_policy).get("deadLetterTargetArn")
        except (ValueError, AttributeError):
            return  # subscription attribute validation refuses it, saying why
        target = targets.get(arn) if isinstance(arn, str) else None
        fifo = self.fifo and endpoint.endswith(".fifo")
        if target is not None and target.fifo != fifo:
            reason = (
                "RedrivePolicy: must use a FIFO queue as DLQ for a FIFO Subscription to a FIFO Topic."
                if fifo
                else "RedrivePolicy: must use a standard queue as DLQ for this subscription."
            )
            raise invalid_parameter(("Attributes Reason: " if subscribing else "") + reason)

    def _publish_batch(
        self, op: PublishBatch, request: Request, cycle: TopicCycle, targets: QueueTargets, now: float, wall_ms: int
    ) -> None:
        reply = request.reply
        sns_validation.validate_publish_batch(
            op.entries, fifo=self.fifo, content_based=self.attributes.get("ContentBasedDeduplication") == "true"
        )
        entry_ids: list[str] = []
        prepared: list[PreparedPublish | DuplicatePublish] = []
        refused: list[BatchFailure] = []
        for entry in op.entries:
            try:
                prepared.append(self.prepare_publish(entry, targets, now, wall_ms, request.trace_header))
            except BrokerError as error:
                refused.append(BatchFailure(entry.id, error.code, error.message, error.kind.sender_fault))
            else:
                entry_ids.append(entry.id)
        if prepared:
            cycle.publishes.append(PublishGroup(reply, entry_ids, prepared, refused))
        else:
            reply(PublishBatchResult([], refused))

    def _notice(self, arn: str, message_type: str, cycle: TopicCycle, wall_ms: int) -> None:
        """A confirmation message to send once this cycle is stored."""
        subscription = self.subscription(arn)
        policy_ = self.delivery_policy(subscription)
        message_id = self._message_ids.new()
        notice = self.messages.notice(message_type, message_id, subscription.attributes[TOKEN], arn, wall_ms, self.signature_version())
        body = notice.text_body if subscription.protocol == "email" else notice.json_body
        request = PushRequest(
            subscription.protocol, subscription.endpoint, message_type, message_id, self.arn, "", body, False, notice.subject,
            policy_.content_type,
        )
        cycle.notices.append((request, policy_))

    # --- time ---------------------------------------------------------------------------------
    def tick(self, cycle: TopicCycle, read_archive: archive_replay.ArchiveReader, targets: QueueTargets, now: float, wall_ms: int) -> None:
        """What time brings, once a cycle: expired deduplication ids dropped (about once a
        minute), the topic's deletion record, or the next batch of each running replay."""
        if now >= self._housekeeping_at:
            self._housekeeping_at = now + HOUSEKEEPING_INTERVAL_S
            closed = self._dedup.expire(now)
            if closed is not None:
                cycle.records.append(DedupWindowClosed(wall_ms, self.topic_id, self.name, closed))
        if cycle.ended_by is not None:
            if isinstance(cycle.ended_by.op, DeleteTopic):
                cycle.records.append(self.deleted_record(wall_ms))
            return
        cycle.replayed = archive_replay.next_batches(self, read_archive, targets, wall_ms)

    def wake_at(self) -> float:
        """When the shell must next tick even if no request arrives."""
        if archive_replay.active_replays(self.subscriptions):
            return -math.inf
        return self._housekeeping_at if self.fifo else math.inf

    # --- the commit ---------------------------------------------------------------------------
    def publish_records(self, cycle: TopicCycle) -> tuple[list[Record], list[QueueTarget | None]]:
        """The records of the cycle's publishes and replay batches, for the entry storage may refuse,
        and beside each the queue it delivers to (None: not a queue's message)."""
        records: list[Record] = []
        targets: list[QueueTarget | None] = []
        for target, record in cycle.replayed:
            records.append(record)
            targets.append(target)
        for group in cycle.publishes:
            for prepared in group.prepared:
                if isinstance(prepared, PreparedPublish):
                    records.append(prepared.published)
                    targets.append(None)
                    for target, delivery in prepared.deliveries:
                        records.append(delivery)
                        targets.append(target)
                    records.extend(prepared.pushes)
                    targets.extend([None] * len(prepared.pushes))
        return records, targets

    def settle(
        self, cycle: TopicCycle, stored: Sequence[Record], targets: Sequence[QueueTarget | None], error: Exception | None
    ) -> Settled:
        """A cycle's publishes as stored (or refused with `error`): the publishes' answers, what
        each queue adopts, what each delivery actor takes on. The cycle's other answers
        (`cycle.replies`) wait for its configuration records."""
        adoptions: dict[int, tuple[QueueTarget, list[AdoptedMessage]]] = {}
        pushed: dict[int, list[tuple[int, str]]] = {}
        published: list[Published] = []
        for record, target in zip(stored if error is None else (), targets):
            if type(record) is Published:
                published.append(record)
                if record.dedup_id:
                    self._dedup.stored(self._dedup.key(record.dedup_id, record.group_id), record.message_id, record.seq)
            elif target is not None and type(record) is MessageSent:
                adoptions.setdefault(target.queue_id, (target, []))[1].append(adopted(record))
                self.counters.add("sqs", DEAD_LETTERED if record.dead_letter_source_arn else DELIVERED)
            elif type(record) is PushQueued:
                pushed.setdefault(record.subscription_id, []).append((record.seq, record.message_id))
        in_order = iter(published)
        answers: list[tuple[Reply, Result]] = []
        for group in cycle.publishes:
            results = [self._publish_result(prepared, in_order, error) for prepared in group.prepared]
            answers.append((group.reply, results[0] if group.entry_ids is None else _batch_result(group, results)))
        cycle.publishes.clear()
        return Settled(answers, list(adoptions.values()), pushed)

    def _publish_result(self, prepared: PreparedPublish | DuplicatePublish, published, error: Exception | None) -> Result:
        if isinstance(prepared, DuplicatePublish):
            if self._dedup.stored_seq(prepared.dedup_key, prepared.message_id):
                return PublishedMessage(prepared.message_id)
            return failure(original_not_stored("publish"))
        if error is not None:
            record = prepared.published
            if record.dedup_id:
                self._dedup.forget(self._dedup.key(record.dedup_id, record.group_id), record.message_id)
            return failure(storage_failed(error))
        self.counters.publishes += 1
        if prepared.dropped:
            self.counters.add("sqs", DROPPED, prepared.dropped)
        return PublishedMessage(next(published).message_id, prepared.sequence_number)

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
            **({"ContentBasedDeduplication": "false"} if self.fifo else {}),  # AWS shows a FIFO topic's default
            **{name: value for name, value in self.attributes.items() if name != "Policy"},
        }

    def set_attribute(self, name: str, value: str, wall_ms: int) -> TopicAttributesChanged:
        checked = sns_validation.validate_topic_attributes({name: value}, fifo=self.fifo)
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

    @property
    def attributes(self) -> dict[str, str]:
        return self._attributes

    @attributes.setter
    def attributes(self, attributes: dict[str, str]) -> None:
        self._attributes = attributes
        self.access.update(attributes.get("Policy"))
        # Read once per change, not per publish.
        policy_text = attributes.get("ArchivePolicy")
        self.archive_days = int(str(json.loads(policy_text).get("MessageRetentionPeriod", 0))) if policy_text else 0

    def share_policy(self, slot: authorization.PolicySlot) -> None:
        """Publish the topic's parsed Policy in `slot` (its directory entry's) from now on."""
        self.access.share(slot)

    def signature_version(self) -> str:
        return self.attributes.get("SignatureVersion", "1")

    # --- subscriptions --------------------------------------------------------------------------
    def subscribe(
        self, protocol: str, endpoint: str, attributes: Mapping[str, str], wall_ms: int
    ) -> tuple[str, SubscriptionChanged | None]:
        """The subscription's ARN, and its record when it is new (an equal one already there is
        returned as it is)."""
        protocol = protocol.lower()
        sns_validation.check_endpoint(protocol, endpoint, fifo=self.fifo, push_protocols=self.options.push_protocols)
        checked = sns_validation.validate_subscription_attributes(attributes, subscribing=True)
        for existing in self.subscriptions.values():
            if existing.protocol == protocol and existing.endpoint == endpoint:
                if any(existing.attributes.get(k) != v for k, v in checked.items()):
                    raise invalid_parameter("Attributes Reason: Subscription already exists with different attributes")
                return existing.arn, None
        if len(self.subscriptions) >= SNS_MAX_SUBSCRIPTIONS_PER_TOPIC:
            raise BrokerError("SubscriptionLimitExceeded", f"A topic has at most {SNS_MAX_SUBSCRIPTIONS_PER_TOPIC} subscriptions.")
        if checked.get("ReplayPolicy"):
            checked.update(archive_replay.replay_start(checked["ReplayPolicy"], self.archive_days, wall_ms))
        number = max((s.id for s in self.subscriptions.values()), default=0) + 1
        # sqs, sms and application are confirmed at once, as on AWS (SMS recipients have not had to
        # opt in since June 2016: https://github.com/hashicorp/terraform-provider-aws/pull/1813).
        confirmed = protocol not in CONFIRMED_BY_TOKEN
        if not confirmed:
            checked[TOKEN] = secrets.token_hex(64)
        record = SubscriptionChanged(
            wall_ms, self.topic_id, self.name, number, f"{self.arn}:{random_id()}", protocol, endpoint, checked, confirmed
        )
        self.subscriptions[record.subscription_arn] = _subscription(record)
        return record.subscription_arn, record

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
        """As AWS answers: SubscriptionPrincipal (the topic owner's account here: the broker keeps no
        record of who subscribed), an EffectiveDeliveryPolicy only for the protocols a delivery
        policy governs (not sqs), and FilterPolicyScope only beside a FilterPolicy."""
        subscription = self.subscription(arn)
        shown = {k: v for k, v in subscription.attributes.items() if not k.startswith("dovecote:")}
        if "FilterPolicy" in shown:
            shown.setdefault("FilterPolicyScope", ATTRIBUTES)
        else:
            shown.pop("FilterPolicyScope", None)
        attributes = {
            "SubscriptionArn": arn,
            "TopicArn": self.arn,
            "Owner": self.account_id,
            "SubscriptionPrincipal": f"arn:aws:iam::{self.account_id}:root",
            "Protocol": subscription.protocol,
            "Endpoint": subscription.endpoint,
            "PendingConfirmation": "false" if subscription.confirmed else "true",
            "ConfirmationWasAuthenticated": "true" if subscription.confirmed else "false",
            "RawMessageDelivery": "false",
        }
        if subscription.protocol in PUSH_PROTOCOLS:
            attributes["EffectiveDeliveryPolicy"] = delivery_policy.effective_json(self.delivery_policy(subscription))
        return {**attributes, **shown}

    def set_subscription_attribute(self, arn: str, name: str, value: str, wall_ms: int) -> SubscriptionChanged:
        subscription = self.subscription(arn)
        attributes = {
            **subscription.attributes,
            **sns_validation.validate_subscription_attributes({name: value}, subscription.attributes),
        }
        if name == "ReplayPolicy":
            attributes.update(archive_replay.replay_start(value, self.archive_days, wall_ms))
        if name == "FilterPolicy" and not value:
            attributes.pop("FilterPolicy", None)
        if name == "FilterPolicyScope" and "FilterPolicy" in attributes:
            compile_policy(attributes["FilterPolicy"], value)  # the policy must suit its new scope
        return self.changed(subscription, attributes, wall_ms)

    def changed(self, subscription: Subscription, attributes: dict[str, str], wall_ms: int, confirmed: bool | None = None) -> SubscriptionChanged:
        """A subscription's new state, kept, and its record to store."""
        record = SubscriptionChanged(
            wall_ms, self.topic_id, self.name, subscription.id, subscription.arn, subscription.protocol, subscription.endpoint,
            attributes, subscription.confirmed if confirmed is None else confirmed,
        )
        self.subscriptions[subscription.arn] = _subscription(record)
        return record

    def confirm(self, token: str, wall_ms: int) -> tuple[str, SubscriptionChanged | None]:
        """The ARN of the subscription the token confirms, and its record when it was pending."""
        for subscription in self.subscriptions.values():
            if subscription.attributes.get(TOKEN) == token:
                if subscription.confirmed:
                    return subscription.arn, None
                return subscription.arn, self.changed(subscription, subscription.attributes, wall_ms, confirmed=True)
        raise invalid_parameter("Token")

    def delivery_policy(self, subscription: Subscription) -> delivery_policy.EffectivePolicy:
        if subscription.protocol in (*MOBILE_PROTOCOLS, FUNCTION_PROTOCOL):
            # AWS's own policy, not the topic's (that is for HTTP/S); the subscription's own
            # DeliveryPolicy is dovecote's addition, for a gateway that needs other retries.
            own = subscription.attributes.get("DeliveryPolicy")
            fixed = delivery_policy.AWS_MANAGED_RETRY if subscription.protocol == FUNCTION_PROTOCOL else delivery_policy.CUSTOMER_MANAGED_RETRY
            return delivery_policy.effective(None, own, fixed)
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
        self, entry: Publish | PublishEntry, targets: QueueTargets, now: float, wall_ms: int, trace_header: str = ""
    ) -> PreparedPublish | DuplicatePublish:
        """Validate a publish (a Publish, or one entry of a batch) and build its records; nothing
        changes until it is settled, but for the deduplication id being remembered. trace_header:
        the request's X-Amzn-Trace-Id, which each SQS delivery carries as its AWSTraceHeader."""
        message, subject, group_id = entry.message, entry.subject, entry.message_group_id
        payloads = sns_validation.validate_publish(message, subject, entry.message_structure, entry.message_attributes)
        attributes = to_stored(entry.message_attributes)
        dedup_id = sns_validation.fifo_publish_parameters(
            self.fifo, self.attributes.get("ContentBasedDeduplication") == "true", message, group_id, entry.message_deduplication_id
        )
        if dedup_id:
            key = self._dedup.key(dedup_id, group_id or "")
            seen = self._dedup.seen(key, now)
            if seen is not None:
                return DuplicatePublish(seen.message_id, key)
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
        system_attributes = {"AWSTraceHeader": MessageAttribute("String", trace_header)} if trace_header else {}
        dropped = 0
        checked = self.options.check_deliveries  # else every queue takes every delivery (authentication off)
        for subscription in self.subscriptions.values():
            if not subscription.confirmed:
                continue
            push = subscription.protocol in PUSH_PROTOCOLS
            target = None if push else targets.get(subscription.endpoint)
            payload = payloads.get(mobile.payload_key(subscription.protocol, subscription.endpoint), payloads["default"])
            if subscription.filter is not None:
                view = views.get(payload)
                if view is None:
                    view = views[payload] = MessageView(attributes, payload)
                if subscription.filter.first_failure(view) is not None:
                    continue
            dead_letter = False
            if target is None and not push:
                # Its queue does not exist (any more): as on AWS, the message goes to the
                # subscription's dead-letter queue if it has one here, else it is dropped (counted).
                target, dead_letter = self._dead_letter_queue(subscription, targets), True
                if target is None:
                    dropped += 1
                    continue
            elif checked and target is not None and not self.may_deliver(target):
                # The queue's policy refuses this topic: SNS does not retry that (a client-side
                # error); the message goes to the subscription's dead-letter queue if it has one
                # that lets the topic in, else it is dropped (and counted as dropped).
                target, dead_letter = self._dead_letter_queue(subscription, targets), True
                if target is None:
                    dropped += 1
                    continue
            envelope = None
            # email and mobile get the text alone; a function always SNS's event, raw delivery or not
            if (not subscription.raw or subscription.protocol == FUNCTION_PROTOCOL) and subscription.protocol not in ("email", *MOBILE_PROTOCOLS):
                signed = push or self.options.sign_sqs  # HTTP/S and email-json messages are always signed
                envelope = envelopes.get((payload, signed))
                if envelope is None:
                    envelope = envelopes[(payload, signed)] = self.messages.envelope(
                        message_id, payload, subject, attributes, wall_ms, sequence_number, self.signature_version(), signed=signed
                    )
            if target is not None:
                deliveries.append(
                    (target, self.delivery(
                        subscription, target, payload, attributes, envelope, wall_ms, group_id or "", dedup_id,
                        dead_letter_source_arn=subscription.arn if dead_letter else "", system_attributes=system_attributes,
                    ))
                )
                if dead_letter:
                    continue
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
            attributes=attributes,
            message_structure=entry.message_structure or "",
            group_id=group_id or "",
            dedup_id=dedup_id,
            delivered_to=delivered_to,
            archive_until_ms=wall_ms + self.archive_days * 86_400_000 if self.archive_days else 0,
        )
        if dedup_id:
            self._dedup.remember(self._dedup.key(dedup_id, group_id or ""), message_id, now)
        return PreparedPublish(published, deliveries, sequence_number, pushes, dropped)

    def may_deliver(self, target: QueueTarget) -> bool:
        """Whether this topic may deliver into the queue: always while policies are not enforced
        (authentication off); else only if the queue's Policy lets the SNS service send to it for
        this topic (aws:SourceArn, aws:SourceAccount), as AWS requires. Decided again only when the
        queue's policy changes."""
        if not self.options.check_deliveries:
            return True
        queue_policy = target.policy.policy
        known = self._delivery_grants.get(target.arn)
        if known is not None and known[0] is queue_policy:
            return known[1]
        if len(self._delivery_grants) > 2 * len(self.subscriptions) + 16:
            self._delivery_grants.clear()  # queues unsubscribed since
        decision = authorization.decide(
            SNS, "sqs:SendMessage", target.arn, target.arn.split(":")[4], queue_policy, self._delivery_context
        )
        allowed = decision is authorization.Decision.ALLOWED
        self._delivery_grants[target.arn] = (queue_policy, allowed)
        return allowed

    def _dead_letter_queue(self, subscription: Subscription, targets: QueueTargets) -> QueueTarget | None:
        """The subscription's dead-letter queue, if it has one here that lets this topic in."""
        redrive = subscription.attributes.get("RedrivePolicy")
        arn = json.loads(redrive).get("deadLetterTargetArn") if redrive else None
        target = targets.get(arn) if isinstance(arn, str) else None
        return target if target is not None and self.may_deliver(target) else None

    def delivery(
        self,
        subscription: Subscription,
        target: QueueTarget,
        payload: str,
        attributes: Mapping[str, MessageAttribute],
        envelope: tuple[str, str] | None,
        at_ms: int,
        group_id: str,
        dedup_id: str,
        dead_letter_source_arn: str = "",
        system_attributes: Mapping[str, MessageAttribute] | None = None,
    ) -> MessageSent:
        """One SQS delivery: the raw payload with its attributes, or the envelope around the
        subscription's ARN; into the subscription's dead-letter queue when dead_letter_source_arn
        (the subscription's ARN) is given."""
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
            system_attributes=dict(system_attributes or {}),
            group_id=group_id,
            dedup_id=dedup_id if target.fifo else "",
            dead_letter_source_arn=dead_letter_source_arn,
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
                f"link below to unsubscribe:\n{self.messages.unsubscribe_url(subscription.arn)}\n"
            )
        else:
            body = payload
        return PushQueued(
            at_ms, self.topic_id, self.name, subscription.id, 0, message_id, body, subject or "",
            dict(attributes) if subscription.raw else {},
        )

    def explain(self, message: str, attributes: Mapping[str, AnyAttribute], targets: QueueTargets) -> list[Verdict]:
        verdicts = []
        for subscription in self.subscriptions.values():
            reason = ""
            if not subscription.confirmed:
                reason = "the subscription is pending confirmation"
            elif subscription.protocol not in PUSH_PROTOCOLS and (target := targets.get(subscription.endpoint)) is None:
                reason = f"the queue {subscription.endpoint} does not exist"
            elif subscription.protocol not in PUSH_PROTOCOLS and not self.may_deliver(target):
                reason = f"the policy of the queue {subscription.endpoint} does not let this topic send to it"
            elif subscription.filter is not None:
                reason = explain(subscription.filter, attributes, message) or ""
            verdicts.append(Verdict(subscription.arn, subscription.protocol, subscription.endpoint, not reason, reason))
        return verdicts


def _batch_result(group: PublishGroup, results: list[Result]) -> PublishBatchResult:
    successful: list[PublishedEntry] = []
    refused = list(group.refused)
    for entry_id, result in zip(group.entry_ids or [], results):
        if isinstance(result, PublishedMessage):
            successful.append(PublishedEntry(entry_id, result.message_id, result.sequence_number))
        else:
            refused.append(BatchFailure(entry_id, result.code, result.message, False))  # type: ignore[attr-defined]
    return PublishBatchResult(successful, refused)


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

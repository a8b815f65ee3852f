"""How each log record changes the state tables: a pure function, no I/O.

Besides the log, the store keeps tables of live state (queues, messages, deliveries) updated in the
same transaction as the log append. They are a checkpoint that is always current, so recovery reads
live state only and never replays history: start-up time grows with live data, not with the log.
The log itself is then pure history, trimmed by the retention window alone.
"""

from __future__ import annotations

from typing import NamedTuple

from . import keys
from .framing import frame
from .records import (
    DataKeyCreated,
    DataKeyRetired,
    FunctionChanged,
    FunctionCodeStored,
    FunctionDeleted,
    FunctionEventQueued,
    FunctionInvoked,
    DataKeyRewrapped,
    DedupEntry,
    DedupWindowClosed,
    EventSourceMappingChanged,
    EventSourceMappingDeleted,
    MessageDeleted,
    MessageForwarded,
    MessageReceived,
    MessageSent,
    MoveTaskChanged,
    PlatformApplicationChanged,
    PlatformApplicationDeleted,
    PlatformEndpointChanged,
    PlatformEndpointDeleted,
    SMSAttributesChanged,
    SMSSandboxNumberChanged,
    SMSSandboxNumberDeleted,
    Published,
    PushAttempted,
    PushDone,
    PushQueued,
    SubscriptionChanged,
    SubscriptionDeleted,
    TopicAttributesChanged,
    TopicCreated,
    TopicDeleted,
    QueueAttributesChanged,
    QueueCreated,
    QueueDeleted,
    QueuePurged,
    Record,
    VisibilityChanged,
    encode_dedup_entry,
)

LOG = "log"
QUEUES = "queues"
MESSAGES = "messages"
DELIVERIES = "deliveries"
META = "meta"
DEDUP = "dedup"  # FIFO deduplication ids of the last 5 minutes, by (queue_id, seq)
MOVE_TASKS = "move_tasks"  # message move tasks, by (queue_id, started_ms)
TOPICS = "topics"
SUBSCRIPTIONS = "subscriptions"  # by (topic_id, subscription_id)
ARCHIVE = "archive"  # archived publishes of topics with an ArchivePolicy, by (topic_id, seq)
PUSHES = "pushes"  # pending HTTP/S and email deliveries (PushQueued), by (topic_id, subscription_id, seq)
PUSH_ATTEMPTS = "push_attempts"  # the last failed attempt of a pending push (PushAttempted), same keys
DATA_KEYS = "data_keys"  # encryption at rest: each data key, wrapped (DataKeyCreated, DataKeyRewrapped), by key id (format 2)
PLATFORM_APPLICATIONS = "platform_applications"  # SNS platform applications, by ARN (format 3)
PLATFORM_ENDPOINTS = "platform_endpoints"  # their endpoints, by ARN (format 3)
SMS_ATTRIBUTES = "sms_attributes"  # the account's SMS attributes, under SMS_ATTRIBUTES_KEY (format 3)
SMS_ATTRIBUTES_KEY = b"account"
SMS_SANDBOX = "sms_sandbox"  # the SMS sandbox's phone numbers, by number (format 3)
FUNCTIONS = "functions"  # Lambda functions' configurations (FunctionChanged), by function_key (format 4)
FUNCTION_CODE = "function_code"  # their zips (FunctionCodeStored), same keys (format 4)
EVENT_SOURCE_MAPPINGS = "event_source_mappings"  # by UUID (format 4)
FUNCTION_EVENTS = "function_events"  # pending asynchronous invocations (FunctionEventQueued), by function_event_key (format 4)
DIRECT_PUSHES = 0  # the topic id of PushQueued records published straight to a platform endpoint (ids start at 1)
TABLES = (
    LOG, QUEUES, MESSAGES, DELIVERIES, META, DEDUP, MOVE_TASKS, TOPICS, SUBSCRIPTIONS, ARCHIVE, PUSHES, PUSH_ATTEMPTS, DATA_KEYS,
    PLATFORM_APPLICATIONS, PLATFORM_ENDPOINTS, SMS_ATTRIBUTES, SMS_SANDBOX, FUNCTIONS, FUNCTION_CODE, FUNCTION_EVENTS,
    EVENT_SOURCE_MAPPINGS,
)
QUEUE_TABLES = (MESSAGES, DELIVERIES, DEDUP, MOVE_TASKS)  # keyed (queue_id, ...)

NEXT_QUEUE_ID = b"next_queue_id"  # queues and topics draw their ids from this one sequence
FORMAT_VERSION_KEY = b"format_version"  # the data directory's format (store.FORMAT_VERSION)


class Put(NamedTuple):
    table: str
    key: bytes
    value: bytes


class Delete(NamedTuple):
    table: str
    key: bytes


class DeleteRange(NamedTuple):
    table: str
    first_key: bytes
    last_key: bytes  # inclusive


Change = Put | Delete | DeleteRange


def table_changes(record: Record, framed: bytes) -> list[Change]:
    """The state-table changes for one record; `framed` is the record as stored in the log, which
    is also what the state tables hold."""
    match record:
        case MessageSent(queue_id=q, seq=seq, dedup_id=""):
            return [Put(MESSAGES, keys.message_key(q, seq), framed)]
        case MessageSent(queue_id=q, seq=seq):
            key = keys.message_key(q, seq)
            entry = DedupEntry(record.at_ms, record.dedup_id, record.group_id, record.message_id)
            return [Put(MESSAGES, key, framed), Put(DEDUP, key, frame(encode_dedup_entry(entry)))]
        case MessageReceived(queue_id=q, seq=seq) | VisibilityChanged(queue_id=q, seq=seq):
            return [Put(DELIVERIES, keys.message_key(q, seq), framed)]
        case MessageDeleted(queue_id=q, seq=seq):
            key = keys.message_key(q, seq)
            return [Delete(MESSAGES, key), Delete(DELIVERIES, key)]
        case QueueCreated(queue_id=q):
            return [
                Put(QUEUES, keys.queue_key(q), framed),
                Put(META, NEXT_QUEUE_ID, frame(keys.queue_key(q + 1))),
            ]
        case QueueAttributesChanged(queue_id=q):
            return [Put(QUEUES, keys.queue_key(q), framed)]
        case QueuePurged(queue_id=q, through_seq=through):
            first, last = keys.queue_message_range(q, through)
            # the deduplication ids go too: after a purge, AWS takes a resent id as a new message
            return [DeleteRange(MESSAGES, first, last), DeleteRange(DELIVERIES, first, last), DeleteRange(DEDUP, first, last)]
        case DedupWindowClosed(owner_id=owner, through_seq=through):
            return [DeleteRange(DEDUP, *keys.queue_message_range(owner, through))]
        case Published(topic_id=t, seq=seq):
            changes: list[Change] = []
            if record.dedup_id:
                entry = DedupEntry(record.at_ms, record.dedup_id, record.group_id, record.message_id)
                changes.append(Put(DEDUP, keys.message_key(t, seq), frame(encode_dedup_entry(entry))))
            if record.archive_until_ms:
                changes.append(Put(ARCHIVE, keys.message_key(t, seq), framed))
            return changes
        case TopicCreated(topic_id=t):
            return [Put(TOPICS, keys.queue_key(t), framed), Put(META, NEXT_QUEUE_ID, frame(keys.queue_key(t + 1)))]
        case TopicAttributesChanged(topic_id=t):
            return [Put(TOPICS, keys.queue_key(t), framed)]
        case TopicDeleted(topic_id=t):
            first, last = keys.queue_message_range(t)
            pushes = keys.push_range(t)
            return [
                Delete(TOPICS, keys.queue_key(t)),
                DeleteRange(SUBSCRIPTIONS, first, last),
                DeleteRange(DEDUP, first, last),
                DeleteRange(PUSHES, *pushes),
                DeleteRange(PUSH_ATTEMPTS, *pushes),
            ]
        case SubscriptionChanged(topic_id=t, subscription_id=sub):
            return [Put(SUBSCRIPTIONS, keys.message_key(t, sub), framed)]
        case SubscriptionDeleted(topic_id=t, subscription_id=sub):
            pushes = keys.push_range(t, sub)
            return [Delete(SUBSCRIPTIONS, keys.message_key(t, sub)), DeleteRange(PUSHES, *pushes), DeleteRange(PUSH_ATTEMPTS, *pushes)]
        case PushQueued(topic_id=t, subscription_id=sub, seq=seq):
            return [Put(PUSHES, keys.push_key(t, sub, seq), framed)]
        case PushAttempted(topic_id=t, subscription_id=sub, seq=seq):
            return [Put(PUSH_ATTEMPTS, keys.push_key(t, sub, seq), framed)]
        case PushDone(topic_id=t, subscription_id=sub, seq=seq):
            key = keys.push_key(t, sub, seq)
            # A push that succeeded at its first attempt never had a PushAttempted row.
            return [Delete(PUSHES, key), Delete(PUSH_ATTEMPTS, key)] if record.attempts > 1 else [Delete(PUSHES, key)]
        case MoveTaskChanged(queue_id=q, started_ms=started):
            return [Put(MOVE_TASKS, keys.message_key(q, started), framed)]
        case DataKeyCreated(key_id=k) | DataKeyRewrapped(key_id=k):
            return [Put(DATA_KEYS, keys.queue_key(k), framed)]
        case DataKeyRetired(key_id=k):
            return [Delete(DATA_KEYS, keys.queue_key(k))]
        case MessageForwarded():
            return []
        case EventSourceMappingChanged(uuid=mapping):
            return [Put(EVENT_SOURCE_MAPPINGS, mapping.encode(), framed)]
        case EventSourceMappingDeleted(uuid=mapping):
            return [Delete(EVENT_SOURCE_MAPPINGS, mapping.encode())]
        case PlatformApplicationChanged(arn=arn):
            return [Put(PLATFORM_APPLICATIONS, arn.encode(), framed)]
        case PlatformApplicationDeleted(arn=arn):
            return [Delete(PLATFORM_APPLICATIONS, arn.encode())]
        case PlatformEndpointChanged(arn=arn):
            return [Put(PLATFORM_ENDPOINTS, arn.encode(), framed)]
        case SMSAttributesChanged():
            return [Put(SMS_ATTRIBUTES, SMS_ATTRIBUTES_KEY, framed)]
        case SMSSandboxNumberChanged(phone_number=number):
            return [Put(SMS_SANDBOX, number.encode(), framed)]
        case SMSSandboxNumberDeleted(phone_number=number):
            return [Delete(SMS_SANDBOX, number.encode())]
        case PlatformEndpointDeleted(arn=arn, endpoint_id=endpoint_id):
            pushes = keys.push_range(DIRECT_PUSHES, endpoint_id)
            return [Delete(PLATFORM_ENDPOINTS, arn.encode()), DeleteRange(PUSHES, *pushes), DeleteRange(PUSH_ATTEMPTS, *pushes)]
        case FunctionChanged(region=region, name=name):
            return [Put(FUNCTIONS, keys.function_key(region, name), framed)]
        case FunctionCodeStored(region=region, name=name):
            return [Put(FUNCTION_CODE, keys.function_key(region, name), framed)]
        case FunctionDeleted(region=region, name=name):
            key = keys.function_key(region, name)
            return [Delete(FUNCTIONS, key), Delete(FUNCTION_CODE, key), DeleteRange(FUNCTION_EVENTS, *keys.function_event_range(region, name))]
        case FunctionEventQueued(region=region, name=name, request_id=request_id):
            return [Put(FUNCTION_EVENTS, keys.function_event_key(region, name, record.at_ms, request_id), framed)]
        case FunctionInvoked(region=region, name=name, request_id=request_id, event_queued_ms=queued_ms):
            return [Delete(FUNCTION_EVENTS, keys.function_event_key(region, name, queued_ms, request_id))] if queued_ms else []
        case QueueDeleted(queue_id=q):
            first, last = keys.queue_message_range(q)
            return [Delete(QUEUES, keys.queue_key(q))] + [DeleteRange(t, first, last) for t in QUEUE_TABLES]
    raise TypeError(f"no table changes defined for {type(record).__name__}")

"""The records of the append-only log: one tagged union of msgspec structs.

Every record is self-describing: it names the queue (by id and name), the message (by sequence
number and MessageId) and carries the wall-clock time it happened, so the log alone answers
"what happened to X". Formats evolve only by appending fields with defaults.
"""

from __future__ import annotations

from typing import Any

import msgspec


class MessageAttribute(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """An SQS/SNS message attribute value. data_type is String, Number or Binary, optionally
    followed by a custom suffix (`Number.float`)."""

    data_type: str
    string_value: str | None = None
    binary_value: bytes | None = None


class Sealed(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A record's content encrypted at rest (storage/sse.py): AES-256-GCM under the data key whose
    DataKeyCreated record has LSN key_id. The record's own fields that it replaces are left empty."""

    key_id: int
    nonce: bytes  # 12 bytes
    ciphertext: bytes  # a SealedContent, msgpack-encoded, and the 16-byte tag


class SealedContent(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """What a Sealed holds: a MessageSent's body, attributes and system attributes; a Published's
    message (as body), subject and attributes; a PushQueued's body, subject and attributes."""

    body: str
    attributes: dict[str, MessageAttribute] = {}
    system_attributes: dict[str, MessageAttribute] = {}
    subject: str = ""


# A wall time before this was read off a clock that had not been set yet (a device that booted in
# 1970); 2020-01-01T00:00:00Z, before any broker of this kind ran. actors/stored_time.py explains.
TRUSTED_SINCE_MS = 1_577_836_800_000


class Record(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A stored record. Each kind names its tag explicitly (never taken from the class name), and
    fields are stored by position: a new field goes last, with a default."""

    at_ms: int  # wall-clock milliseconds when the change happened


class QueueCreated(Record, tag="QueueCreated"):
    queue_id: int
    queue: str
    attributes: dict[str, str]
    region: str = ""  # the AWS region whose namespace holds the queue ("": the broker's default)
    tags: dict[str, str] = {}


class QueueAttributesChanged(Record, tag="QueueAttributesChanged"):
    """The queue's whole configuration after a change of its attributes, tags or permissions."""

    queue_id: int
    queue: str
    attributes: dict[str, str]
    region: str = ""
    tags: dict[str, str] = {}


class QueueDeleted(Record, tag="QueueDeleted"):
    queue_id: int
    queue: str


class QueuePurged(Record, tag="QueuePurged"):
    queue_id: int
    queue: str
    through_seq: int  # every message with seq <= through_seq is gone


class MessageSent(Record, tag="MessageSent"):
    queue_id: int
    queue: str
    seq: int
    delay_seconds: int
    message_id: str
    sender_id: str  # "": the broker's own account
    body: str
    attributes: dict[str, MessageAttribute]
    system_attributes: dict[str, MessageAttribute] = {}  # AWSTraceHeader
    group_id: str = ""  # MessageGroupId ("": none)
    dedup_id: str = ""  # FIFO: MessageDeduplicationId (given, or the body's SHA-256)
    first_sent_ms: int = 0  # a moved message: its SentTimestamp in the queue it came from
    dead_letter_source_arn: str = ""  # a dead-lettered message: the queue it came from
    sealed: Sealed | None = None  # encrypted at rest: body, attributes and system_attributes are in here (format 2)


class MessageSentHead(msgspec.Struct, tag="MessageSent", array_like=True, gc=False, frozen=True):
    """The leading fields of a stored MessageSent: all that recovery needs, decoded without
    the body and attributes."""

    at_ms: int
    queue_id: int
    queue: str
    seq: int
    delay_seconds: int


class DeliveryState(Record):
    """A message's delivery state after a change: what the deliveries table keeps per message."""

    queue_id: int
    queue: str
    seq: int
    message_id: str
    receive_count: int
    visible_at_ms: int
    first_receive_ms: int


class MessageReceived(DeliveryState, tag="MessageReceived"):
    pass


class VisibilityChanged(DeliveryState, tag="VisibilityChanged"):
    pass


class MessageDeleted(Record, tag="MessageDeleted"):
    queue_id: int
    queue: str
    seq: int
    message_id: str
    reason: str  # "deleted" (or "deleted with the handle of receive N", an earlier one), "expired" or "moved" (the same commit stores it in another queue)


class DedupWindowClosed(Record, tag="DedupWindowClosed"):
    """A FIFO queue's or topic's deduplication window has passed every message with seq <= through_seq."""

    owner_id: int  # the queue's or the topic's id
    owner: str
    through_seq: int


class MoveTaskChanged(Record, tag="MoveTaskChanged"):
    """A message move task's state after a change (started, progress, cancelled, finished)."""

    queue_id: int  # the task's source queue
    queue: str
    started_ms: int  # with queue_id, names the task
    status: str  # RUNNING, CANCELLING, CANCELLED, COMPLETED or FAILED
    through_seq: int  # the task moves the messages that were in the queue when it started
    destination_arn: str  # "": each message back to the queue it was dead-lettered from
    max_per_second: int  # 0: unthrottled
    to_move: int
    moved: int
    failure_reason: str = ""


class TopicCreated(Record, tag="TopicCreated"):
    topic_id: int  # from the same sequence as queue ids
    topic: str
    attributes: dict[str, str]
    region: str = ""
    tags: dict[str, str] = {}


class TopicAttributesChanged(Record, tag="TopicAttributesChanged"):
    """The topic's whole configuration after a change of its attributes, tags or permissions."""

    topic_id: int
    topic: str
    attributes: dict[str, str]
    region: str = ""
    tags: dict[str, str] = {}


class TopicDeleted(Record, tag="TopicDeleted"):
    topic_id: int
    topic: str


class SubscriptionChanged(Record, tag="SubscriptionChanged"):
    """A subscription's whole state after it was made or changed."""

    topic_id: int
    topic: str
    subscription_id: int  # per topic
    subscription_arn: str
    protocol: str
    endpoint: str
    attributes: dict[str, str]
    confirmed: bool


class SubscriptionDeleted(Record, tag="SubscriptionDeleted"):
    topic_id: int
    topic: str
    subscription_id: int
    subscription_arn: str


class Published(Record, tag="Published"):
    """A message published to a topic. Its deliveries to SQS subscriptions are MessageSent records
    in the same commit; `delivered_to` names those subscriptions."""

    topic_id: int
    topic: str
    seq: int  # the record's LSN, stamped by the store: a FIFO topic's SequenceNumber
    message_id: str
    message: str
    subject: str
    attributes: dict[str, MessageAttribute]
    message_structure: str = ""  # "json": `message` holds a payload per protocol
    group_id: str = ""
    dedup_id: str = ""
    delivered_to: list[str] = []  # subscription ARNs
    archive_until_ms: int = 0  # kept in the topic's archive until then (ArchivePolicy); 0: not archived
    sealed: Sealed | None = None  # encrypted at rest: message, subject and attributes are in here (format 2)


class MessageForwarded(Record, tag="MessageForwarded"):
    """A shovel carried a message between a local queue and a remote queue or topic, and the side it
    went to confirmed it (written before the side it came from is told to forget it). In the log
    only: no table keeps it."""

    shovel: str
    queue: str  # the local queue
    message_id: str  # the local message's id (up: the one sent; down: the one stored)
    remote: str  # the remote queue's URL or topic's ARN
    remote_message_id: str
    direction: str  # "up" (local to remote) or "down"


class PlatformApplicationChanged(Record, tag="PlatformApplicationChanged"):
    """A platform application's whole state after it was made or changed (format 3). Its
    credentials are not among the attributes: the operator's sink holds its own."""

    arn: str
    attributes: dict[str, str]


class PlatformApplicationDeleted(Record, tag="PlatformApplicationDeleted"):
    """A platform application and every endpoint of it deleted (format 3)."""

    arn: str


class PlatformEndpointChanged(Record, tag="PlatformEndpointChanged"):
    """A platform endpoint's whole state after it was made or changed (format 3): its attributes
    hold its Token, Enabled and CustomUserData. Publishes straight to it are PushQueued records of
    topic id DIRECT_PUSHES (tables.py) and subscription id endpoint_id."""

    arn: str
    application_arn: str
    endpoint_id: int
    attributes: dict[str, str]


class PlatformEndpointDeleted(Record, tag="PlatformEndpointDeleted"):
    """A platform endpoint deleted, with the publishes still pending for it (format 3). Deleting an
    application stores one for each of its endpoints first."""

    arn: str
    application_arn: str
    endpoint_id: int


class SMSAttributesChanged(Record, tag="SMSAttributesChanged"):
    """The account's SMS attributes (SetSMSAttributes), all of them, after a change (format 3)."""

    attributes: dict[str, str]


class SMSSandboxNumberChanged(Record, tag="SMSSandboxNumberChanged"):
    """A phone number of the SMS sandbox added (Pending, with the one-time password texted to it),
    texted a new one, or verified (format 3)."""

    phone_number: str  # E.164, "+" and digits
    status: str  # Pending or Verified
    one_time_password: str


class SMSSandboxNumberDeleted(Record, tag="SMSSandboxNumberDeleted"):
    """A phone number taken out of the SMS sandbox (format 3)."""

    phone_number: str


class PushQueued(Record, tag="PushQueued"):
    """A delivery a topic owes an HTTP/S or email subscription, stored with its publish. It stays
    pending (state table `pushes`) until a PushDone."""

    topic_id: int
    topic: str
    subscription_id: int
    seq: int  # the record's LSN, stamped by the store
    message_id: str  # the publish's MessageId
    body: str  # what is sent: the envelope, or the raw message (RawMessageDelivery)
    subject: str = ""  # email: the mail's subject
    attributes: dict[str, MessageAttribute] = {}  # raw delivery: they go on to a dead-letter queue
    sealed: Sealed | None = None  # encrypted at rest: body, subject and attributes are in here (format 2)


class PushQueuedHead(msgspec.Struct, tag="PushQueued", array_like=True, gc=False, frozen=True):
    """The leading fields of a stored PushQueued: what recovery needs, without the body."""

    at_ms: int
    topic_id: int
    topic: str
    subscription_id: int
    seq: int
    message_id: str


class PushAttempted(Record, tag="PushAttempted"):
    """A failed attempt at a pending push, and when the next one is due."""

    topic_id: int
    topic: str
    subscription_id: int
    seq: int  # the PushQueued's
    message_id: str
    attempt: int  # 1 for the first attempt
    outcome: str  # "HTTP 500", "timeout", "unreachable: ..." (no connection could be made)
    retry_at_ms: int  # wall-clock time of the next attempt


class PushDone(Record, tag="PushDone"):
    """A pending push ended: "delivered", "dead-lettered" (the same commit stores it in the
    subscription's dead-letter queue) or "dropped" (its delivery policy gave up; "dropped: why"
    when the dead-letter queue refused it or the subscription had too many pending)."""

    topic_id: int
    topic: str
    subscription_id: int
    seq: int
    message_id: str
    attempts: int
    outcome: str


class FunctionChanged(Record, tag="FunctionChanged"):
    """A Lambda function's whole configuration after it was made or changed (format 4). Its code
    is a FunctionCodeStored of the same code_sha256 (or a directory of the broker's machine,
    code_path, run where it is)."""

    region: str  # "" for the broker's default region
    name: str
    runtime: str
    handler: str
    role: str
    description: str
    timeout_s: int
    memory_mb: int
    environment: dict[str, str]
    reserved_concurrency: int  # -1: none reserved (the broker's per-function limit applies)
    code_sha256: str  # base64, as Lambda shows it
    code_size: int
    code_path: str  # the local-path extension: a directory the function runs in ("" for a zip)
    revision_id: str


class FunctionCodeStored(Record, tag="FunctionCodeStored"):
    """A function's deployment package, a zip (format 4); replaced by the next one."""

    region: str
    name: str
    code_sha256: str
    zip: bytes


class FunctionDeleted(Record, tag="FunctionDeleted"):
    """A function and its code deleted (format 4)."""

    region: str
    name: str


class FunctionEventQueued(Record, tag="FunctionEventQueued"):
    """An asynchronous invocation (InvocationType Event) accepted, stored before its 202 (format 4):
    it is pending (table `function_events`) until a FunctionInvoked with its queued_ms ends it."""

    region: str
    name: str
    request_id: str
    payload: bytes
    message_ids: list[str] = []


class FunctionInvoked(Record, tag="FunctionInvoked"):
    """One invocation of a function and its outcome (format 4; in the log only): at_ms is when it
    started. outcome: "ok", "Unhandled" or "Handled" (X-Amz-Function-Error), error_type the
    errorType of a failure ("Task timed out", "Runtime.ExitError" ...)."""

    region: str
    name: str
    request_id: str
    invocation_type: str  # RequestResponse or Event
    outcome: str
    error_type: str
    duration_ms: int
    message_ids: list[str] = []  # the queue messages or publishes it carried (event source mappings, SNS)
    event_queued_ms: int = 0  # an asynchronous invocation's last attempt: its FunctionEventQueued's at_ms (0: none)


class EventSourceMappingChanged(Record, tag="EventSourceMappingChanged"):
    """An event source mapping's whole configuration after it was made or changed (format 4): the
    queue a function is fed from, and how (actors/esm_core.py)."""

    uuid: str
    function_arn: str
    queue_arn: str
    batch_size: int
    batching_window_s: int
    enabled: bool
    report_item_failures: bool  # FunctionResponseTypes ReportBatchItemFailures
    maximum_concurrency: int  # ScalingConfig.MaximumConcurrency; 0: not set
    filter_patterns: list[str] = []  # FilterCriteria's patterns


class EventSourceMappingDeleted(Record, tag="EventSourceMappingDeleted"):
    uuid: str
    function_arn: str
    queue_arn: str


class DataKeyState(Record):
    """A data key of encryption at rest, wrapped (AES-256-GCM) by a master key of the operator's
    key file, named by its fingerprint; the DATA_KEYS table keeps the latest state of each. The key
    is named by its id: the LSN of its DataKeyCreated record."""

    key_id: int
    alias: str  # the KmsMasterKeyId it serves, or SSE-SQS
    created_ms: int  # it is replaced once its owners' KmsDataKeyReusePeriodSeconds has passed since
    master_key: str  # the fingerprint of the master key that wraps it
    wrapped: bytes  # nonce, ciphertext and tag


class DataKeyCreated(DataKeyState, tag="DataKeyCreated"):
    pass


class DataKeyRewrapped(DataKeyState, tag="DataKeyRewrapped"):
    """The same data key, wrapped by another master key (the master key was rotated)."""


class DataKeyRetired(Record, tag="DataKeyRetired"):
    """Nothing that a data key encrypted is stored any more (not in the log either): it is forgotten."""

    key_id: int
    alias: str


AnyRecord = (
    QueueCreated
    | QueueAttributesChanged
    | QueueDeleted
    | QueuePurged
    | MessageSent
    | MessageReceived
    | VisibilityChanged
    | MessageDeleted
    | DedupWindowClosed
    | MoveTaskChanged
    | TopicCreated
    | TopicAttributesChanged
    | TopicDeleted
    | SubscriptionChanged
    | SubscriptionDeleted
    | Published
    | PushQueued
    | PushAttempted
    | PushDone
    | DataKeyCreated
    | DataKeyRewrapped
    | DataKeyRetired
    | MessageForwarded
    | PlatformApplicationChanged
    | PlatformApplicationDeleted
    | PlatformEndpointChanged
    | PlatformEndpointDeleted
    | SMSAttributesChanged
    | SMSSandboxNumberChanged
    | SMSSandboxNumberDeleted
    | FunctionChanged
    | FunctionCodeStored
    | FunctionDeleted
    | FunctionEventQueued
    | FunctionInvoked
    | EventSourceMappingChanged
    | EventSourceMappingDeleted
)
QueueRow = QueueCreated | QueueAttributesChanged
TopicRow = TopicCreated | TopicAttributesChanged
DeliveryRow = MessageReceived | VisibilityChanged
DataKeyRow = DataKeyCreated | DataKeyRewrapped

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyRecord)
_head_decoder = msgspec.msgpack.Decoder(MessageSentHead)
_push_head_decoder = msgspec.msgpack.Decoder(PushQueuedHead)


class DedupEntry(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A FIFO send's deduplication key as the dedup table keeps it, beside the message's seq."""

    at_ms: int
    dedup_id: str
    group_id: str
    message_id: str


_dedup_decoder = msgspec.msgpack.Decoder(DedupEntry)


def encode_record(record: Record) -> bytes:
    return _encoder.encode(record)


def _decode(decoder: msgspec.msgpack.Decoder, payload: bytes | memoryview) -> Any:
    """msgspec recurses once per level of nesting and raises RecursionError at Python's limit,
    wherever the stack stands: a value nested that deep is as undecodable as any other."""
    try:
        return decoder.decode(payload)
    except RecursionError:
        raise msgspec.DecodeError("nested too deep to be a record") from None


def decode_record(payload: bytes | memoryview) -> AnyRecord:
    """Raises msgspec.DecodeError (or ValidationError, UnicodeDecodeError) on a payload that is not a record."""
    return _decode(_decoder, payload)


def decode_message_head(payload: bytes | memoryview) -> MessageSentHead:
    """Raises msgspec.DecodeError (or ValidationError) on a payload that is not a MessageSent."""
    return _decode(_head_decoder, payload)


def decode_push_head(payload: bytes | memoryview) -> PushQueuedHead:
    """Raises msgspec.DecodeError (or ValidationError) on a payload that is not a PushQueued."""
    return _decode(_push_head_decoder, payload)


_content_decoder = msgspec.msgpack.Decoder(SealedContent)


def decode_sealed_content(payload: bytes) -> SealedContent:
    """Raises msgspec.DecodeError (or ValidationError, UnicodeDecodeError) on a payload that is not one."""
    return _decode(_content_decoder, payload)


def encode_dedup_entry(entry: DedupEntry) -> bytes:
    return _encoder.encode(entry)


def decode_dedup_entry(payload: bytes | memoryview) -> DedupEntry:
    return _decode(_dedup_decoder, payload)

"""Pure SQS validation: no I/O, no clock. Each check raises BrokerError with the code
and wording AWS uses."""

from __future__ import annotations

import decimal
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from . import authorization
from .attributes import AnyAttribute
from .errors import (
    BrokerError,
    batch_ids_not_distinct,
    batch_too_long,
    empty_batch,
    invalid,
    invalid_character,
    message_too_long,
)
from .limits import (
    SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_DATA_KEY_REUSE_S,
    SQS_MAX_DELAY_S,
    SQS_MAX_MESSAGE_ATTRIBUTES,
    SQS_MAX_MESSAGE_BYTES,
    SQS_MAX_RECEIVE_COUNT,
    SQS_MAX_RECEIVE_MESSAGES,
    SQS_MAX_RETENTION_S,
    SQS_MAX_VISIBILITY_TIMEOUT_S,
    SQS_MAX_WAIT_TIME_S,
    SQS_MIN_DATA_KEY_REUSE_S,
    SQS_MIN_MESSAGE_BYTES,
    SQS_MIN_RETENTION_S,
)
from .ops import MessageAttributeValue


_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_FIFO_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}\.fifo")
_QUEUE_ARN = re.compile(r"arn:aws:sqs:([a-z0-9-]*):([0-9]{12}):([A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo)")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
# AWS documents A-Z a-z 0-9 _ - . but accepts Latin letters with accents too (À-ſ: observed,
# localstack's ATTR_NAME_CHAR_REGEX, "umlauts seem to be allowed").
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.\u00c0-\u017f-]{1,256}")
DATA_TYPE = re.compile(r"(String|Number|Binary)(\.[^\s]{1,250})?")
# The characters SQS accepts in a message: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF
_INVALID_CHAR = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class QueueConfig(msgspec.Struct, frozen=True):
    """The typed view of a queue's writable attributes (seconds and bytes, as SQS names them)."""

    visibility_timeout_s: int = 30
    delay_s: int = 0
    max_message_bytes: int = SQS_MAX_MESSAGE_BYTES
    retention_s: int = 4 * 24 * 3600
    receive_wait_s: int = 0
    fifo: bool = False
    content_based_dedup: bool = False
    dedup_per_group: bool = False  # DeduplicationScope=messageGroup
    dead_letter_arn: str = ""  # RedrivePolicy's deadLetterTargetArn
    max_receive_count: int = 0  # RedrivePolicy's maxReceiveCount (0: no dead-letter queue)


# attribute name -> (config field, minimum, maximum)
_NUMERIC_ATTRIBUTES = {
    "VisibilityTimeout": ("visibility_timeout_s", 0, SQS_MAX_VISIBILITY_TIMEOUT_S),
    "DelaySeconds": ("delay_s", 0, SQS_MAX_DELAY_S),
    "MaximumMessageSize": ("max_message_bytes", SQS_MIN_MESSAGE_BYTES, SQS_MAX_MESSAGE_BYTES),
    "MessageRetentionPeriod": ("retention_s", SQS_MIN_RETENTION_S, SQS_MAX_RETENTION_S),
    "ReceiveMessageWaitTimeSeconds": ("receive_wait_s", 0, SQS_MAX_WAIT_TIME_S),
}
# Stored and returned as given (the reuse period checked as AWS checks it); encryption at rest
# reads them (sse_policy.py).
_OPAQUE_ATTRIBUTES = {"KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled"}
# FIFO-only attributes and the values each accepts.
_FIFO_ATTRIBUTES = {
    "ContentBasedDeduplication": ("true", "false"),
    "DeduplicationScope": ("messageGroup", "queue"),
    "FifoThroughputLimit": ("perQueue", "perMessageGroupId"),
}
# The DeduplicationScope a FIFO queue was created with, kept once SetQueueAttributes changes the
# attribute (and hidden from GetQueueAttributes): AWS returns the new value but goes on
# deduplicating with the scope the queue was created with (LocalStack pull requests 10324 and
# 10887, from what AWS was seen to do).
CREATED_DEDUPLICATION_SCOPE = "dovecote:CreatedDeduplicationScope"
READ_ONLY_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
)
SYSTEM_ATTRIBUTE_NAMES = (
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SentTimestamp",
    "SenderId",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageDeduplicationId",
    "MessageGroupId",
    "DeadLetterQueueSourceArn",
)


def is_fifo_request(attributes: Mapping[str, str]) -> bool:
    return attributes.get("FifoQueue", "").lower() == "true"


def validate_queue_name(name: str, fifo: bool = False) -> None:
    if fifo != name.endswith(".fifo") or not (_FIFO_QUEUE_NAME if fifo else _QUEUE_NAME).fullmatch(name):
        raise invalid(
            "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, "
            "must end with .fifo suffix and be 1 to 80 in length."
            if fifo or name.endswith(".fifo")
            else "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
        )


def validate_queue_attributes(
    attributes: Mapping[str, str], *, fifo: bool = False, creating: bool = False
) -> dict[str, str]:
    """Check writable queue attributes; return them normalised (numbers without padding, policies
    as compact JSON)."""
    normalised: dict[str, str] = {}
    for name, value in attributes.items():
        if name in _NUMERIC_ATTRIBUTES:
            _, low, high = _NUMERIC_ATTRIBUTES[name]
            number = _parse_int(value)
            if number is None or not low <= number <= high:
                raise BrokerError(
                    "InvalidAttributeValue",
                    f"Invalid value for the parameter {name}. Reason: must be an integer from {low} to {high}.",
                )
            normalised[name] = str(number)
        elif name in _OPAQUE_ATTRIBUTES:
            if name == "SqsManagedSseEnabled" and value.lower() not in ("true", "false"):
                raise BrokerError("InvalidAttributeValue", "SqsManagedSseEnabled must be true or false.")
            if name == "KmsDataKeyReusePeriodSeconds":
                number = _parse_int(value)
                if number is None or not SQS_MIN_DATA_KEY_REUSE_S <= number <= SQS_MAX_DATA_KEY_REUSE_S:
                    raise BrokerError(
                        "InvalidAttributeValue",
                        f"Invalid value for the parameter {name}. Reason: must be an integer from "
                        f"{SQS_MIN_DATA_KEY_REUSE_S} to {SQS_MAX_DATA_KEY_REUSE_S}.",
                    )
                value = str(number)
            normalised[name] = value.lower() if name == "SqsManagedSseEnabled" else value
        elif name == "FifoQueue":
            # As AWS answers (LocalStack's test_set_fifo_queue_attribute, checked against AWS):
            # a standard queue has no such attribute to set; a FIFO queue takes "true" as a
            # no-op and refuses a change of type. CreateQueue of a standard queue takes "false".
            if not (fifo or creating):
                raise BrokerError("InvalidAttributeName", f"Unknown Attribute {name}.")
            if value.lower() != ("true" if fifo else "false"):
                raise BrokerError(
                    "InvalidAttributeValue",
                    f"Invalid value for the parameter FifoQueue: {value[:20]}."
                    if creating
                    else "Invalid value for the parameter FifoQueue. Reason: Modifying queue type is not supported.",
                )
            if fifo:
                normalised[name] = "true"
        elif name in _FIFO_ATTRIBUTES:
            if not fifo:
                raise BrokerError("InvalidAttributeName", f"Unknown Attribute {name}.")
            allowed = _FIFO_ATTRIBUTES[name]
            chosen = value.lower() if name == "ContentBasedDeduplication" else value
            if chosen not in allowed:
                raise BrokerError(
                    "InvalidAttributeValue",
                    f"Invalid value for the parameter {name}. Reason: must be one of {', '.join(allowed)}.",
                )
            normalised[name] = chosen
        elif name == "Policy":
            if value:
                try:
                    authorization.parse_policy(value)
                except authorization.PolicyError as error:
                    raise BrokerError("InvalidAttributeValue", f"Invalid value for the parameter Policy. Reason: {error}.") from None
            normalised[name] = value  # stored as given, as AWS returns it
        elif name == "RedrivePolicy":
            normalised[name] = _redrive_policy_json(value)
        elif name == "RedriveAllowPolicy":
            normalised[name] = _redrive_allow_policy_json(value)
        else:
            raise BrokerError("InvalidAttributeName", f"Unknown Attribute {name}.")
    return normalised


def check_fifo_throughput(attributes: Mapping[str, str]) -> None:
    """AWS's one cross-attribute rule: per-group throughput needs per-group deduplication."""
    if attributes.get("FifoThroughputLimit") == "perMessageGroupId" and attributes.get("DeduplicationScope") != "messageGroup":
        raise BrokerError(
            "InvalidAttributeValue",
            "Invalid value for the parameter FifoThroughputLimit. Reason: perMessageGroupId is allowed only "
            "when DeduplicationScope is messageGroup.",
        )


def json_object(value: str) -> dict | None:
    """value parsed as a JSON object, or None if it is not one (callers say so in their own words)."""
    try:
        document = json.loads(value)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _json_object(name: str, value: str) -> dict:
    document = json_object(value)
    if document is None:
        raise BrokerError("InvalidAttributeValue", f"Invalid value for the parameter {name}. Reason: must be a JSON object.")
    return document


def _redrive_policy_json(value: str) -> str:
    """RedrivePolicy as AWS returns it; "" removes the policy."""
    if value == "":
        return ""
    document = _json_object("RedrivePolicy", value)
    problem = ""
    target, count = document.get("deadLetterTargetArn"), document.get("maxReceiveCount")
    if set(document) - {"deadLetterTargetArn", "maxReceiveCount"}:
        problem = f"unknown fields {sorted(set(document) - {'deadLetterTargetArn', 'maxReceiveCount'})}"
    elif not isinstance(target, str) or not _QUEUE_ARN.fullmatch(target):
        problem = "deadLetterTargetArn must be an SQS queue ARN"
    elif isinstance(count, bool) or _parse_int(str(count)) is None or not 1 <= int(str(count)) <= SQS_MAX_RECEIVE_COUNT:
        problem = f"maxReceiveCount must be an integer from 1 to {SQS_MAX_RECEIVE_COUNT}"
    if problem:
        raise BrokerError(
            "InvalidParameterValue", f"Value {value[:200]} for parameter RedrivePolicy is invalid. Reason: {problem}."
        )
    return json.dumps({"deadLetterTargetArn": target, "maxReceiveCount": int(str(count))}, separators=(",", ":"))


def _redrive_allow_policy_json(value: str) -> str:
    document = _json_object("RedriveAllowPolicy", value)
    permission, sources = document.get("redrivePermission"), document.get("sourceQueueArns")
    problem = ""
    if permission not in ("allowAll", "denyAll", "byQueue"):
        problem = "redrivePermission must be allowAll, denyAll or byQueue"
    elif permission == "byQueue" and not (
        isinstance(sources, list) and 1 <= len(sources) <= 10 and all(isinstance(a, str) and _QUEUE_ARN.fullmatch(a) for a in sources)
    ):
        problem = "byQueue needs sourceQueueArns: 1 to 10 SQS queue ARNs"
    elif permission != "byQueue" and sources is not None:
        problem = "sourceQueueArns is allowed only with byQueue"
    if problem:
        raise BrokerError(
            "InvalidParameterValue", f"Value {value[:200]} for parameter RedriveAllowPolicy is invalid. Reason: {problem}."
        )
    policy = {"redrivePermission": permission}
    if permission == "byQueue":
        policy["sourceQueueArns"] = sources
    return json.dumps(policy, separators=(",", ":"))


def parse_queue_arn(arn: str) -> tuple[str, str, str]:
    """(region, account, name) of an SQS queue ARN; raises InvalidParameterValue."""
    match = _QUEUE_ARN.fullmatch(arn)
    if match is None:
        raise invalid(f"Value {arn[:200]} is not a valid SQS queue ARN.")
    return match.group(1), match.group(2), match.group(3)


def redrive_allows(allow_policy: str | None, source_arn: str) -> bool:
    """Whether a queue's RedriveAllowPolicy lets source_arn use it as its dead-letter queue."""
    if not allow_policy:
        return True
    document = json.loads(allow_policy)
    permission = document["redrivePermission"]
    return permission == "allowAll" or (permission == "byQueue" and source_arn in document["sourceQueueArns"])


def queue_config(attributes: Mapping[str, str]) -> QueueConfig:
    fields: dict = {
        field: int(attributes[name])
        for name, (field, _, _) in _NUMERIC_ATTRIBUTES.items()
        if name in attributes
    }
    fields["fifo"] = attributes.get("FifoQueue") == "true"
    fields["content_based_dedup"] = attributes.get("ContentBasedDeduplication") == "true"
    scope = attributes.get(CREATED_DEDUPLICATION_SCOPE, attributes.get("DeduplicationScope"))
    fields["dedup_per_group"] = scope == "messageGroup"
    if attributes.get("RedrivePolicy"):
        redrive = json.loads(attributes["RedrivePolicy"])
        fields["dead_letter_arn"] = redrive["deadLetterTargetArn"]
        fields["max_receive_count"] = redrive["maxReceiveCount"]
    return QueueConfig(**fields)


def default_queue_attributes(fifo: bool = False, kms: bool = False) -> dict[str, str]:
    """A new queue's attributes before those it was created with. SSE-SQS is on unless the queue
    has a KmsMasterKeyId (`kms`), as AWS creates queues since 2022 (its recordings show
    SqsManagedSseEnabled "true" on a new queue, "false" beside a KmsMasterKeyId)."""
    defaults = QueueConfig()
    attributes = {name: str(getattr(defaults, field)) for name, (field, _, _) in _NUMERIC_ATTRIBUTES.items()}
    attributes["SqsManagedSseEnabled"] = "false" if kms else "true"
    if fifo:
        attributes.update(
            FifoQueue="true", ContentBasedDeduplication="false", DeduplicationScope="queue", FifoThroughputLimit="perQueue"
        )
    return attributes


def check_attribute_names(names: Iterable[str]) -> None:
    known = (
        set(_NUMERIC_ATTRIBUTES)
        | _OPAQUE_ATTRIBUTES
        | set(_FIFO_ATTRIBUTES)
        | set(READ_ONLY_ATTRIBUTES)
        | {"All", "FifoQueue", "Policy", "RedrivePolicy", "RedriveAllowPolicy"}
    )
    for name in names:
        if name not in known:
            raise BrokerError("InvalidAttributeName", f"Unknown Attribute {name}.")


def check_system_attribute_names(names: Iterable[str]) -> None:
    for name in names:
        if name != "All" and name not in SYSTEM_ATTRIBUTE_NAMES:
            raise BrokerError("InvalidAttributeName", f"Unknown Attribute {name}.")


def validate_message(
    body: str, attributes: Mapping[str, AnyAttribute], max_message_bytes: int
) -> None:
    if not body:
        raise BrokerError("MissingParameter", "The request must contain the parameter MessageBody.")
    if found := _INVALID_CHAR.search(body):
        raise invalid_character(found.group(), "the message body")
    size = len(body.encode())
    if attributes:
        size += validate_message_attributes(attributes)
    if size > max_message_bytes:
        raise message_too_long(max_message_bytes)


def validate_message_attributes(attributes: Mapping[str, AnyAttribute], reserved: tuple[str, ...] = ()) -> int:
    """Check user message attributes; returns the bytes they count towards the message size.
    reserved: prefixes of the service's own attribute names, let through (SNS's AWS.SNS.SMS.*)."""
    if len(attributes) > SQS_MAX_MESSAGE_ATTRIBUTES:
        raise invalid(
            f"Number of message attributes [{len(attributes)}] exceeds the allowed maximum [{SQS_MAX_MESSAGE_ATTRIBUTES}]."
        )
    size = 0
    for name, value in attributes.items():
        lowered = name.lower()
        if (
            not _ATTRIBUTE_NAME.fullmatch(name)
            or (lowered.startswith(("aws.", "amazon.")) and not name.startswith(reserved))
            or name.startswith(".")
            or name.endswith(".")
            or ".." in name
        ):
            raise invalid(f"Message (user) attribute name '{name}' is invalid.")
        if not DATA_TYPE.fullmatch(value.data_type):
            raise invalid(
                f"The type of message (user) attribute '{name}' is invalid. "
                "You must use only the following supported type prefixes: Binary, Number, String."
            )
        if value.data_type.startswith("Binary"):
            if not value.binary_value:
                raise invalid(f"Message (user) attribute '{name}' must contain a non-empty value of type 'Binary'.")
            size += len(value.binary_value)
        else:
            base = "Number" if value.data_type.startswith("Number") else "String"
            if not value.string_value:
                raise invalid(f"Message (user) attribute '{name}' must contain a non-empty value of type '{base}'.")
            if base == "Number" and not _valid_number(value.string_value):
                raise invalid(f"Can't cast the value of message (user) attribute '{name}' to a number.")
            if found := _INVALID_CHAR.search(value.string_value):
                raise invalid_character(found.group(), f"the value of message (user) attribute '{name}'")
            size += len(value.string_value.encode())
        size += len(name.encode()) + len(value.data_type.encode())
    return size


def _valid_number(text: str) -> bool:
    try:
        number = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        return False
    if not number.is_finite():
        return False
    digits = number.as_tuple().digits
    return len(digits) <= 38 and (number == 0 or -(10**128) <= number <= 10**126)


def validate_delay(delay_seconds: int | None) -> None:
    if delay_seconds is not None and not 0 <= delay_seconds <= SQS_MAX_DELAY_S:
        raise invalid(
            f"Value {delay_seconds} for parameter DelaySeconds is invalid. Reason: must be between 0 and {SQS_MAX_DELAY_S}."
        )


def validate_visibility_timeout(seconds: int) -> None:
    if not 0 <= seconds <= SQS_MAX_VISIBILITY_TIMEOUT_S:
        raise invalid(
            f"Value {seconds} for parameter VisibilityTimeout is invalid. "
            f"Reason: Must be between 0 and {SQS_MAX_VISIBILITY_TIMEOUT_S}."
        )


def validate_receive(max_messages: int, wait_time_s: int | None) -> None:
    if not 1 <= max_messages <= SQS_MAX_RECEIVE_MESSAGES:
        raise BrokerError(
            "InvalidParameterValue",
            f"Value {max_messages} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided.",
        )
    if wait_time_s is not None and not 0 <= wait_time_s <= SQS_MAX_WAIT_TIME_S:
        raise invalid(
            f"Value {wait_time_s} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."
        )


def validate_batch(action: str, entry_ids: Sequence[str]) -> None:
    """The entry ids of a batch `action` (SendMessageBatch, ...)."""
    if not entry_ids:
        raise empty_batch(action)
    if len(entry_ids) > SQS_MAX_BATCH_ENTRIES:
        raise BrokerError(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {SQS_MAX_BATCH_ENTRIES}. You have sent {len(entry_ids)}.",
        )
    for entry_id in entry_ids:
        if not _BATCH_ID.fullmatch(entry_id):
            raise BrokerError(
                "InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. "
                "It can be at most 80 letters long.",
            )
    seen: set[str] = set()
    for entry_id in entry_ids:
        if entry_id in seen:
            raise batch_ids_not_distinct(entry_id)
        seen.add(entry_id)


def validate_system_attributes(attributes: Mapping[str, AnyAttribute]) -> None:
    """MessageSystemAttributes on a send: only AWSTraceHeader, a String."""
    for name, value in attributes.items():
        if name != "AWSTraceHeader":
            raise invalid(f"Message system attribute name '{name}' is invalid.")
        if value.data_type != "String" or not value.string_value:
            raise invalid("Message system attribute 'AWSTraceHeader' must contain a non-empty value of type 'String'.")


def with_trace_header(
    system_attributes: Mapping[str, MessageAttributeValue], trace_header: str | None
) -> dict[str, MessageAttributeValue]:
    """A send's message system attributes with its request's X-Amzn-Trace-Id header as the
    AWSTraceHeader attribute, for every message of the request; an AWSTraceHeader the send gives
    itself wins (AWS X-Ray developer guide, "Amazon SQS and AWS X-Ray"). SQS sends and a topic's
    deliveries into queues both take it here."""
    if not trace_header or "AWSTraceHeader" in system_attributes:
        return dict(system_attributes)
    return {**system_attributes, "AWSTraceHeader": MessageAttributeValue("String", trace_header)}


_GROUP_ID = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")


def validate_group_id(group_id: str, parameter: str = "MessageGroupId") -> None:
    """MessageGroupId, MessageDeduplicationId and ReceiveRequestAttemptId share one rule."""
    if not _GROUP_ID.fullmatch(group_id):
        raise invalid(
            f"Value {group_id[:140]} for parameter {parameter} is invalid. Reason: 1 to 128 alphanumeric "
            "or punctuation characters."
        )


def check_fifo_batch_ids(fifo: bool, content_based: bool, entries: Iterable[tuple[str | None, str | None]]) -> None:
    """What fails a whole SendMessageBatch on AWS rather than its entry (LocalStack's AWS-validated
    test_send_batch_missing_message_group_id_for_fifo_queue and ..._deduplication_id_...): on a
    FIFO queue, an entry without MessageGroupId, or without MessageDeduplicationId when the queue
    has no content-based deduplication. entries: (group id, deduplication id) of each."""
    if not fifo:
        return
    for group_id, dedup_id in entries:
        if group_id is None:
            raise _missing_group_id()
        if dedup_id is None and not content_based:
            raise _missing_dedup_id()


def _missing_group_id() -> BrokerError:
    return BrokerError("MissingParameter", "The request must contain the parameter MessageGroupId.")


def _missing_dedup_id() -> BrokerError:
    return invalid("The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly")


def fifo_send_parameters(
    fifo: bool, content_based: bool, body: str, delay_seconds: int | None, group_id: str | None, dedup_id: str | None
) -> str:
    """Check a send's queue-type-specific parameters; returns its deduplication id ("" on a
    standard queue): the one given, or the body's SHA-256 with ContentBasedDeduplication."""
    if not fifo:
        if dedup_id is not None:
            raise invalid("The request include parameter MessageDeduplicationId that is not valid for this queue type.")
        if group_id is not None:
            validate_group_id(group_id)
        return ""
    if group_id is None:
        raise _missing_group_id()
    validate_group_id(group_id)
    if delay_seconds:  # a FIFO queue has no delay per message, but 0 (none) is accepted, as AWS does
        raise invalid(
            f"Value {delay_seconds} for parameter DelaySeconds is invalid. Reason: The request include parameter "
            "that is not valid for this queue type."
        )
    if dedup_id is not None:
        validate_group_id(dedup_id, "MessageDeduplicationId")
        return dedup_id
    if not content_based:
        raise _missing_dedup_id()
    return hashlib.sha256(body.encode()).hexdigest()


def check_batch_size(bodies: Iterable[str], attributes: Iterable[Mapping[str, AnyAttribute]], limit: int) -> None:
    total = sum(len(b.encode()) for b in bodies) + sum(_attributes_size(a) for a in attributes)
    if total > limit:
        raise batch_too_long(limit, total)


def _attributes_size(attributes: Mapping[str, AnyAttribute]) -> int:
    return sum(
        len(name.encode())
        + len(v.data_type.encode())
        + (len(v.binary_value) if v.binary_value is not None else len((v.string_value or "").encode()))
        for name, v in attributes.items()
    )


def _parse_int(value: str) -> int | None:
    text = value.strip()
    if not text or not (text.isdigit() or (text[0] in "+-" and text[1:].isdigit())):
        return None
    return int(text)
